"""Reproduce the paper's table for one net and dataset.

    python -m pmkd_tf.experiments.run --net=resnet18 --preset=cpu --data_dir=../shared/data

Trains Teacher, Baseline, KD, FitNet, KD+FitNet, PM+KD, PM+FitNet and PMKD
for every seed (reusing the shared teacher and pacemakers), then writes
`<out_dir>/<dataset>/<net>/results.json` and `results.md`. Re-running the
same command resumes: finished phases are skipped and an interrupted phase
continues from its last completed epoch. A variant of the table (e.g. the
Table 4 ablation, `--pacemaker_kind=column --table=pacemaker_column`) goes
into a table of its own beside it, sharing every phase it can.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
from absl import flags, logging

from pmkd_tf import methods, pipeline, results
from pmkd_tf.experiments import cli, experiment_flags
from pmkd_tf.recipe import PRESETS

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", list(methods.PAPER_METHODS), f"Rows to run: {', '.join(methods.METHODS)}.")
flags.DEFINE_integer("seeds", None, "Number of seeds (0..seeds-1); default: the preset's.", lower_bound=1)
flags.DEFINE_integer("epochs", None, "Epochs per phase (LR milestones scale with it); default: the preset's.",
                     lower_bound=1)
flags.DEFINE_string("table", results.DEFAULT_TABLE, "Name of the results table: <table>.json and <table>.md in "
                    "<out_dir>/<dataset>/<net>. Runs with other settings than an existing table's (e.g. the "
                    "Table 4 ablation's --pacemaker_kind=column) need a table of their own; phases are still shared.")
flags.DEFINE_enum("strategy", "default", list(pipeline.STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_string("hparams_from", None, "best.json from experiments.tune: its best trial's experiment (data, "
                    "net, recipe, hyperparameters, seeds) for every setting the command line does not give.")
flags.register_validator("table", lambda name: bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)),
                         "--table must be a plain file name (letters, digits, _ . -)")
flags.register_validator("hparams_from", lambda path: path is None or Path(path).is_file(),
                         "--hparams_from must be the path of a best.json written by experiments.tune")


def train_table(exp: pipeline.Experiment, seeds: Sequence[int], method_names: Sequence[str], data_dir: str | None,
                out_dir: str, strategy_name: str = "default", table: str = results.DEFAULT_TABLE,
                callbacks: Sequence[keras.callbacks.Callback] = ()) -> Path:
    """Train every (seed, method), recording each result in `table` as soon as it exists; the table's .md path."""
    for name in method_names:
        methods.get(name)
    strategy = pipeline.STRATEGIES[strategy_name]()
    splits = pipeline.load_splits(exp, data_dir)
    trainer = pipeline.Trainer(exp, splits, pipeline.worker_out_dir(out_dir, strategy), strategy,
                               callbacks=callbacks)
    path = trainer.root / f"{table}.json"
    # The table's settings block: the experiment, its classes and the command that ran.
    settings = {**exp.flat(), "class_names": list(splits.class_names),
                "command": " ".join(["python -m pmkd_tf.experiments.run", *map(shlex.quote, sys.argv[1:])])}
    with pipeline.out_dir_lock(trainer.root):
        results.check_same_table(path, settings)
        for seed in seeds:
            for method in method_names:
                if methods.METHODS[method].trains_teacher and not exp.teacher_per_seed and seed != seeds[0]:
                    continue
                result = trainer.train_method(method, seed)
                table_now = results.record(path, result, settings)
                path.with_suffix(".md").write_text(results.markdown(table_now))
                if result["status"] == "ok":
                    logging.info("%s seed %d: top-1 %.2f%% (%d phases, %d epochs, %.0f s)", method, seed,
                                 100 * result["test_accuracy"], len(result["phases"]), result["total_epochs"],
                                 result["total_wall_seconds"])
                else:
                    logging.error("%s seed %d FAILED: %s", method, seed, result["error"])
    return path.with_suffix(".md")


def main() -> None:
    best = json.loads(Path(FLAGS.hparams_from).read_text()) if FLAGS.hparams_from else {}
    # A best.json from before the tuner recorded its whole experiment still supplies its hyperparameters.
    exp = experiment_flags.experiment(FLAGS.epochs, best.get("experiment") or best.get("hyperparameters"))
    seeds = FLAGS.seeds or (best["seeds"] if "experiment" in best and not FLAGS["preset"].present
                            else PRESETS[FLAGS.preset].seeds)
    table = train_table(exp, list(range(seeds)), FLAGS.methods, experiment_flags.data_dir(), FLAGS.out_dir,
                        FLAGS.strategy, FLAGS.table)
    print(table.read_text())


if __name__ == "__main__":
    cli.main(main)
