"""How far from converged a method is: its accuracy at a ladder of epoch counts, per training-set size.

    python experiments/convergence.py --net=resnet18 --preset=cpu --train_examples=2500 \\
        --epochs_list=24,48,96,192 --weight_decay_kind=coupled --data_dir=../shared/data \\
        --out_dir=experiments/results

Trains `--method` (default the baseline) once per epoch count, with the LR
milestones scaled to each, and records the rungs in
`<out_dir>/<dataset>/<net>/<table>.json`, `.md` and `.png`: one ladder per
training-set size (`--train_examples`), each with the command that made it,
so the cheapest converged (size, epochs) can be read off one page. A ladder
stops climbing once training twice as long gains less than `--stop_below`
points. Every rung is an ordinary phase, so re-running resumes and
`experiments.run` reuses what this trained.

A study, not part of the library: it imports `pmkd_tf` (its shared
experiment flags included), and `pmkd_tf` never imports it.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

from absl import flags, logging

from pmkd_tf import files, methods, pipeline, plots
from pmkd_tf.errors import UserError
from pmkd_tf.experiments import cli, experiment_flags

FLAGS = flags.FLAGS
flags.DEFINE_list("epochs_list", ["12", "24", "48", "96", "192"], "Epoch counts to train at, in increasing order.")
flags.DEFINE_enum("method", "baseline", list(methods.METHODS), "Method to train.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_float("stop_below", 1.0, "Stop climbing once doubling the epochs gains less than this many points "
                   "(the issue's test of convergence).")
flags.DEFINE_string("table", "convergence", "Name of the output files.")


def _ladder(epochs_list: list[str]) -> list[int]:
    """The epoch counts of `--epochs_list`; a UserError unless they are whole, positive and increasing."""
    try:
        ladder = [int(e) for e in epochs_list]
    except ValueError:
        ladder = []
    if not ladder or any(e <= 0 for e in ladder) or ladder != sorted(set(ladder)):
        raise UserError(f"the epoch counts must be positive whole numbers in increasing order, got "
                        f"{','.join(epochs_list)}.")
    return ladder


cli.check("epochs_list", _ladder)


def read_ladders(path: Path, method: str, settings: dict) -> dict:
    """The table at `path` (empty if new); refused if its ladders were made with other settings."""
    table = json.loads(path.read_text()) if path.exists() else {"method": method, "settings": settings, "ladders": {}}
    if (table.get("method"), table.get("settings")) != (method, settings) or "ladders" not in table:
        raise UserError(f"{path} holds ladders of other settings; pass --table=<name> for a table of its own "
                        "(finished phases are still shared).")
    return table


def record(path: Path, method: str, settings: dict, images: int, command: str, row: dict) -> dict:
    """Add one rung to the ladder of `images` training images (atomically)."""
    table = read_ladders(path, method, settings)
    ladder = table["ladders"].setdefault(str(images), {"command": command, "rows": []})
    ladder["command"] = command
    ladder["rows"] = sorted([r for r in ladder["rows"] if r["epochs"] != row["epochs"]] + [row],
                            key=lambda r: r["epochs"])
    table["ladders"] = dict(sorted(table["ladders"].items(), key=lambda item: int(item[0])))
    files.atomic_write_json(path, table)
    return table


def doubling_gain(rows: list[dict], epochs: int) -> float | None:
    """Points gained at `epochs` over half as many, if that rung exists."""
    by_epochs = {row["epochs"]: row for row in rows}
    if epochs % 2 or epochs // 2 not in by_epochs:
        return None
    return 100 * (by_epochs[epochs]["test_accuracy"] - by_epochs[epochs // 2]["test_accuracy"])


def markdown(table: dict) -> str:
    """One section per training-set size: each count's top-1, what its doubling bought, and its cost."""
    settings = table["settings"]
    lines = [f"# {table['method']} on {settings['dataset']}/{settings['net']}: accuracy against epochs", "",
             f"Settings (all ladders): {settings}"]
    for images, ladder in table["ladders"].items():
        lines += ["", f"## {int(images):,} training images", "", f"Command: `{ladder['command']}`", "",
                  "| Epochs | Top-1 (%) | Gain over half the epochs (points) | Wall s | s / epoch |",
                  "|---:|---:|---:|---:|---:|"]
        for row in ladder["rows"]:
            gain = doubling_gain(ladder["rows"], row["epochs"])
            lines.append(f"| {row['epochs']} | {100 * row['test_accuracy']:.2f} | "
                         f"{'' if gain is None else f'{gain:+.2f}'} | {row['wall_seconds']:.0f} | "
                         f"{row['wall_seconds'] / row['epochs']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(table: dict, path: Path) -> None:
    """Top-1 against epochs (log scale), one line per training-set size, of a convergence table."""
    fig, ax = plots.pyplot().subplots(figsize=(5, 3.5))
    ticks = sorted({row["epochs"] for ladder in table["ladders"].values() for row in ladder["rows"]})
    for images, ladder in table["ladders"].items():
        ax.plot([row["epochs"] for row in ladder["rows"]], [100 * row["test_accuracy"] for row in ladder["rows"]],
                "o-", label=f"{int(images):,} images")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(e) for e in ticks])
    ax.set_xlabel("epochs (LR milestones scaled)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{methods.label(table['method'])}, {table['settings']['net']} on {table['settings']['dataset']}")
    ax.legend()
    plots.save(fig, path, 120)


def main() -> None:
    ladder = _ladder(FLAGS.epochs_list)
    base = experiment_flags.experiment(ladder[0])
    splits = pipeline.load_splits(base, experiment_flags.data_dir())
    images = splits.num_examples("train")
    root = Path(FLAGS.out_dir) / base.dataset / base.net
    path = root / f"{FLAGS.table}.json"
    command = " ".join(["python experiments/convergence.py", *map(shlex.quote, sys.argv[1:])])
    # What every ladder of one table shares: the experiment without its size and epochs.
    settings = {key: value for key, value in base.flat().items() if key not in ("train_examples", "epochs")}
    with pipeline.out_dir_lock(root):
        read_ladders(path, FLAGS.method, settings)  # before training anything
        for epochs in ladder:
            exp = dataclasses.replace(base, recipe=dataclasses.replace(base.recipe, epochs=epochs))
            result = pipeline.Trainer(exp, splits, FLAGS.out_dir).train_method(FLAGS.method, FLAGS.seed)
            if result["status"] != "ok":
                raise UserError(f"{FLAGS.method} at {epochs} epochs failed: {result['error']}")
            table = record(path, FLAGS.method, settings, images, command,
                           {"epochs": epochs, "test_accuracy": result["test_accuracy"],
                            "wall_seconds": result["total_wall_seconds"], "folder": result["folder"]})
            files.atomic_write(path.with_suffix(".md"), markdown(table))
            plot(table, path.with_suffix(".png"))
            gain = doubling_gain(table["ladders"][str(images)]["rows"], epochs)
            logging.info("%s at %d epochs on %d images: top-1 %.2f%% (%.0f s)", FLAGS.method, epochs, images,
                         100 * result["test_accuracy"], result["total_wall_seconds"])
            if gain is not None and gain < FLAGS.stop_below:
                logging.info("Converged: %d epochs gain %+.2f points over %d (< %g); not climbing further.",
                             epochs, gain, epochs // 2, FLAGS.stop_below)
                break
    print(markdown(table))


if __name__ == "__main__":
    cli.main(main)
