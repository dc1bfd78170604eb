"""Is the input pipeline ever the bottleneck? Its images/s against training's, measured together.

    python -m benchmarks.input_pipeline --net=resnet18 --width_multiplier=0.125 --batch_size=128 \
        --out=benchmarks/results/input_pipeline

Times, interleaved in rounds:

- `pipeline`: `Splits.train_dataset` alone (shuffle, pad-and-crop, flip,
  normalise, batch, prefetch) over real CIFAR-10, drained as fast as it goes;
- `<row>/cached`: a training row on batches already in memory (pure compute);
- `<row>/live`: the same row fed by `Splits.train_dataset`, as training runs.

Issue 7's target: the pipeline alone delivers at least 10x the training
images/s of every row (the fastest row, `baseline`, is the hardest test).
live/cached close to 1 confirms it from the other side: feeding training
from the real pipeline costs (almost) nothing.
"""

from __future__ import annotations

import time

import tensorflow as tf
from absl import app, flags, logging

from benchmarks import common
from pmkd_tf import data
from pmkd_tf.errors import UserError
from pmkd_tf.recipe import PRESETS

FLAGS = flags.FLAGS
NAME = "input_pipeline"
common.define_flags(f"benchmarks/results/{NAME}")
flags.DEFINE_float("width_multiplier", 0.125, "Channel multiplier of every net (0.125 is the cpu preset's).")
flags.DEFINE_integer("batch_size", 128, "Batch size (the paper's 128).")
flags.DEFINE_integer("train_examples", PRESETS["cpu"].train_examples,
                     "Training images the pipeline shuffles and streams (the cpu preset's subset by default).")
flags.DEFINE_string("variant", "fp32", f"Training variant: {', '.join(common.VARIANTS)}.")
flags.DEFINE_list("rows", ["baseline", "teacher", "kd_fitnet"],
                  f"Training rows to compare with the pipeline: {', '.join(common.ROWS)}.")

TINY = {"net": "vgg13", "width_multiplier": 1 / 16, "batch_size": 16, "train_examples": 256, "rounds": 2,
        "steps": 2, "warmup": 1, "distinct_batches": 2, "target_seconds": 0.0, "rows": ["baseline"]}
TARGET = 10.0
TRAINING_ROWS = [row for row in common.ROWS if not row.endswith("_inference")]


class PipelineTimer:
    """Seconds per batch of a tf.data pipeline drained on its own."""

    def __init__(self, dataset: tf.data.Dataset) -> None:
        self._iterator = iter(dataset)

    def warmup(self, steps: int) -> None:
        for _ in range(steps):
            next(self._iterator)

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            next(self._iterator)
        return (time.perf_counter() - start) / steps


def summarize(per_round: dict[str, list[float]], rows: list[str], batch_size: int) -> dict:
    pipeline = per_round["pipeline"]
    out = {"pipeline_images_per_s": batch_size / common.spread(pipeline)["median"], "rows": {}}
    for row in rows:
        cached, live = per_round[f"{row}/cached"], per_round[f"{row}/live"]
        headroom = common.spread(common.per_round_ratio(cached, pipeline))
        out["rows"][row] = {
            "cached_images_per_s": batch_size / common.spread(cached)["median"],
            "live_images_per_s": batch_size / common.spread(live)["median"],
            "pipeline_over_training": headroom,
            "live_over_cached_step": common.spread(common.per_round_ratio(live, cached)),
            "target": TARGET,
            "ok": headroom["median"] >= TARGET,
        }
    return out


def markdown(result: dict) -> str:
    lines = common.header_markdown("Input pipeline against training throughput", result)
    lines += [f"Pipeline alone: **{result['pipeline_images_per_s']:.0f} images/s**.", "",
              f"| Row | Training images/s (cached batches) | Pipeline / training (target >= {TARGET:g}) | "
              "Within target | Training images/s (live pipeline) | Live / cached step time |",
              "|---|---|---|---|---|---|"]
    for row, r in result["rows"].items():
        h, s = r["pipeline_over_training"], r["live_over_cached_step"]
        lines.append(f"| {row} | {r['cached_images_per_s']:.0f} | {h['median']:.1f} [{h['min']:.1f}-{h['max']:.1f}] "
                     f"| {'yes' if r['ok'] else '**no**'} | {r['live_images_per_s']:.0f} | "
                     f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}] |")
    lines += ["", "Ratios are per round (cells timed together), median [range]. The pipeline is timed alone, "
              "using every core; during training it shares them, which the live/cached column shows.", "",
              "## Rows", ""] + [f"- `{row}`: {common.ROWS[row]}" for row in result["rows"]] + [""]
    return "\n".join(lines)


def body() -> None:
    common.apply_tiny(TINY)
    common.check_common_flags()
    common.check_positive("width_multiplier", FLAGS.width_multiplier)
    common.check_positive("batch_size", FLAGS.batch_size)
    common.check_positive("train_examples", FLAGS.train_examples)
    common.check_choices("variant", [FLAGS.variant], common.VARIANTS)
    rows = common.check_choices("rows", FLAGS.rows, TRAINING_ROWS)
    if FLAGS.train_examples < FLAGS.batch_size * FLAGS.distinct_batches:
        raise UserError(f"--train_examples ({FLAGS.train_examples}) must be at least --batch_size x "
                               f"--distinct_batches ({FLAGS.batch_size * FLAGS.distinct_batches}).")
    common.check_out_writable(FLAGS.out)
    started, load = time.time(), common.LoadMonitor()
    machine = common.machine()

    splits = common.load_splits(FLAGS.data_dir or data.default_data_dir(), FLAGS.train_examples, FLAGS.seed)
    cached = common.cached_batches(splits, FLAGS.batch_size, FLAGS.distinct_batches, FLAGS.seed)

    def live() -> tf.data.Dataset:
        return splits.train_dataset(FLAGS.batch_size, FLAGS.seed).repeat()

    setup = common.Setup(FLAGS.net, FLAGS.width_multiplier, FLAGS.batch_size, FLAGS.variant, FLAGS.n, FLAGS.seed,
                         splits.num_classes)
    on_cached, on_live = common.RowFactory(setup, cached), common.RowFactory(setup, live())
    cells: dict[str, common.Timer] = {"pipeline": PipelineTimer(live())}
    for row in rows:
        cells[f"{row}/cached"] = on_cached.build(row)
        cells[f"{row}/live"] = on_live.build(row)
    per_round, counts = common.interleave(cells, FLAGS.rounds, FLAGS.steps, FLAGS.warmup, FLAGS.seed,
                                          FLAGS.target_seconds, log=logging.info)

    result = {
        "benchmark": NAME,
        "command": common.command_line(f"benchmarks.{NAME}"),
        "machine": machine,
        "settings": {"net": FLAGS.net, "width_multiplier": FLAGS.width_multiplier, "batch_size": FLAGS.batch_size,
                     "n": FLAGS.n, "variant": FLAGS.variant, "train_examples": len(splits.train_labels),
                     "rows": rows, "rounds": FLAGS.rounds, "steps": FLAGS.steps,
                     "target_seconds": FLAGS.target_seconds, "warmup": FLAGS.warmup,
                     "distinct_batches": FLAGS.distinct_batches, "seed": FLAGS.seed, "tiny": FLAGS.tiny},
        "timed_steps_per_round": counts,
        "step_ms_per_round": {name: [1000 * v for v in values] for name, values in per_round.items()},
        **summarize(per_round, rows, FLAGS.batch_size),
    }
    common.finish(FLAGS.out, result, started, load, markdown)


def main(argv: list[str]) -> None:
    common.run_main(body, argv)


if __name__ == "__main__":
    app.run(main)
