r"""`python -m pmkd_tf.export`: a trained student -> int8/float TFLite, TFLM board sources and a report.

    python -m pmkd_tf.export --model=runs/student.keras --dataset=cifar10 \
        --data_dir=../shared/data --out_dir=runs/export

Writes model_int8.tflite, model_float.tflite, model_data.cc/.h, model_ops.h,
report.json and summary.txt into --out_dir and prints the summary. A user
mistake (missing file, not a PMKD model, an op TFLite Micro lacks, a
dataset that cannot be found) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags

from pmkd_tf import data
from pmkd_tf.errors import UserError
from pmkd_tf.export import pipeline, tflite
from pmkd_tf.export.errors import ExportError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Trained student (.keras) saved by the training pipeline.")
flags.DEFINE_string("dataset", "cifar10", f"Dataset the student was trained on: {', '.join(data.DATASETS)}.")
flags.DEFINE_string("data_dir", data.default_data_dir(),
                    "Image-folder root (<data_dir>/<dataset>/{train,test}/<class>/*); default "
                    f"${data.ENV_DATA_DIR}, else tensorflow-datasets.")
flags.DEFINE_string("out_dir", None, "Folder for the .tflite files, board sources and report.")
flags.DEFINE_integer("calibration_examples", 300, "Training images for int8 calibration (never test images).")
flags.DEFINE_integer("test_examples", None, "Test images to measure accuracy on (default: the whole test set).")
flags.DEFINE_integer("micro_examples", 32, "Test images run through TFLite Micro and compared with LiteRT.")
flags.DEFINE_integer("float_stream_examples", 4, "Test images streamed row by row through the float student.")
flags.DEFINE_integer("int8_stream_examples", 1000, "Test images streamed row by row through the int8 model "
                     "(0 = all the test images loaded).")
flags.DEFINE_integer("latency_runs", 200, "Timed LiteRT inferences per model; the median is reported.")
flags.DEFINE_integer("seed", 0, "Seed of the calibration and test subsets.")
flags.DEFINE_bool("verbose", True, "Show Keras progress bars for the long loops.")


def _positive(name: str, value: int | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ExportError(f"--{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}.")


def _options() -> pipeline.ExportOptions:
    if not FLAGS.model:
        raise ExportError("--model is required: the .keras student to export.")
    if not FLAGS.out_dir:
        raise ExportError("--out_dir is required: where to write the .tflite files, board sources and report.")
    for name in ("calibration_examples", "test_examples", "micro_examples", "float_stream_examples", "latency_runs"):
        _positive(name, FLAGS[name].value)
    _positive("int8_stream_examples", FLAGS.int8_stream_examples, allow_zero=True)
    return pipeline.ExportOptions(
        micro_examples=FLAGS.micro_examples, float_stream_examples=FLAGS.float_stream_examples,
        int8_stream_examples=FLAGS.int8_stream_examples, latency_runs=FLAGS.latency_runs, verbose=FLAGS.verbose)


def run() -> dict:
    """Export the student the flags name; return the report."""
    options = _options()
    student = tflite.load_student(FLAGS.model)
    splits = data.load(FLAGS.dataset, FLAGS.data_dir, train_examples=FLAGS.calibration_examples,
                       test_examples=FLAGS.test_examples, seed=FLAGS.seed)
    report = pipeline.export_student(student, splits, FLAGS.out_dir, splits.train_images, FLAGS.model, options)
    print(pipeline.summary(report), end="")
    print(f"Wrote {', '.join(pipeline.FILES)} to {FLAGS.out_dir}")
    return report


def main(argv: list[str]) -> int:
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # SavedModel/converter INFO lines drown the summary
    if len(argv) > 1:
        print(f"pmkd_tf.export: error: unexpected arguments {' '.join(argv[1:])}; use --flag=value.",
              file=sys.stderr)
        return 2
    try:
        run()
    except UserError as error:
        print(f"pmkd_tf.export: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
