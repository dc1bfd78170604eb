"""Reproduce the paper's table for one net and dataset.

    python -m pmkd_tf.experiments.run --net=resnet18 --preset=cpu --data_dir=../shared/data

Trains Teacher, Baseline, KD, FitNet, KD+FitNet, PM+KD, PM+FitNet and PMKD
for every seed (reusing the shared teacher and pacemakers), then writes
`<out_dir>/<dataset>/<net>/results.json` and `results.md`. Re-running the
same command resumes: finished phases are skipped and an interrupted phase
continues from its last completed epoch. A variant of the table (e.g. the
Table 4 ablation, `--pacemaker=column --table=pacemaker_column`) goes into a
table of its own beside it, sharing every phase it can.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path

from absl import app, flags, logging

from pmkd_tf import data, models, pipeline, report
from pmkd_tf.errors import UserError
from pmkd_tf.recipe import PRESETS, Recipe

FLAGS = flags.FLAGS
flags.DEFINE_string("net", "resnet18", f"Network: {', '.join(models.NETS)} or any wrn_D_K.")
flags.DEFINE_string("dataset", "cifar10", f"Dataset: {', '.join(data.DATASETS)}.")
flags.DEFINE_string("data_dir", None, f"Image-folder root (<data_dir>/<dataset>/{{train,test}}/<class>/*); "
                    f"default ${data.ENV_DATA_DIR}, else tensorflow-datasets.")
flags.DEFINE_list("methods", list(pipeline.PAPER_METHODS), f"Rows to run: {', '.join(pipeline.METHODS)}.")
flags.DEFINE_string("preset", "cpu", f"Scale of the run: {', '.join(PRESETS)}; explicit flags override it.")
flags.DEFINE_integer("seeds", None, "Number of seeds (0..seeds-1).")
flags.DEFINE_integer("epochs", None, "Epochs per phase (LR milestones scale with it).")
flags.DEFINE_integer("batch_size", None, "Batch size.")
flags.DEFINE_float("learning_rate", 0.1, "Initial SGD learning rate.")
flags.DEFINE_float("width_multiplier", None, "Channel multiplier of every net.")
flags.DEFINE_integer("n", 3, "N of the NxN / 1xN / Nx1 filters.")
flags.DEFINE_float("rho", 1.0, "Weight of the feature loss (paper: 0.01 to 5).")
flags.DEFINE_float("alpha", 0.9, "Weight of the logit KD loss; CE gets 1 - alpha.")
flags.DEFINE_float("temperature", 4.0, "KD temperature tau.")
flags.DEFINE_string("pacemaker", "ensemble", "Pacemaker: ensemble (1xN & Nx1), column (Nx1) or row (1xN).")
flags.DEFINE_string("phase3_init", "student", "Phase 3 starts from the phase-2 student (sec. 3.2) or "
                    "pacemaker_row (Fig. 2: the pacemaker's 1xN member).")
flags.DEFINE_bool("teacher_per_seed", False, "Train one teacher per seed instead of one shared teacher.")
flags.DEFINE_integer("train_examples", None, "Subsample the training set (seeded).")
flags.DEFINE_integer("test_examples", None, "Subsample the test set (seeded).")
flags.DEFINE_integer("validation_examples", 0, "Hold out this many training images for validation.")
flags.DEFINE_string("out_dir", "runs", "Where phases, results.json and results.md go.")
flags.DEFINE_string("table", report.DEFAULT_TABLE, "Name of the results table: <table>.json and <table>.md in "
                    "<out_dir>/<dataset>/<net>. Runs with other settings than an existing table's (e.g. the "
                    "Table 4 ablation's --pacemaker=column) need a table of their own; phases are still shared.")
flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default, mirrored or multiworker.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_string("hparams_from", None, "best.json from experiments.tune: its hyperparameters override flags.")


def experiment_from_flags() -> tuple[pipeline.Experiment, list[int], list[str]]:
    """Resolve preset + flags (+ tuned hyperparameters) into an Experiment."""
    if FLAGS.preset not in PRESETS:
        raise UserError(f"Unknown preset {FLAGS.preset!r}; valid presets: {', '.join(PRESETS)}.")
    preset = PRESETS[FLAGS.preset]
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    tuned = {}
    if FLAGS.hparams_from:
        path = Path(FLAGS.hparams_from)
        if not path.exists():
            raise UserError(f"--hparams_from {path} does not exist.")
        tuned = json.loads(path.read_text())["hyperparameters"]
    for name in FLAGS.methods:
        if name not in pipeline.METHODS:
            raise UserError(f"Unknown method {name!r}; valid methods: {', '.join(pipeline.METHODS)}.")
    seeds = pick(FLAGS.seeds, preset.seeds)
    if seeds <= 0:
        raise UserError(f"--seeds must be > 0, got {seeds}.")
    if FLAGS.width_multiplier is not None and FLAGS.width_multiplier <= 0:
        raise UserError(f"--width_multiplier must be > 0, got {FLAGS.width_multiplier}.")
    recipe = Recipe(epochs=pick(FLAGS.epochs, preset.epochs), batch_size=pick(FLAGS.batch_size, preset.batch_size),
                    learning_rate=FLAGS.learning_rate)
    exp = pipeline.Experiment(
        dataset=FLAGS.dataset, net=FLAGS.net, recipe=recipe,
        width_multiplier=pick(FLAGS.width_multiplier, preset.width_multiplier), n=FLAGS.n,
        rho=tuned.get("rho", FLAGS.rho), alpha=tuned.get("alpha", FLAGS.alpha),
        temperature=tuned.get("temperature", FLAGS.temperature), pacemaker=FLAGS.pacemaker,
        phase3_init=FLAGS.phase3_init, teacher_per_seed=FLAGS.teacher_per_seed,
        train_examples=pick(FLAGS.train_examples, preset.train_examples),
        test_examples=pick(FLAGS.test_examples, preset.test_examples),
        validation_examples=FLAGS.validation_examples, jit_compile=FLAGS.jit_compile,
    )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", FLAGS.table):
        raise UserError(f"--table {FLAGS.table!r} must be a plain file name (letters, digits, _ . -).")
    if exp.dataset not in data.DATASETS:
        raise UserError(f"Unknown dataset {exp.dataset!r}; valid datasets: {', '.join(data.DATASETS)}.")
    return exp, list(range(seeds)), FLAGS.methods


def describe(exp: pipeline.Experiment) -> dict:
    flat = dataclasses.asdict(exp)
    flat.update(flat.pop("recipe"))
    flat["command"] = " ".join(["python -m pmkd_tf.experiments.run", *map(shlex.quote, sys.argv[1:])])
    return flat


def run(exp: pipeline.Experiment, seeds: list[int], methods: list[str], data_dir: str | None,
        out_dir: str, strategy_name: str, table: str = report.DEFAULT_TABLE) -> Path:
    """Train every (seed, method), recording each result in `table` as soon as it exists."""
    strategy = pipeline.make_strategy(strategy_name)
    splits = data.load(exp.dataset, data_dir, exp.train_examples, exp.test_examples, exp.validation_examples)
    trainer = pipeline.Trainer(exp, splits, pipeline.worker_out_dir(out_dir, strategy), strategy)
    results_path = trainer.root / f"{table}.json"
    with pipeline.out_dir_lock(trainer.root):
        report.check_same_table(results_path, describe(exp))
        for seed in seeds:
            for method in methods:
                if method == "teacher" and not exp.teacher_per_seed and seed != seeds[0]:
                    continue
                result = trainer.run(method, seed)
                results = report.record(results_path, result, describe(exp))
                results_path.with_suffix(".md").write_text(report.markdown(results))
                if result["status"] == "ok":
                    logging.info("%s seed %d: top-1 %.2f%% (%d phases, %d epochs, %.0f s)", method, seed,
                                 100 * result["test_accuracy"], len(result["phases"]), result["total_epochs"],
                                 result["total_wall_seconds"])
                else:
                    logging.error("%s seed %d FAILED: %s", method, seed, result["error"])
    return results_path.with_suffix(".md")


def main(argv: list[str]) -> None:
    del argv
    try:
        exp, seeds, methods = experiment_from_flags()
        data_dir = FLAGS.data_dir or data.default_data_dir()
        table = run(exp, seeds, methods, data_dir, FLAGS.out_dir, FLAGS.strategy, FLAGS.table)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("Interrupted: finished epochs are saved; re-run the same command to resume.", file=sys.stderr)
        sys.exit(130)
    print(table.read_text())


if __name__ == "__main__":
    app.run(main)
