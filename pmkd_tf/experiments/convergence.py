"""How far from converged a method is: its accuracy at a ladder of epoch counts.

    python -m pmkd_tf.experiments.convergence --net=resnet18 --preset=cpu --epochs_list=12,24,48,96,192 \\
        --weight_decay_kind=coupled --data_dir=../shared/data --out_dir=experiments/results

Trains `--method` (default the baseline) once per epoch count, with the LR
milestones scaled to each, and writes `<out_dir>/<dataset>/<net>/<table>.json`,
`.md` (top-1, the gain of each doubling, wall time and seconds per epoch) and
`.png`. A setting has converged when training twice as long gains less than
a point. Every run is an ordinary phase, so re-running resumes and
`experiments.run` reuses what this trained.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from absl import app, flags, logging

from pmkd_tf import files, methods, pipeline
from pmkd_tf.errors import UserError
from pmkd_tf.experiments import flags as shared

FLAGS = flags.FLAGS
flags.DEFINE_list("epochs_list", ["12", "24", "48", "96", "192"], "Epoch counts to train at, in increasing order.")
flags.DEFINE_string("method", "baseline", f"Method to train: {', '.join(methods.METHODS)}.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_string("table", "convergence", "Name of the output files.")


def markdown(table: dict) -> str:
    """The ladder as a table: each count's top-1, what its doubling bought, and its cost."""
    rows = table["rows"]
    lines = [f"# {table['method']} on {table['dataset']}/{table['net']}: accuracy against epochs", "",
             f"Command: `{table['command']}`  ", f"Settings: {table['settings']}", "",
             "| Epochs | Top-1 (%) | Gain over half the epochs (points) | Wall s | s / epoch |", "|---:|---:|---:|---:|---:|"]
    by_epochs = {row["epochs"]: row for row in rows}
    for row in rows:
        half = by_epochs.get(row["epochs"] // 2) if row["epochs"] % 2 == 0 else None
        gain = f"{100 * (row['test_accuracy'] - half['test_accuracy']):+.2f}" if half else ""
        lines.append(f"| {row['epochs']} | {100 * row['test_accuracy']:.2f} | {gain} | {row['wall_seconds']:.0f} | "
                     f"{row['wall_seconds'] / row['epochs']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [row["epochs"] for row in table["rows"]]
    ax.plot(epochs, [100 * row["test_accuracy"] for row in table["rows"]], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel("epochs (LR milestones scaled)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{methods.label(table['method'])}, {table['net']} on {table['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _main() -> None:
    try:
        ladder = [int(e) for e in FLAGS.epochs_list]
    except ValueError:
        raise UserError(f"--epochs_list must be whole numbers, got {','.join(FLAGS.epochs_list)}.") from None
    if not ladder or any(e <= 0 for e in ladder) or ladder != sorted(set(ladder)):
        raise UserError(f"--epochs_list must be positive and increasing, got {','.join(FLAGS.epochs_list)}.")
    methods.get(FLAGS.method)
    base = shared.experiment(ladder[0])
    splits = pipeline.load_splits(base, shared.data_dir())
    root = Path(FLAGS.out_dir) / base.dataset / base.net
    table = {"method": FLAGS.method, "dataset": base.dataset, "net": base.net, "rows": [],
             "command": " ".join(["python -m pmkd_tf.experiments.convergence", *map(shlex.quote, sys.argv[1:])]),
             "settings": {k: v for k, v in dataclasses.asdict(base).items() if k != "recipe"}
             | {"recipe": {k: v for k, v in dataclasses.asdict(base.recipe).items() if k != "epochs"}}}
    with pipeline.out_dir_lock(root):
        for epochs in ladder:
            exp = dataclasses.replace(base, recipe=dataclasses.replace(base.recipe, epochs=epochs))
            result = pipeline.Trainer(exp, splits, FLAGS.out_dir).run(FLAGS.method, FLAGS.seed)
            if result["status"] != "ok":
                raise UserError(f"{FLAGS.method} at {epochs} epochs failed: {result['error']}")
            table["rows"].append({"epochs": epochs, "test_accuracy": result["test_accuracy"],
                                  "wall_seconds": result["total_wall_seconds"], "folder": result["folder"]})
            files.atomic_write_json(root / f"{FLAGS.table}.json", table)
            files.atomic_write(root / f"{FLAGS.table}.md", markdown(table))
            plot(table, root / f"{FLAGS.table}.png")
            logging.info("%s at %d epochs: top-1 %.2f%% (%.0f s)", FLAGS.method, epochs,
                         100 * result["test_accuracy"], result["total_wall_seconds"])
    print(markdown(table))


def main(argv: list[str]) -> None:
    del argv
    shared.main_guard(_main)


if __name__ == "__main__":
    app.run(main, flags_parser=shared.parse)
