"""Figures: a results table's per-method accuracy (seeds as points) and training curves; `pyplot` and `save`
serve the study scripts in `experiments/` too, so every figure is drawn and saved alike."""

from __future__ import annotations

import csv
from pathlib import Path

from pmkd_tf import methods, results as tables
from pmkd_tf.errors import UserError


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot(root: Path, seed: int, table: str = tables.DEFAULT_TABLE) -> list[Path]:
    """Draw both figures for the results table `table` under `root`; return their paths.

    The default table's figures are accuracy.png and curves_seed<S>.png;
    another table's carry its name as a prefix, so tables never overwrite
    each other's figures.
    """
    plt = pyplot()
    path = root / f"{table}.json"
    results = tables.read_table(path)
    if not results["runs"]:
        raise UserError(f"No runs in {path}.")
    prefix, named = ("", "") if table == tables.DEFAULT_TABLE else (f"{table}_", f" ({table})")
    rows = tables.summary(results)
    shown = [m for m, row in rows.items() if row["mean"] is not None]

    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(shown), 4))
    ax.bar(range(len(shown)), [rows[m]["mean"] for m in shown], color="#9ecae1")
    for i, m in enumerate(shown):
        ax.scatter([i] * len(rows[m]["accuracies"]), rows[m]["accuracies"], color="#08519c", zorder=3, s=14)
    if "baseline" in shown:
        ax.axhline(rows["baseline"]["mean"], color="#cb181d", lw=1, ls="--", label="baseline mean")
        ax.legend(loc="lower right")
    accs = [a for m in shown for a in rows[m]["accuracies"]]
    ax.set_ylim(max(0.0, min(accs) - 5), min(100.0, max(accs) + 3))
    ax.set_xticks(range(len(shown)), [methods.label(m) for m in shown], rotation=30, ha="right")
    ax.set_ylabel("test top-1 (%)")
    exp = results.get("experiment", {})
    ax.set_title(f"{exp.get('net', '')} on {exp.get('dataset', '')}{named}: seeds as points")
    paths = [save(fig, root / f"{prefix}accuracy.png", 110)]

    runs = {r["method"]: r for r in results["runs"].values() if r["seed"] == seed and r.get("status") == "ok"}
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for method, run in runs.items():
            curve: list[float] = []
            for folder in run["phases"]:
                if folder.startswith("teacher-") and method != "teacher":
                    continue
                with open(root / folder / "history.csv") as f:
                    curve += [float(row["accuracy"]) for row in csv.DictReader(f)]
            ax.plot(range(1, len(curve) + 1), [100 * a for a in curve], label=methods.label(method))
        ax.set_xlabel("epoch (phases of one method back to back)")
        ax.set_ylabel("training top-1 (%)")
        ax.set_title(f"Training curves{named}, seed {seed}")
        ax.legend(fontsize=7, ncol=2)
        paths.append(save(fig, root / f"{prefix}curves_seed{seed}.png", 110))
    return paths
