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
from absl import flags, logging

from benchmarks import cli, common
from pmkd_tf import data
from pmkd_tf.recipe import PRESETS

FLAGS = flags.FLAGS
NAME = "input_pipeline"
cli.define_flags(NAME, timing=True)
cli.define_cell_flags()
flags.DEFINE_integer("train_examples", PRESETS["cpu"].train_examples,
                     "Training images the pipeline shuffles and streams (the cpu preset's subset by default).",
                     lower_bound=1)
flags.DEFINE_enum("variant", "fp32", list(common.VARIANTS), "Training variant.")
flags.DEFINE_list("rows", ["baseline", "teacher", "kd_fitnet"],
                  f"Training rows to compare with the pipeline: {', '.join(common.ROWS)}.")

TINY = {"net": "vgg13", "width_multiplier": 1 / 16, "batch_size": 16, "train_examples": 256, "rounds": 2,
        "steps": 2, "warmup": 1, "distinct_batches": 2, "target_seconds": 0.0, "rows": ["baseline"]}
TARGET = 10.0
TRAINING_ROWS = [row for row in common.ROWS if not row.endswith("_inference")]
cli.validate("rows", cli.one_of(TRAINING_ROWS), each=True)
flags.register_multi_flags_validator(
    ["train_examples", "batch_size", "distinct_batches"],
    lambda f: f["train_examples"] >= f["batch_size"] * f["distinct_batches"],
    "--train_examples must be at least --batch_size x --distinct_batches")


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
    rows = list(dict.fromkeys(FLAGS.rows))
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()

    splits = common.cifar10_training_images(FLAGS.data_dir or data.default_data_dir(), FLAGS.train_examples,
                                            FLAGS.seed)
    cached = common.cached_batches(splits, FLAGS.batch_size, FLAGS.distinct_batches, FLAGS.seed)

    def live() -> tf.data.Dataset:
        return splits.train_dataset(FLAGS.batch_size, FLAGS.seed).repeat()

    setup = common.Setup(FLAGS.net, FLAGS.width_multiplier, FLAGS.batch_size, FLAGS.variant, FLAGS.n, FLAGS.seed,
                         splits.num_classes)
    on_cached, on_live = common.RowFactory(setup, cached), common.RowFactory(setup, live())
    cells: dict[str, common.Timer] = {"pipeline": PipelineTimer(live())}
    for row in rows:
        cells[f"{row}/cached"] = on_cached.timer(row)
        cells[f"{row}/live"] = on_live.timer(row)
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
    common.finish(FLAGS.out, result, started, contention, markdown)


if __name__ == "__main__":
    cli.run_benchmark(body, TINY)
