"""Step time against width multiplier and against batch size, to predict a full-size run's cost.

    python -m benchmarks.scaling --net=resnet18 --out=benchmarks/results/scaling

Two sweeps of one net, timed together (interleaved in rounds): the width
multipliers of `--widths` at batch `--width_sweep_batch`, and the batch
sizes of `--batch_sizes` at width `--batch_sweep_width`. For every cell it
reports the step time, images/s, and the predicted cost of one epoch of the
full CIFAR-10 training set and of one 200-epoch phase of the paper's recipe.
For the width sweep it gives the local exponent k of step ~ width^k between
neighbouring widths (k tends to 2 as convolutions grow compute-bound), and
extrapolates to width 1 with the last k when width 1 was not measured; for
the batch sweep a least-squares line step = fixed + per_image * batch.
"""

from __future__ import annotations

import math
import time

import numpy as np
from absl import flags, logging

from benchmarks import cli, common
from pmkd_tf import data
from pmkd_tf.recipe import PAPER_EPOCHS

FLAGS = flags.FLAGS
NAME = "scaling"
cli.define_flags(NAME, timing=True)
# Width-1 cells take seconds per step: fewer rounds and a lower step floor than the other benchmarks
# keep a full sweep's length in check.
FLAGS.set_default("rounds", 3)
FLAGS.set_default("steps", 5)
flags.DEFINE_list("widths", ["1/16", "1/8", "1/4", "1/2", "1"], "Width multipliers of the width sweep.")
cli.validate("widths", cli.POSITIVE_NUMBER, each=True)
flags.DEFINE_integer("width_sweep_batch", 128, "Batch size of the width sweep.", lower_bound=1)
flags.DEFINE_list("batch_sizes", ["32", "64", "128", "256"], "Batch sizes of the batch sweep.")
cli.validate("batch_sizes", cli.POSITIVE_INTEGER, each=True)
flags.DEFINE_string("batch_sweep_width", "1/8", "Width multiplier of the batch sweep.")
cli.validate("batch_sweep_width", cli.POSITIVE_NUMBER)
flags.DEFINE_enum("variant", "fp32", list(common.VARIANTS), "Variant.")
flags.DEFINE_list("rows", ["teacher", "baseline", "kd_fitnet", "pacemaker_phase", "phase2"],
                  f"Rows to time: {', '.join(common.ROWS)}.")
cli.validate("rows", cli.one_of(common.ROWS), each=True)

TINY = {"net": "vgg13", "widths": ["1/32", "1/16"], "width_sweep_batch": 16, "batch_sizes": ["8", "16"],
        "batch_sweep_width": "1/16", "rounds": 2, "steps": 2, "warmup": 1, "distinct_batches": 2,
        "target_seconds": 0.0, "rows": ["baseline"]}


def _key(width: float, batch: int) -> str:
    return f"w={width:g}/b={batch}"


def width_exponents(widths: list[float], steps: list[float]) -> list[dict]:
    """Local exponent k of step ~ width^k between each pair of neighbouring widths."""
    return [{"from": w0, "to": w1, "k": math.log(t1 / t0) / math.log(w1 / w0)}
            for w0, w1, t0, t1 in zip(widths, widths[1:], steps, steps[1:])]


def batch_line(batches: list[int], steps: list[float]) -> dict | None:
    """Least-squares step = fixed + per_image * batch (None with fewer than two batch sizes)."""
    if len(batches) < 2:
        return None
    per_image, fixed = np.polyfit(np.asarray(batches, float), np.asarray(steps, float), 1)
    predicted = fixed + per_image * np.asarray(batches, float)
    worst = float(np.max(np.abs(predicted - steps) / np.asarray(steps)))
    return {"fixed_ms": 1000 * float(fixed), "per_image_ms": 1000 * float(per_image), "max_relative_error": worst}


def costs(step_s: float, batch: int) -> dict:
    steps_per_epoch = math.ceil(common.CIFAR10_TRAIN_IMAGES / batch)
    return {"step_ms": 1000 * step_s, "images_per_s": batch / step_s, "ms_per_image": 1000 * step_s / batch,
            "full_epoch_s": step_s * steps_per_epoch, "paper_phase_h": step_s * steps_per_epoch * PAPER_EPOCHS / 3600}


def summarize(per_round: dict[str, list[float]], widths: list[float], width_batch: int, batches: list[int],
              batch_width: float, rows: list[str]) -> dict:
    median = {name: common.spread(values)["median"] for name, values in per_round.items()}
    out: dict = {"width_sweep": {}, "batch_sweep": {}}
    for row in rows:
        by_width = [median[f"{_key(w, width_batch)}/{row}"] for w in widths]
        exponents = width_exponents(widths, by_width)
        sweep = {"cells": {f"{w:g}": costs(t, width_batch) for w, t in zip(widths, by_width)},
                 "exponents": exponents}
        if widths[-1] < 1 and exponents:
            sweep["extrapolated_width1"] = costs(by_width[-1] * (1 / widths[-1]) ** exponents[-1]["k"], width_batch)
        out["width_sweep"][row] = sweep
        by_batch = [median[f"{_key(batch_width, b)}/{row}"] for b in batches]
        out["batch_sweep"][row] = {"cells": {str(b): costs(t, b) for b, t in zip(batches, by_batch)},
                                   "line": batch_line(batches, by_batch)}
    return out


def markdown(result: dict) -> str:
    lines = common.header_markdown("Step time against width and batch size", result)
    s = result["settings"]
    lines += [f"Full epoch = {common.CIFAR10_TRAIN_IMAGES:,} CIFAR-10 training images; paper phase = "
              f"{PAPER_EPOCHS} epochs (a method runs up to 4 phases; see benchmarks/README.md).", "",
              f"## Width sweep (batch {s['width_sweep_batch']})", "",
              "| Row | Width | Step (ms) | Images/s | Full epoch (s) | Paper phase (h) | k to next width |",
              "|---|---|---|---|---|---|---|"]
    for row, sweep in result["width_sweep"].items():
        ks = [f"{e['k']:.2f}" for e in sweep["exponents"]] + ["-"]
        for (width, c), k in zip(sweep["cells"].items(), ks):
            lines.append(f"| {row} | {width} | {c['step_ms']:.1f} | {c['images_per_s']:.0f} | "
                         f"{c['full_epoch_s']:.0f} | {c['paper_phase_h']:.2f} | {k} |")
        if "extrapolated_width1" in sweep:
            c = sweep["extrapolated_width1"]
            lines.append(f"| {row} | 1 (extrapolated) | {c['step_ms']:.0f} | {c['images_per_s']:.0f} | "
                         f"{c['full_epoch_s']:.0f} | {c['paper_phase_h']:.1f} | - |")
    lines += ["", f"## Batch sweep (width {s['batch_sweep_width']:g})", "",
              "| Row | Batch | Step (ms) | Images/s | ms/image | Full epoch (s) | Paper phase (h) |",
              "|---|---|---|---|---|---|---|"]
    for row, sweep in result["batch_sweep"].items():
        for batch, c in sweep["cells"].items():
            lines.append(f"| {row} | {batch} | {c['step_ms']:.1f} | {c['images_per_s']:.0f} | "
                         f"{c['ms_per_image']:.2f} | {c['full_epoch_s']:.0f} | {c['paper_phase_h']:.2f} |")
    lines += ["", "Least-squares fit step = fixed + per_image x batch:", "",
              "| Row | Fixed (ms) | Per image (ms) | Worst relative error |", "|---|---|---|---|"]
    for row, sweep in result["batch_sweep"].items():
        line = sweep["line"]
        if line:
            lines.append(f"| {row} | {line['fixed_ms']:.1f} | {line['per_image_ms']:.3f} | "
                         f"{line['max_relative_error']:.2f} |")
    lines += ["", "## Rows", ""] + [f"- `{row}`: {common.ROWS[row]}" for row in result["width_sweep"]] + [""]
    return "\n".join(lines)


def body() -> None:
    widths = sorted({cli.number(width) for width in FLAGS.widths})
    batches = sorted({int(batch) for batch in FLAGS.batch_sizes})
    batch_width = cli.number(FLAGS.batch_sweep_width)
    rows = list(dict.fromkeys(FLAGS.rows))
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()

    configs = list(dict.fromkeys([(w, FLAGS.width_sweep_batch) for w in widths]
                                 + [(batch_width, b) for b in batches]))
    largest = max(b for _, b in configs)
    splits = common.cifar10_training_images(FLAGS.data_dir or data.default_data_dir(),
                                            largest * FLAGS.distinct_batches, FLAGS.seed)
    datasets = {b: common.cached_batches(splits, b, FLAGS.distinct_batches, FLAGS.seed)
                for b in sorted({b for _, b in configs})}
    cells: dict[str, common.Timer] = {}
    for width, batch in configs:
        setup = common.Setup(FLAGS.net, width, batch, FLAGS.variant, FLAGS.n, FLAGS.seed, splits.num_classes)
        factory = common.RowFactory(setup, datasets[batch])
        for row in rows:
            cells[f"{_key(width, batch)}/{row}"] = factory.timer(row)
    per_round, counts = common.interleave(cells, FLAGS.rounds, FLAGS.steps, FLAGS.warmup, FLAGS.seed,
                                          FLAGS.target_seconds, log=logging.info)

    result = {
        "benchmark": NAME,
        "command": common.command_line(f"benchmarks.{NAME}"),
        "machine": machine,
        "settings": {"net": FLAGS.net, "n": FLAGS.n, "variant": FLAGS.variant, "widths": widths,
                     "width_sweep_batch": FLAGS.width_sweep_batch, "batch_sizes": batches,
                     "batch_sweep_width": batch_width, "rows": rows, "rounds": FLAGS.rounds, "steps": FLAGS.steps,
                     "target_seconds": FLAGS.target_seconds, "warmup": FLAGS.warmup,
                     "distinct_batches": FLAGS.distinct_batches, "seed": FLAGS.seed, "tiny": FLAGS.tiny},
        "timed_steps_per_round": counts,
        "step_ms_per_round": {name: [1000 * v for v in values] for name, values in per_round.items()},
        **summarize(per_round, widths, FLAGS.width_sweep_batch, batches, batch_width, rows),
    }
    common.finish(FLAGS.out, result, started, contention, markdown)


if __name__ == "__main__":
    cli.run_benchmark(body, TINY)
