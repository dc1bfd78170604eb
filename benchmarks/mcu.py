"""Trained models on a microcontroller: accuracy against RAM, flash and time on a Cortex-M4 (a Pareto table).

    python -m benchmarks.mcu --results=experiments/results --tables=resnet8/mcu,resnet18/mcu

For each `<net>/<table>` that `experiments.run --table=<table>` wrote under
`--results`, the run of `--seed` of every method (or of `--methods`; a
teacher is a model too) is exported as a user exports it (`python -m pmkd_tf.export`: int8 top-1 on the
test set, TFLite Micro's arena, the C engine bit-exact on the host and on the
emulated Cortex-M4). The board figures are the export's own report
(`exporter.board_figures`); `cpu_hours` is the wall time of every phase the
run needed, its teacher included, on the CPUs the run names. An
export of the same training with the same flags is reused, so an interrupted run resumes.

Writes `<out>.json` (`{"rows": [...]}`, one row per model), `<out>.md` (the
rows by RAM, those no other row beats on both accuracy and RAM marked) and
`<out>.png` (top-1 against RAM, log scale: the C engine's state + stack, and
TFLite Micro's arena for the same int8 model).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import flags

from benchmarks import cli, common
from pmkd_tf.errors import UserError
from pmkd_tf.export import exporter

FLAGS = flags.FLAGS
NAME = "mcu"
RAM_BUDGET = 8192  # the 8 KB of C engine state + stack

cli.define_flags(NAME)
flags.DEFINE_string("results", "experiments/results", "The tables' --out_dir.")
flags.DEFINE_string("dataset", "cifar10", "The tables' dataset.")
flags.DEFINE_list("tables", ["resnet8/mcu"], "<net>/<table> of each results table whose runs become rows.")
flags.DEFINE_list("methods", [], "Only these methods' runs (default: every method of each table).")
flags.DEFINE_integer("seed", 0, "The seed whose run of each method is exported.", lower_bound=0)
flags.DEFINE_string("exports", "mcu_exports", "Where the exports go (each reused for the same training and flags).")
flags.DEFINE_integer("test_examples", None, "Test images for int8 top-1 (default: the whole test set).", lower_bound=1)
flags.DEFINE_integer("c_stream_examples", 1000, "Test images the C engine runs on the host, bit-exact.", lower_bound=1)
flags.DEFINE_integer("cortex_m4_examples", 100, "Of those, the images run on the emulated Cortex-M4.", lower_bound=1)
TINY = {"test_examples": 64, "c_stream_examples": 16, "cortex_m4_examples": 2}


def _table_runs(net_table: str) -> tuple[dict, list[tuple[Path, dict]]]:
    """A results table's settings and, per method, its run of --seed with the phase folder it ends in."""
    net, _, table = net_table.partition("/")
    path = Path(FLAGS.results) / FLAGS.dataset / net / f"{table}.json"
    if not table or not path.is_file():
        raise UserError(f"--tables {net_table}: no results table at {path}; train it with experiments.run "
                        f"--net={net} --table={table or '<name>'}.")
    results = json.loads(path.read_text())
    runs = [run for run in results["runs"].values() if run["seed"] == FLAGS.seed and run.get("status") == "ok"
            and (not FLAGS.methods or run["method"] in FLAGS.methods)]
    return results["experiment"], [(path.parent / run["folder"], run) for run in runs]


def _export(folder: Path) -> dict:
    """`pmkd_tf.export` of one trained phase as a user runs it, its report reused only if it is of this training.

    The phase folder's name does not say which training it holds: a phase trained again (its result.json deleted)
    keeps its folder. So beside each report goes `exported.json`, the phase's result.json and this run's export
    flags, and a report is reused only when both are still the same.
    """
    out_dir = Path(FLAGS.exports) / folder.parent.name / folder.name
    report, stamp_file = out_dir / "report.json", out_dir / "exported.json"
    stamp = {"result": json.loads((folder / "result.json").read_text()), "test_examples": FLAGS.test_examples,
             "c_stream_examples": FLAGS.c_stream_examples, "cortex_m4_examples": FLAGS.cortex_m4_examples}
    if report.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        print(f"Reusing the export of {folder.name} in {out_dir}.", flush=True)
        return json.loads(report.read_text())
    command = [sys.executable, "-m", "pmkd_tf.export", f"--model={folder / 'model.keras'}",
               f"--out_dir={out_dir}", "--c_engine=on", "--noverbose",
               f"--c_stream_examples={FLAGS.c_stream_examples}", f"--cortex_m4_examples={FLAGS.cortex_m4_examples}"]
    command += [f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []
    command += [f"--test_examples={FLAGS.test_examples}"] if FLAGS.test_examples else []
    print("+", " ".join(command), flush=True)
    if subprocess.run(command).returncode:
        raise UserError(f"exporting {folder} failed (its output is above).")
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n")
    return json.loads(report.read_text())


def row(experiment: dict, folder: Path, run: dict, report: dict) -> dict:
    """One model's row: what it is, the export's board figures, and what training it cost."""
    teacher = run["method"] == "teacher"
    width = (experiment.get("teacher_width_multiplier") if teacher else None) or experiment["width_multiplier"]
    return {
        "net": experiment["net"], "filter_shape": "NxN" if teacher else "1xN", "width_multiplier": width,
        "downsampling": None if teacher else experiment.get("downsampling", "stride"), "method": run["method"],
        "phase": folder.name, **exporter.board_figures(report),
        "cpu_hours": round(run["total_wall_seconds"] / 3600, 3), "cpus": run.get("cpus", ["unrecorded"]),
    }


def pareto(rows: list[dict]) -> list[bool]:
    """Whether each row is on the accuracy-RAM frontier: no other row has at least its int8 top-1 with less RAM,
    or more top-1 with at most its RAM."""
    ram = [r["state_bytes"] + r["peak_stack_bytes"] for r in rows]
    top1 = [r["int8_top1"] for r in rows]
    return [not any((top1[j] >= top1[i] and ram[j] < ram[i]) or (top1[j] > top1[i] and ram[j] <= ram[i])
                    for j in range(len(rows))) for i in range(len(rows))]


def _label(r: dict) -> str:
    kind = r["filter_shape"] + (f" {r['downsampling']}" if r["downsampling"] else "")
    return f"{r['net']} {kind} x{r['width_multiplier']:g} {r['method']}"


def markdown(result: dict) -> str:
    lines = common.header_markdown("Trained models on a microcontroller: accuracy against RAM", result)
    rows = result["rows"]
    lines += ["Each model's int8 top-1 on the test set and its C engine on the emulated Cortex-M4, from the "
              "export's own report.json; RAM is the engine's state + peak stack, flash its code + constants; the "
              "TFLite Micro arena is the smallest that runs the same int8 model. CPU hours: every phase the model "
              f"needed, its teacher included. Rows by RAM; ★: no other row is both as accurate and smaller. The "
              f"budget is {RAM_BUDGET:,} B of RAM.", "",
              "| Model | int8 top-1 | float top-1 | test images | RAM (state + stack, B) | TFLM arena (B) | "
              "flash (B) | M4 instructions | rows read | bit-exact | CPU hours | CPUs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|"]
    for r in rows:
        ram = r["state_bytes"] + r["peak_stack_bytes"]
        lines.append(f"| {'★ ' if r['pareto'] else ''}{_label(r)} | {100 * r['int8_top1']:.2f} | "
                     f"{100 * r['float_top1']:.2f} | {r['test_images']:,} | {ram:,} ({r['state_bytes']:,} + "
                     f"{r['peak_stack_bytes']:,}) | {r['tflm_arena_bytes']:,} | {r['flash_bytes']:,} | "
                     f"{r['instructions'] / 1e6:.2f} M | {r['input_rows_read']} | {r['bit_exact']} | "
                     f"{r['cpu_hours']:.2f} | {'; '.join(r['cpus'])} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Top-1 against RAM (log): each model's C engine (filled) and TFLite Micro arena (hollow), joined, labelled."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for r in rows:
        ram, top1 = r["state_bytes"] + r["peak_stack_bytes"], 100 * r["int8_top1"]
        ax.plot([ram, r["tflm_arena_bytes"]], [top1, top1], ":", color="0.6", zorder=1)
        ax.scatter([ram], [top1], color="tab:blue", zorder=2)
        ax.scatter([r["tflm_arena_bytes"]], [top1], facecolors="none", edgecolors="tab:orange", zorder=2)
        ax.annotate(_label(r), (ram, top1), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(RAM_BUDGET, color="tab:red", linestyle="--", linewidth=1, label=f"{RAM_BUDGET:,} B")
    ax.scatter([], [], color="tab:blue", label="C engine: state + peak stack")
    ax.scatter([], [], facecolors="none", edgecolors="tab:orange", label="TFLite Micro arena, same int8 model")
    ax.set(xscale="log", xlabel="RAM (bytes, log scale)", ylabel="int8 top-1 (%)",
           title="CIFAR-10 on a Cortex-M4: accuracy against RAM")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def body() -> None:
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()
    tables = [_table_runs(net_table) for net_table in FLAGS.tables]  # every table found before any export
    rows, seen = [], set()
    for experiment, runs in tables:
        for folder, run in runs:
            if folder.name not in seen:  # a teacher two tables share is one model
                seen.add(folder.name)
                rows.append(row(experiment, folder, run, _export(folder)))
    if not rows:
        raise UserError(f"no finished run of seed {FLAGS.seed} in {', '.join(FLAGS.tables)}.")
    rows.sort(key=lambda r: r["state_bytes"] + r["peak_stack_bytes"])
    for r, on_frontier in zip(rows, pareto(rows)):
        r["pareto"] = on_frontier
    result = {"benchmark": NAME, "command": common.command_line(f"benchmarks.{NAME}"), "machine": machine,
              "settings": {"tables": FLAGS.tables, "methods": FLAGS.methods, "results": FLAGS.results,
                           "seed": FLAGS.seed,
                           "test_examples": FLAGS.test_examples, "c_stream_examples": FLAGS.c_stream_examples,
                           "cortex_m4_examples": FLAGS.cortex_m4_examples, "tiny": FLAGS.tiny},
              "rows": rows}
    common.finish(FLAGS.out, result, started, contention, markdown)
    plot(rows, common.out_paths(FLAGS.out)[0].with_suffix(".png"))


if __name__ == "__main__":
    cli.run_benchmark(body, tiny=TINY)
