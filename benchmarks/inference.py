"""Inference cost of each trained student against its teacher: int8 latency, MACs, flash, arena, streaming peak.

    python -m benchmarks.inference --results=experiments/results/cifar10/resnet18 --seed=0 \
        --out=benchmarks/results/inference

Reads the models a `pmkd_tf.experiments.run` table trained (its
`results.json` names each method's folder), exports each one exactly as a
user would (`pmkd_tf.export`: int8 and float `.tflite`, TFLite Micro arena,
row streaming), then times every int8 model in LiteRT on one thread,
interleaved in rounds. Reported per model: MACs and latency, each also as a
ratio to the teacher's (per round, then the median), int8 top-1, flash, TFLM
arena, and the activation peak of row-by-row inference against the full
frame (a teacher, whose NxN layers each need an N-row line buffer, is
streamed with those buffers to show what it would cost).

Exports are kept in `--export_dir` and reused when a later run finds a
report for the same model file, so an interrupted run resumes. `--models`
names `.keras` files directly instead of a results folder.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import keras
import numpy as np
from absl import flags, logging

from benchmarks import cli, common
from pmkd_tf import data
from pmkd_tf.errors import UserError
from pmkd_tf.export import exporter, tflite

FLAGS = flags.FLAGS
NAME = "inference"
TEACHER = "teacher"
METHODS = ["teacher", "baseline", "kd", "fitnet", "kd_fitnet", "pm_kd", "pm_fitnet", "pmkd"]

cli.define_flags(NAME)
flags.DEFINE_string("results", None, "A run's results folder (<out_dir>/<dataset>/<net>, with results.json).")
flags.DEFINE_integer("seed", 0, "Which seed's models to export from --results.")
flags.DEFINE_list("methods", METHODS, "Methods to export from --results (the teacher is the reference); "
                  "methods without a finished run are skipped and listed.")
cli.validate("methods", cli.one_of(METHODS), each=True)
flags.DEFINE_list("models", None, "Instead of --results: name=path.keras pairs; one must be named 'teacher'.")
flags.register_multi_flags_validator(
    ["results", "models"], lambda f: (f["results"] is None) != (f["models"] is None),
    "Pass either --results (a run's results folder) or --models (name=path.keras pairs), but not both.")
flags.DEFINE_string("dataset", "cifar10", f"Dataset the models were trained on: {data.DATASET_HELP}.")
flags.DEFINE_string("export_dir", None, "Where each model's export goes (default <out>_exports); reused on rerun.")
flags.DEFINE_integer("calibration_examples", 300, "Training images for int8 calibration.", lower_bound=1)
flags.DEFINE_integer("test_examples", None, "Test images for int8 accuracy (default: the whole test set).",
                     lower_bound=1)
flags.DEFINE_integer("stream_examples", 100, "Test images streamed row by row through each int8 model "
                     "(the peak is the same for every image; more images only re-check bit-exactness).",
                     lower_bound=1)
flags.DEFINE_integer("rounds", 5, "Latency rounds; each times every model once, in a new order.", lower_bound=1)
flags.DEFINE_integer("runs", 200, "Timed invokes per model per round; a round's value is their median.",
                     lower_bound=1)

TINY = {"calibration_examples": 16, "test_examples": 32, "stream_examples": 1, "rounds": 2, "runs": 5}


def _model_pairs(name: str, pairs: list[str] | None) -> None:
    """--models: name=path.keras pairs, one of them the teacher."""
    if pairs is None:
        return
    for pair in pairs:
        model, sep, path = pair.partition("=")
        if not sep or not model or not path:
            raise UserError(f"--{name}: {pair!r} is not name=path.keras.")
    if TEACHER not in [pair.partition("=")[0] for pair in pairs]:
        raise UserError(f"No teacher model: --{name} must name one '{TEACHER}', the reference every ratio is "
                         "taken against.")


cli.validate("models", _model_pairs)


def model_paths() -> dict[str, Path]:
    """name -> .keras file, from --models or from the --results folder's results.json; teacher first."""
    if FLAGS.models is not None:
        paths = {name: Path(path).expanduser() for name, _, path in (pair.partition("=") for pair in FLAGS.models)}
    else:
        paths = _from_results(Path(FLAGS.results).expanduser())
    if TEACHER not in paths:
        raise UserError("No teacher model: it is the reference every ratio is taken against.")
    for name, path in paths.items():
        if not path.is_file():
            raise UserError(f"Model {name!r}: {path} does not exist.")
    return {TEACHER: paths.pop(TEACHER), **paths}


def _from_results(folder: Path) -> dict[str, Path]:
    results_file = folder / "results.json"
    if not results_file.is_file():
        raise UserError(f"--results {folder}: no results.json there; pass <out_dir>/<dataset>/<net> of a run.")
    runs = json.loads(results_file.read_text())["runs"]
    paths = {}
    for method in FLAGS.methods:
        run = runs.get(f"{method}/seed{FLAGS.seed}")
        if run is None and method == TEACHER:
            # A shared teacher is recorded once, under the seed that trained it.
            run = next((r for k, r in sorted(runs.items()) if k.startswith(f"{TEACHER}/")), None)
        if run and run.get("status") == "ok":
            paths[method] = folder / run["folder"] / "model.keras"
    missing = [m for m in FLAGS.methods if m not in paths]
    if missing:
        logging.warning("No finished seed-%d run for %s in %s; skipped.", FLAGS.seed, ", ".join(missing), folder)
    return paths


def export(name: str, path: Path, export_dir: Path, splits: data.Splits) -> dict:
    """Export one model (or reuse its earlier export of the same file) and return its report."""
    out_dir = export_dir / name
    report_file = out_dir / "report.json"
    if report_file.is_file():
        report = json.loads(report_file.read_text())
        if report.get("model") == str(path) and report["accuracy"]["test_examples"] == len(splits.test_labels):
            logging.info("Reusing the export of %s in %s.", name, out_dir)
            return report
    logging.info("Exporting %s (%s).", name, path)
    model = tflite.read_student(path)
    options = exporter.ExportOptions(micro_examples=min(32, len(splits.test_labels)), float_stream_examples=1,
                                     int8_stream_examples=FLAGS.stream_examples, latency_runs=FLAGS.runs,
                                     verbose=False)
    return exporter.export_student(model, splits, out_dir, splits.train_images, str(path), options)


def time_latency(int8_models: dict[str, bytes], pixels: np.ndarray) -> dict[str, list[float]]:
    """Per round, each model's median int8 invoke time (ms) on one real test image, models in a new order."""
    runners = {name: tflite.LiteRT(model) for name, model in int8_models.items()}
    inputs = {name: tflite.quantize_pixels(pixels, r.input)[0] for name, r in runners.items()}
    order, rng = list(runners), random.Random(FLAGS.seed)
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    progress = keras.utils.Progbar(FLAGS.rounds, unit_name="round")
    for r in range(FLAGS.rounds):
        rng.shuffle(order)
        for name in order:
            per_round[name].append(runners[name].latency_ms(FLAGS.runs, example=inputs[name]))
        progress.update(r + 1)
    return per_round


def summarize(reports: dict[str, dict], latency: dict[str, list[float]]) -> dict:
    teacher = reports[TEACHER]
    table = {}
    for name, report in reports.items():
        stream = report["streaming"]
        table[name] = {
            "model": report["model"],
            "parameters": report["parameters"],
            "macs": report["macs"],
            "macs_over_teacher": report["macs"] / teacher["macs"],
            "int8_latency_ms": common.spread(latency[name]),
            "latency_over_teacher": common.spread(common.per_round_ratio(latency[name], latency[TEACHER])),
            "int8_top1": report["accuracy"]["tflite_int8"],
            "float_top1": report["accuracy"]["keras_float"],
            "flash_int8_bytes": report["flash_bytes"]["int8"],
            "tflm_arena_bytes": report["arena_bytes"]["measured"],
            "on_the_fly": stream["on_the_fly"],
            "streaming_peak_bytes": stream["int8"]["peak_bytes"],
            "frame_peak_bytes": stream["int8"]["frame_peak_bytes"],
            "line_buffer_rows": stream["int8"]["line_buffer_rows"],
            "streaming_bit_exact": f"{stream['int8']['bit_exact_images']}/{stream['int8']['images']}",
            "micro_bit_exact": report["micro"]["bit_exact_with_litert_reference"],
        }
    return table


def markdown(result: dict) -> str:
    lines = common.header_markdown("Inference: each student against its teacher", result)
    lines += [("int8 LiteRT latency, 1 thread, default kernels (XNNPACK), median of "
               f"{result['settings']['runs']} invokes per round; ratios to the teacher are per round, then the "
               "median [range]. Memory: TFLM arena (whole-frame interpreter) and the int8 activation peak when "
               "the image is fed row by row (a teacher's NxN layers need N-row line buffers, counted)."), "",
              ("| Model | Params | MACs | MACs / teacher | int8 ms | Latency / teacher | int8 top-1 | Flash (B) | "
               "Arena (B) | Row-streaming peak (B) | Full-frame peak (B) | On the fly |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["models"].items():
        lat, ratio = r["int8_latency_ms"], r["latency_over_teacher"]
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['macs']:,} | {r['macs_over_teacher']:.3f} | {lat['median']:.3f} | "
            f"{ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}] | {100 * r['int8_top1']:.2f} | "
            f"{r['flash_int8_bytes']:,} | {r['tflm_arena_bytes']:,} | {r['streaming_peak_bytes']:,} | "
            f"{r['frame_peak_bytes']:,} | {'yes' if r['on_the_fly'] else 'no'} |")
    lines += ["", "Every export was checked: TFLite Micro bit-exact with LiteRT's reference kernels "
              + ("on all models" if all(r["micro_bit_exact"] for r in result["models"].values()) else
                 "**NOT on all models**")
              + "; row streaming bit-exact with the full-frame int8 model on "
              + ", ".join(f"{n} {r['streaming_bit_exact']}" for n, r in result["models"].items()) + " images.",
              "", "Models:", ""] + [f"- `{n}`: `{r['model']}`" for n, r in result["models"].items()] + [""]
    return "\n".join(lines)


def body() -> None:
    paths = model_paths()
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()
    export_dir = Path(FLAGS.export_dir or f"{common.out_paths(FLAGS.out)[0].with_suffix('')}_exports")

    splits = data.load(FLAGS.dataset, FLAGS.data_dir or data.default_data_dir(),
                       train_examples=FLAGS.calibration_examples, test_examples=FLAGS.test_examples, seed=FLAGS.seed)
    reports = {name: export(name, path, export_dir, splits) for name, path in paths.items()}
    int8_models = {name: (export_dir / name / "model_int8.tflite").read_bytes() for name in reports}
    latency = time_latency(int8_models, splits.test_images[:1])
    result = {
        "benchmark": NAME,
        "command": common.command_line(f"benchmarks.{NAME}"),
        "machine": machine,
        "settings": {"results": FLAGS.results, "seed": FLAGS.seed, "dataset": FLAGS.dataset,
                     "calibration_examples": FLAGS.calibration_examples, "test_examples": len(splits.test_labels),
                     "stream_examples": FLAGS.stream_examples, "rounds": FLAGS.rounds, "runs": FLAGS.runs,
                     "export_dir": str(export_dir), "tiny": FLAGS.tiny},
        "latency_ms_per_round": latency,
        "models": summarize(reports, latency),
    }
    common.finish(FLAGS.out, result, started, contention, markdown)


if __name__ == "__main__":
    cli.run_benchmark(body, TINY)
