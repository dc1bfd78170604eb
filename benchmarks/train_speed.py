"""Training step cost of every method, and of its parts, measured together in one run.

    python -m benchmarks.train_speed --net=resnet18 --width_multiplier=0.125 --batch_size=128 \
        --out=benchmarks/results/train_speed

For each variant (jit_compile off/on x float32/mixed_bfloat16) it builds every
row of `common.ROWS` on the same net, batch and real CIFAR-10 batches, times
them interleaved, and reports:

- images/s and the ratio to a plain `model.fit` of the student with CE;
- each distillation step over the sum of its separately timed parts
  (student step(s) + teacher inference), against issue 7's 1.15 limit;
- our KD+FitNet step over keras.distillation's on identical models, after
  checking that both compute the same loss;
- each variant's speed-up over float32 without XLA.
"""

from __future__ import annotations

import time

from absl import flags, logging

from benchmarks import cli, common
from pmkd_tf import data

FLAGS = flags.FLAGS
NAME = "train_speed"
cli.define_flags(NAME, timing=True)
cli.define_cell_flags()
flags.DEFINE_list("variants", list(common.VARIANTS), f"Variants to time together: {', '.join(common.VARIANTS)}.")
cli.validate("variants", cli.one_of(common.VARIANTS), each=True)
flags.DEFINE_list("rows", list(common.ROWS), f"Rows to time: {', '.join(common.ROWS)}.")
cli.validate("rows", cli.one_of(common.ROWS), each=True)

# One variant: each cell costs seconds of tracing (XLA: tens of seconds); add --variants to check more.
TINY = {"net": "vgg13", "width_multiplier": 1 / 16, "batch_size": 16, "rounds": 2, "steps": 2, "warmup": 1,
        "distinct_batches": 2, "target_seconds": 0.0, "variants": ["fp32"]}
REFERENCE = "fp32"


def summarize(per_round: dict[tuple[str, str], list[float]], variants: list[str], rows: list[str],
              batch_size: int) -> dict:
    """Medians, per-round ratios and verdicts from the raw per-round step times."""
    out: dict = {"variants": {}}
    for variant in variants:
        times = {row: per_round[(variant, row)] for row in rows}
        table = {}
        for row, values in times.items():
            entry = {"step_ms": 1000 * common.spread(values)["median"],
                     "images_per_s": batch_size / common.spread(values)["median"],
                     "step_ms_per_round": [1000 * v for v in values]}
            if "baseline" in times:
                entry["vs_baseline"] = common.spread(common.per_round_ratio(values, times["baseline"]))
            table[row] = entry
        targets = {}
        for row, parts in common.TARGETS.items():
            if row in times and all(p in times for p in parts):
                ratio = common.spread(common.per_round_ratio(times[row], *(times[p] for p in parts)))
                targets[row] = {"parts": list(parts), "ratio": ratio, "limit": common.TARGET_LIMIT,
                                "ok": ratio["median"] <= common.TARGET_LIMIT}
        result = {"rows": table, "targets": targets}
        if "kd_fitnet" in times and "keras_kd_fitnet" in times:
            result["ours_over_keras"] = common.spread(
                common.per_round_ratio(times["kd_fitnet"], times["keras_kd_fitnet"]))
        out["variants"][variant] = result
    if REFERENCE in variants:
        speedups = {}
        for row in rows:
            reference = per_round[(REFERENCE, row)]
            speedups[row] = {v: common.spread(common.per_round_ratio(reference, per_round[(v, row)]))["median"]
                             for v in variants}
        out["speedup_over_fp32"] = speedups
        out["fastest_variant"] = {row: max(s, key=s.get) for row, s in speedups.items()}
    return out


def _fmt(spread: dict) -> str:
    return f"{spread['median']:.2f} [{spread['min']:.2f}-{spread['max']:.2f}]"


def markdown(result: dict) -> str:
    lines = common.header_markdown("Training step cost per method", result)
    variants = result["settings"]["variants"]
    rows = result["settings"]["rows"]
    for variant in variants:
        v = result["variants"][variant]
        jit, policy = common.VARIANTS[variant]
        lines += [f"## {variant} (jit_compile={jit}, dtype policy {policy})", ""]
        fallback = [row for row in rows if result["effective_jit_compile"][f"{variant}/{row}"] != jit]
        if fallback:
            lines += [f"**Keras ran {', '.join(fallback)} with jit_compile={not jit}.**", ""]
        lines += ["| Row | Step (ms) | Images/s | x baseline, median [range over rounds] |", "|---|---|---|---|"]
        for row in rows:
            r = v["rows"][row]
            ratio = _fmt(r["vs_baseline"]) if "vs_baseline" in r else "-"
            lines.append(f"| {row} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | {ratio} |")
        if v["targets"]:
            lines += ["", f"Step over the sum of its parts (target <= {common.TARGET_LIMIT}):", "",
                      "| Step | Parts | Ratio | Within target |", "|---|---|---|---|"]
            for row, t in v["targets"].items():
                lines.append(f"| {row} | {' + '.join(t['parts'])} | {_fmt(t['ratio'])} | "
                             f"{'yes' if t['ok'] else '**no**'} |")
        if "ours_over_keras" in v:
            lines += ["", f"Our KD+FitNet step / keras.distillation's: **{_fmt(v['ours_over_keras'])}**"]
            check = result["checks"].get(variant, {}).get("keras_kd_fitnet_loss")
            if check:
                lines.append(f"(same loss from identical weights on one real batch: ours {check['ours']:.6f}, "
                             f"keras {check['keras']:.6f}, relative difference {check['relative_difference']:.1e})")
        lines.append("")
    if "speedup_over_fp32" in result:
        lines += ["## Variants: speed-up over fp32 (per-round ratio, median)", "",
                  "| Row | " + " | ".join(variants) + " | fastest |", "|---|" + "---|" * (len(variants) + 1)]
        for row in rows:
            s = result["speedup_over_fp32"][row]
            lines.append(f"| {row} | " + " | ".join(f"{s[v]:.2f}" for v in variants)
                         + f" | {result['fastest_variant'][row]} |")
        lines += ["", "Speed only: whether a faster variant keeps accuracy needs full training runs.", ""]
    lines += ["## Rows", ""] + [f"- `{row}`: {common.ROWS[row]}" for row in rows] + [""]
    return "\n".join(lines)


def body() -> None:
    variants, rows = list(dict.fromkeys(FLAGS.variants)), list(dict.fromkeys(FLAGS.rows))
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()

    splits = common.cifar10_training_images(FLAGS.data_dir or data.default_data_dir(),
                                            FLAGS.batch_size * FLAGS.distinct_batches, FLAGS.seed)
    dataset = common.cached_batches(splits, FLAGS.batch_size, FLAGS.distinct_batches, FLAGS.seed)
    cells, checks = {}, {}
    for variant in variants:
        setup = common.Setup(FLAGS.net, FLAGS.width_multiplier, FLAGS.batch_size, variant, FLAGS.n, FLAGS.seed,
                             splits.num_classes)
        factory = common.RowFactory(setup, dataset)
        for row in rows:
            cells[(variant, row)] = factory.timer(row)
        checks[variant] = factory.checks
    timers = {f"{v}/{r}": cell for (v, r), cell in cells.items()}
    raw, counts = common.interleave(timers, FLAGS.rounds, FLAGS.steps, FLAGS.warmup, FLAGS.seed,
                                    FLAGS.target_seconds, log=logging.info)
    per_round = {key: raw[f"{key[0]}/{key[1]}"] for key in cells}

    result = {
        "benchmark": NAME,
        "command": common.command_line(f"benchmarks.{NAME}"),
        "machine": machine,
        "settings": {"net": FLAGS.net, "width_multiplier": FLAGS.width_multiplier, "batch_size": FLAGS.batch_size,
                     "n": FLAGS.n, "variants": variants, "rows": rows, "rounds": FLAGS.rounds, "steps": FLAGS.steps,
                     "target_seconds": FLAGS.target_seconds,
                     "warmup": FLAGS.warmup, "distinct_batches": FLAGS.distinct_batches, "seed": FLAGS.seed,
                     "tiny": FLAGS.tiny},
        "checks": checks,
        "timed_steps_per_round": counts,
        "effective_jit_compile": {name: cell.jit_compile for name, cell in timers.items()},
        **summarize(per_round, variants, rows, FLAGS.batch_size),
    }
    common.finish(FLAGS.out, result, started, contention, markdown)


if __name__ == "__main__":
    cli.run_benchmark(body, TINY)
