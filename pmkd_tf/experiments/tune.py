"""Search PMKD's loss weights with keras-tuner, scored on a validation split held out from train.

    python -m pmkd_tf.experiments.tune --net=resnet18 --method=pmkd --tuner=bayesian --max_trials=20 \\
        --preset=cpu --validation_examples=5000 --data_dir=../shared/data

Every trial trains the method anew with its sampled weights for
`--trial_epochs` epochs per phase (the CE teacher is trained once and shared)
and reports the final student's validation top-1. Results go to
`<out_dir>/<dataset>/<net>/tune/<project>/`: keras-tuner's project (re-running
the same command continues the search) and `best.json`, which
`experiments.run --hparams_from=<best.json>` accepts. keras-tuner's chief/worker
mode runs trials in several processes: see docs/tuning.md.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from pmkd_tf import data, models, pipeline, tuning
from pmkd_tf.errors import UserError
from pmkd_tf.recipe import PRESETS, Recipe

FLAGS = flags.FLAGS
flags.DEFINE_string("net", "resnet18", f"Network: {', '.join(models.NETS)} or any wrn_D_K.")
flags.DEFINE_string("dataset", "cifar10", f"Dataset: {', '.join(data.DATASETS)}.")
flags.DEFINE_string("data_dir", None, f"Image-folder root (<data_dir>/<dataset>/{{train,test}}/<class>/*); "
                    f"default ${data.ENV_DATA_DIR}, else tensorflow-datasets.")
flags.DEFINE_string("method", "pmkd", f"Method whose weights are tuned: {', '.join(pipeline.METHODS)}.")
flags.DEFINE_string("tuner", "bayesian", f"keras-tuner oracle: {', '.join(tuning.TUNERS)}.")
flags.DEFINE_integer("max_trials", 10, "Trials in the search (raise it and re-run to extend a search).")
flags.DEFINE_list("tune", ["rho"], f"Loss weights to search: any of {', '.join(tuning.TUNABLE)}.")
for _name, _range in tuning.DEFAULT_RANGES.items():
    flags.DEFINE_list(f"{_name}_range", [str(_range.low), str(_range.high)],
                      f"low,high of {_name} ({'log-uniform' if _range.log else 'uniform'}).")
flags.DEFINE_float("rho", 1.0, "rho when it is not tuned.")
flags.DEFINE_float("alpha", 0.9, "alpha when it is not tuned.")
flags.DEFINE_float("temperature", 4.0, "KD temperature tau when it is not tuned.")
flags.DEFINE_string("preset", "cpu", f"Scale: {', '.join(PRESETS)} (width, epochs, batch, subsets); "
                    "explicit flags override it.")
flags.DEFINE_integer("trial_epochs", None, "Epochs of every phase a trial trains (hyperband: the largest budget); "
                     "default the preset's epochs.")
flags.DEFINE_integer("seeds", 1, "Seeds per trial (0..seeds-1); the objective is their mean.")
flags.DEFINE_integer("batch_size", None, "Batch size.")
flags.DEFINE_float("learning_rate", 0.1, "Initial SGD learning rate.")
flags.DEFINE_float("width_multiplier", None, "Channel multiplier of every net.")
flags.DEFINE_integer("n", 3, "N of the NxN / 1xN / Nx1 filters.")
flags.DEFINE_string("pacemaker", "ensemble", "Pacemaker: ensemble, column or row.")
flags.DEFINE_string("phase3_init", "student", "Phase 3 starts from the phase-2 student or pacemaker_row.")
flags.DEFINE_integer("train_examples", None, "Subsample the training set (seeded).")
flags.DEFINE_integer("test_examples", None, "Subsample the test set (only recorded in phase results, never tuned on).")
flags.DEFINE_integer("validation_examples", 5000, "Training images held out as the validation split scored.")
flags.DEFINE_integer("search_seed", 1, "Seed of the oracle's sampling.")
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor.")
flags.DEFINE_string("out_dir", "runs", "Where phases go (shared with experiments.run) and the tuner project.")
flags.DEFINE_string("project_name", None, "Tuner project folder name; default <method>-<tuner>-<settings hash>.")
flags.DEFINE_bool("overwrite", False, "Start the search over (trained phases are still reused).")


def _range(name: str) -> tuning.Range:
    raw = getattr(FLAGS, f"{name}_range")
    try:
        low, high = (float(v) for v in raw)
    except ValueError:
        raise UserError(f"--{name}_range must be two numbers low,high, got {','.join(raw)}.") from None
    return tuning.Range(low, high, tuning.DEFAULT_RANGES[name].log)


def _pick(flag, default):
    """An explicit flag wins over the preset's default."""
    return default if flag is None else flag


def search_from_flags() -> tuning.Search:
    """Resolve preset + flags into a Search (validated)."""
    if FLAGS.preset not in PRESETS:
        raise UserError(f"Unknown preset {FLAGS.preset!r}; valid presets: {', '.join(PRESETS)}.")
    if FLAGS.dataset not in data.DATASETS:
        raise UserError(f"Unknown dataset {FLAGS.dataset!r}; valid datasets: {', '.join(data.DATASETS)}.")
    if FLAGS.width_multiplier is not None and FLAGS.width_multiplier <= 0:
        raise UserError(f"--width_multiplier must be > 0, got {FLAGS.width_multiplier}.")
    preset = PRESETS[FLAGS.preset]
    recipe = Recipe(epochs=_pick(FLAGS.trial_epochs, preset.epochs),
                    batch_size=_pick(FLAGS.batch_size, preset.batch_size), learning_rate=FLAGS.learning_rate)
    exp = pipeline.Experiment(
        dataset=FLAGS.dataset, net=FLAGS.net, recipe=recipe,
        width_multiplier=_pick(FLAGS.width_multiplier, preset.width_multiplier), n=FLAGS.n,
        rho=FLAGS.rho, alpha=FLAGS.alpha, temperature=FLAGS.temperature, pacemaker=FLAGS.pacemaker,
        phase3_init=FLAGS.phase3_init, train_examples=_pick(FLAGS.train_examples, preset.train_examples),
        test_examples=_pick(FLAGS.test_examples, preset.test_examples),
        validation_examples=FLAGS.validation_examples,
    )
    return tuning.Search(
        exp=exp, method=FLAGS.method, tune=tuple(FLAGS.tune),
        ranges={name: _range(name) for name in tuning.TUNABLE}, tuner=FLAGS.tuner, max_trials=FLAGS.max_trials,
        seeds=FLAGS.seeds, search_seed=FLAGS.search_seed, hyperband_factor=FLAGS.hyperband_factor,
    )


def main(argv: list[str]) -> None:
    del argv
    try:
        search = search_from_flags()
        best = tuning.tune(search, FLAGS.out_dir, FLAGS.data_dir or data.default_data_dir(), FLAGS.project_name,
                           FLAGS.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("Interrupted: finished trials and epochs are saved; re-run the same command to resume.",
              file=sys.stderr)
        sys.exit(130)
    if best is None:
        print("Worker done: the chief writes best.json.")
        return
    result = json.loads(best.read_text())
    print(f"Best {result['objective']} {result['score']:.4f} with {json.dumps(result['hyperparameters'])}")
    print(f"Wrote {best}; train with it:\n  {result['run_command']}")


if __name__ == "__main__":
    app.run(main)
