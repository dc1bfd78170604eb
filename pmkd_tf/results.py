"""Results tables: results.json (every run, per seed) and results.md (the paper's table).

The table follows the paper (the mean top-1 over seeds, up/down against the
baseline; the stability view of sec. 4.4.3) and pairs every method with the
baseline and each compute-matched control, seed by seed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import scipy.stats

from pmkd_tf import files, methods
from pmkd_tf.errors import UserError

DEFAULT_TABLE = "results"
# Experiment settings that do not change a table's numbers: how it was
# launched, XLA and steps per execution (which change speed only). Every other setting does.
NOT_TABLE_DEFINING = ("command", "jit_compile", "steps_per_execution")

# The paper's Table 1 (CIFAR-10 top-1, full-size nets, 200 epochs per phase, 5 seeds),
# in the order of methods.PAPER_METHODS.
PAPER_CIFAR10 = {
    "vgg13": (92.93, 69.72, 68.35, 70.84, 65.31, 71.27, 70.96, 71.44),
    "vgg16": (93.63, 70.96, 68.23, 69.27, 65.52, 71.84, 71.69, 72.42),
    "vgg19": (93.60, 70.20, 69.08, 69.39, 64.89, 71.02, 70.45, 72.19),
    "resnet18": (94.64, 82.15, 82.63, 82.09, 81.57, 82.90, 82.74, 83.44),
    "resnet34": (94.23, 82.24, 82.63, 81.59, 80.69, 83.20, 82.66, 83.67),
    "resnet50": (94.34, 81.62, 82.58, 82.09, 79.07, 81.94, 81.79, 82.82),
    "wrn_10_10": (93.68, 71.82, 71.14, 70.89, 68.05, 72.11, 72.53, 73.26),
    "wrn_16_8": (94.67, 73.66, 73.99, 72.88, 71.83, 74.93, 75.01, 75.85),
    "wrn_28_6": (95.34, 74.20, 73.97, 74.03, 72.69, 75.78, 75.54, 76.03),
    "wrn_40_4": (95.45, 74.22, 73.82, 74.49, 72.31, 75.51, 75.34, 75.91),
}


def read_table(path: Path) -> dict:
    """The table at `path` (with no runs if it does not exist yet)."""
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def check_same_table(path: Path, experiment: dict) -> None:
    """Refuse to record runs made with other settings into an existing table.

    One results.json holds one row per (method, seed) and one settings
    block; runs of e.g. the Table 4 ablation (`--pacemaker_kind=column`) or a
    tuned rho would silently replace the rows of the main table.
    """
    recorded = read_table(path).get("experiment")
    if not recorded:
        return
    differ = sorted(key for key in set(recorded) | set(experiment)
                    if key not in NOT_TABLE_DEFINING and recorded.get(key) != experiment.get(key))
    if differ:
        settings = ", ".join(f"{key}={recorded.get(key)!r} (now {experiment.get(key)!r})" for key in differ)
        raise UserError(f"{path} is a table made with other settings: {settings}. Pass --table=<name> to record "
                        "these runs in a table of their own; finished phases are still shared.")


def record(path: Path, run: dict, experiment: dict) -> dict:
    """Add one run to results.json (atomically); a rerun with a new config replaces the old."""
    results = read_table(path)
    results["experiment"] = experiment
    results["runs"][f"{run['method']}/seed{run['seed']}"] = run
    files.atomic_write_json(path, results)
    return results


def summary(results: dict) -> dict[str, dict]:
    """Per method, in `methods.METHODS` order: seeds, accuracies (%), mean, deviations, spread, cost; failures."""
    grouped: dict[str, list[dict]] = {}
    for run in results["runs"].values():
        grouped.setdefault(run["method"], []).append(run)
    order = {name: i for i, name in enumerate(methods.METHODS)}
    table = {}
    for method in sorted(grouped, key=lambda m: (order.get(m, len(order)), m)):
        runs = sorted(grouped[method], key=lambda r: r["seed"])
        ok = [r for r in runs if r.get("status") == "ok"]
        accs = [100 * r["test_accuracy"] for r in ok]
        mean = statistics.fmean(accs) if accs else None
        table[method] = {
            "seeds": [r["seed"] for r in ok], "accuracies": accs, "mean": mean,
            "deviations": [a - mean for a in accs] if accs else [],
            "spread": max(accs) - min(accs) if accs else None,
            "failed": [f"seed {r['seed']}: {r.get('error', 'failed')}" for r in runs if r.get("status") != "ok"],
            "epochs": ok[0]["total_epochs"] if ok else None,
            "wall_seconds": statistics.fmean(r["total_wall_seconds"] for r in ok) if ok else None,
        }
    return table


def paired(table: dict[str, dict], reference: str) -> dict[str, list[float]]:
    """Per method: its top-1 minus the reference's at the same seed, over the seeds both have, in seed order.

    A seed fixes the student's initial weights and the order of its batches,
    so pairing by seed removes what the seed adds to both runs; with 3 seeds
    the spread of one method is as large as the margins being measured.
    """
    ref = dict(zip(table[reference]["seeds"], table[reference]["accuracies"]))
    return {method: [a - ref[s] for s, a in zip(row["seeds"], row["accuracies"]) if s in ref]
            for method, row in table.items()
            if method not in ("teacher", reference) and row["mean"] is not None}


def p_value(margins: list[float]) -> float | None:
    """Two-sided paired t-test of seed-paired margins against zero (the same as `scipy.stats.ttest_rel` on the
    two rows); None with fewer than two pairs or margins that do not vary, where the test says nothing."""
    if len(margins) < 2 or statistics.pstdev(margins) == 0:
        return None
    return float(scipy.stats.ttest_1samp(margins, 0.0).pvalue)


def _paired_lines(table: dict[str, dict]) -> list[str]:
    """The margin of every method over the baseline and each compute-matched control, seed by seed."""
    controls = [m for m in table if m in methods.METHODS and methods.METHODS[m].epoch_factor > 1
                and table[m]["mean"] is not None]
    references = [m for m in ("baseline",) if (table.get(m) or {}).get("mean") is not None] + controls
    margins = {r: paired(table, r) for r in references}
    if not any(margins.values()):
        return []
    lines = ["", "## Paired by seed: each method minus the baseline and each compute-matched control", "",
             "Top-1 points, seed by seed over the seeds both rows have, their mean, and the two-sided paired "
             "t-test's p-value; a control's student trains as many epochs as a distilled student's phases. With "
             "3 seeds (2 degrees of freedom) only a margin several times its seed-to-seed spread reaches "
             "p < 0.05: a larger p says the seeds cannot decide, not that the rows are equal.", "",
             "| Method | " + " | ".join(f"minus {methods.label(r)}" for r in references) + " |",
             "|---|" + "---|" * len(references)]
    for method in table:
        cells = []
        for reference in references:
            diffs = margins[reference].get(method)
            p = p_value(diffs) if diffs else None
            cells.append(f"{statistics.fmean(diffs):+.2f} [{', '.join(f'{d:+.2f}' for d in diffs)}]"
                         + (f" p={p:.2g}" if p is not None else "") if diffs else "")
        if any(cells):
            lines.append(f"| {methods.label(method)} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict) -> str:
    """The paper's table for one net and dataset, plus the stability view."""
    exp = results.get("experiment", {})
    table = summary(results)
    base = (table.get("baseline") or {}).get("mean")
    lines = [
        f"# {exp.get('net', '?')} on {exp.get('dataset', '?')}", "",
        "Rows accumulate over every run with these settings (re-running resumes); the latest run was "
        f"`{exp.get('command', '?')}`.  ",
        f"Width multiplier {exp.get('width_multiplier')}, {exp.get('epochs')} epochs per phase, "
        f"rho={exp.get('rho')}, alpha={exp.get('alpha')}, tau={exp.get('temperature')}, "
        f"pacemaker={exp.get('pacemaker_kind')}, phase 3 starts from: {exp.get('phase3_init')}, "
        f"down-sampling: {exp.get('downsampling', 'stride')}.",
        *([f"{len(names)} classes: {', '.join(names)}."] if (names := exp.get("class_names")) else []), "",
        "Top-1 test accuracy (%), mean over seeds; up/down against the baseline. A run's cost counts every "
        "phase it needs, the shared teacher and pacemaker included.", "",
        "| Method | Top-1 | vs baseline | Seeds | Spread (max-min) | Epochs, all phases | Wall s, all phases |",
        "|---|---|---|---|---|---|---|",
    ]
    stability = ["", "## Stability (sec. 4.4.3): each seed's deviation from the method's mean", "",
                 "| Method | Per-seed top-1 | Deviation | Range |", "|---|---|---|---|"]
    for method, row in table.items():
        if row["mean"] is None:
            lines.append(f"| {methods.label(method)} | failed | | | | | |")
            continue
        delta = ""
        if base is not None and method not in ("teacher", "baseline"):
            diff = row["mean"] - base
            delta = f"{'↑' if diff > 0 else '↓'} {diff:+.2f}"
        lines.append(
            f"| {methods.label(method)} | {row['mean']:.2f} | {delta} | {len(row['seeds'])} | {row['spread']:.2f} | "
            f"{row['epochs']} | {row['wall_seconds']:.0f} |")
        accs = ", ".join(f"{a:.2f}" for a in row["accuracies"])
        devs = ", ".join(f"{d:+.2f}" for d in row["deviations"])
        stability.append(f"| {methods.label(method)} | [{accs}] | [{devs}] | {row['spread']:.2f} |")
    lines += stability + _paired_lines(table)
    paper = PAPER_CIFAR10.get(exp.get("net")) if exp.get("dataset") == "cifar10" else None
    if paper and base is not None:
        paper_row = dict(zip(methods.PAPER_METHODS, paper, strict=True))
        lines += ["", "## Against the paper (Table 1, CIFAR-10): deltas against each baseline", "",
                  "The paper trains full-size nets for 200 epochs per phase over 5 seeds; this table's "
                  "settings are above.", "", "| Method | Ours | Paper |", "|---|---|---|"]
        for method, row in table.items():
            if method in paper_row and method not in ("teacher", "baseline") and row["mean"] is not None:
                lines.append(f"| {methods.label(method)} | {row['mean'] - base:+.2f} | "
                             f"{paper_row[method] - paper_row['baseline']:+.2f} |")
    failed = [(m, f) for m, row in table.items() for f in row["failed"]]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- {methods.label(m)}, {f}" for m, f in failed]
    return "\n".join(lines) + "\n"
