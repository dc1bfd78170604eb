r"""`python -m pmkd_tf.export`: a trained student -> int8/float TFLite, TFLM board sources and a report.

    python -m pmkd_tf.export --model=runs/cifar10/resnet18/pmkd-seed0-<hash>/model.keras --out_dir=runs/export

The input size and channels come from the model; for a model in a phase
folder, the dataset, its location, its held-out split and its normalisation
statistics come from the run (the phase's config.json), so nothing is
repeated; `--dataset`/`--data_dir` override them or serve a model without one.

Writes model_int8.tflite, model_float.tflite, model_data.cc/.h, model_ops.h,
report.json and summary.txt into --out_dir, and the row-streaming C engine
into --out_dir/c/ (see --c_engine), and prints the summary. A user
mistake (missing file, not a PMKD model, an op TFLite Micro lacks, a
dataset that cannot be found, with --c_engine=on a model the C engine cannot
run) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

from absl import app, flags

from pmkd_tf import data
from pmkd_tf.errors import UserError
from pmkd_tf.export import exporter, tflite
from pmkd_tf.export.cstream import export as cstream

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Trained student (.keras) saved by the training pipeline.")
flags.DEFINE_string("dataset", None, f"Dataset the student was trained on: {data.DATASET_HELP}; default: the "
                    "run's (the config.json beside --model), else cifar10.")
flags.DEFINE_string("data_dir", None, "Image-folder root (<data_dir>/<dataset>/{train,test}/<class>/*); default: the "
                    f"run's folder, else ${data.ENV_DATA_DIR}, else tensorflow-datasets.")
flags.DEFINE_string("out_dir", None, "Folder for the .tflite files, board sources and report.")
flags.DEFINE_integer("calibration_examples", 300, "Training images for int8 calibration (never test images).",
                     lower_bound=1)
flags.DEFINE_integer("test_examples", None, "Test images to measure accuracy on (default: the whole test set).",
                     lower_bound=1)
flags.DEFINE_integer("micro_examples", 32, "Test images run through TFLite Micro and compared with LiteRT.",
                     lower_bound=1)
flags.DEFINE_integer("float_stream_examples", 4, "Test images streamed row by row through the float model.",
                     lower_bound=1)
flags.DEFINE_integer("int8_stream_examples", 1000, "Test images streamed row by row through the int8 model "
                     "(0 = all the test images loaded).", lower_bound=0)
flags.DEFINE_integer("latency_runs", 200, "Timed LiteRT inferences per model; the median is reported.", lower_bound=1)
flags.DEFINE_enum("c_engine", "auto", list(cstream.MODES), "The row-streaming C engine in <out_dir>/c/: auto "
                  "(generate it and check it with the tools installed), on (the same, but any failure or missing "
                  "tool exits 2), off.")
flags.DEFINE_integer("c_stream_examples", 1000, "Test images run through the C engine on the host and compared "
                     "with LiteRT (0 = all the test images loaded).", lower_bound=0)
flags.DEFINE_integer("cortex_m4_examples", 100, "Of those, the images run on the emulated Cortex-M4.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the calibration and test subsets.")
flags.DEFINE_bool("verbose", True, "Show Keras progress bars for the long loops.")
flags.mark_flag_as_required("model")
flags.mark_flag_as_required("out_dir")


def _recorded_data(model_path: str) -> dict:
    """What the training run recorded about its data (the phase's config.json beside the model), or {}."""
    config = Path(model_path).expanduser().parent / "config.json"
    return json.loads(config.read_text()).get("data", {}) if config.is_file() else {}


def student_splits(student, model_path: str) -> data.Splits:
    """The student's data at the student's input size, with the training run's statistics and held-out split."""
    run = _recorded_data(model_path)
    folder = run.get("path") if run.get("source") == "folder" else None
    height, width, channels = (int(d) for d in student.inputs[0].shape[1:])
    splits = data.load(
        FLAGS.dataset or run.get("name", "cifar10"), FLAGS.data_dir or folder or data.default_data_dir(),
        train_examples=FLAGS.calibration_examples, test_examples=FLAGS.test_examples,
        # A folder's held-out test split is drawn with the run's seed: any other would test on training images.
        seed=run.get("seed", FLAGS.seed) if run.get("test_fraction") else FLAGS.seed,
        image_size=(height, width), channels=channels, test_fraction=run.get("test_fraction") or 0.2)
    if run.get("mean"):
        # The statistics the student was trained with, not those of the calibration subset.
        splits = dataclasses.replace(splits, mean=tuple(run["mean"]), std=tuple(run["std"]))
    return splits


def export_from_flags() -> dict:
    """Export the student the flags name; return the report."""
    options = exporter.ExportOptions(
        micro_examples=FLAGS.micro_examples, float_stream_examples=FLAGS.float_stream_examples,
        int8_stream_examples=FLAGS.int8_stream_examples, latency_runs=FLAGS.latency_runs, verbose=FLAGS.verbose,
        c_engine=FLAGS.c_engine, c_stream_examples=FLAGS.c_stream_examples,
        cortex_m4_examples=FLAGS.cortex_m4_examples)
    student = tflite.read_student(FLAGS.model)
    splits = student_splits(student, FLAGS.model)
    report = exporter.export_student(student, splits, FLAGS.out_dir, splits.train_images, FLAGS.model, options)
    print(exporter.summary(report), end="")
    written = exporter.FILES + (("c/",) if "files" in report["c_stream"] else ())
    print(f"Wrote {', '.join(written)} to {FLAGS.out_dir}")
    return report


def _fail(message: object) -> NoReturn:
    """A user's mistake: one line on stderr, exit code 2."""
    print(f"pmkd_tf.export: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser (`app.run(..., flags_parser=parse_flags)`), with a bad flag as one `error:` line and exit 2."""
    try:
        rest = FLAGS(argv)
    except flags.Error as error:
        _fail(error)
    if len(rest) > 1:
        _fail(f"unexpected arguments {' '.join(rest[1:])}; use --flag=value.")
    return rest


def main(argv: list[str]) -> None:
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # SavedModel/converter INFO lines drown the summary
    try:
        export_from_flags()
    except UserError as error:
        _fail(error)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
