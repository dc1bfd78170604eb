"""Search PMKD's loss weights with keras-tuner, scored on a validation split held out from train.

    python -m pmkd_tf.experiments.tune --net=resnet18 --method=pmkd --tuner=bayesian --max_trials=20 \\
        --preset=cpu --validation_examples=5000 --data_dir=../shared/data

Results go to `<out_dir>/<dataset>/<net>/tune/<project>/`: keras-tuner's
project (re-running the same command continues the search) and `best.json`,
which `experiments.run --hparams_from=<best.json>` accepts. How a trial
works: `pmkd_tf.tuning`; the chief/worker mode: docs/tuning.md.
"""

from __future__ import annotations

import functools
import json
import shlex

from absl import flags

from pmkd_tf import methods, tuning
from pmkd_tf.errors import UserError
from pmkd_tf.experiments import cli, experiment_flags

FLAGS = flags.FLAGS


def _parse_range(name: str, values: list[str]) -> tuning.Range:
    """The value of `--<name>_range`; a UserError unless it is two numbers."""
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise UserError(f"a range must be two numbers low,high, got {','.join(values)}.") from None
    return tuning.Range(low, high, tuning.DEFAULT_RANGES[name].log)


flags.DEFINE_enum("method", "pmkd", list(methods.METHODS), "Method whose weights are tuned.")
flags.DEFINE_enum("tuner", "bayesian", list(tuning.TUNERS), "keras-tuner oracle.")
flags.DEFINE_integer("max_trials", 10, "Trials in the search (raise it and re-run to extend a search).", lower_bound=1)
flags.DEFINE_list("tune", ["rho"], f"Hyperparameters to search: any of {', '.join(tuning.TUNABLE)}.")
for _name, _range in tuning.DEFAULT_RANGES.items():
    flags.DEFINE_list(f"{_name}_range", [str(_range.low), str(_range.high)],
                      f"low,high of {_name} ({'log-uniform' if _range.log else 'uniform'}).")
    cli.check(f"{_name}_range", functools.partial(_parse_range, _name))
flags.DEFINE_integer("trial_epochs", None, "Epochs of every phase a trial trains (hyperband: the largest budget); "
                     "default the preset's epochs.", lower_bound=1)
flags.DEFINE_integer("seeds", 1, "Seeds per trial (0..seeds-1); the objective is their mean.", lower_bound=1)
flags.DEFINE_integer("search_seed", 1, "Seed of the oracle's sampling.")
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor.")
flags.DEFINE_integer("grid_points", 3, "grid: values per tuned hyperparameter, evenly spaced on its range's scale "
                     "(log or linear), both ends included; e.g. --rho_range=0.1,10 gives 0.1, 1 and 10.")
flags.DEFINE_string("project_name", None, "Tuner project folder name; default <method>-<tuner>-<settings hash>.")
flags.DEFINE_bool("overwrite", False, "Start the search over (trained phases are still reused).")
# The search scores a validation split, so it needs one by default.
FLAGS.set_default("validation_examples", 5000)


def main() -> None:
    ranges = {name: _parse_range(name, FLAGS[f"{name}_range"].value) for name in tuning.TUNABLE}
    search = tuning.Search(exp=experiment_flags.experiment(FLAGS.trial_epochs), method=FLAGS.method,
                           tuned=tuple(FLAGS.tune), ranges=ranges, tuner=FLAGS.tuner, max_trials=FLAGS.max_trials,
                           seeds=FLAGS.seeds, search_seed=FLAGS.search_seed, hyperband_factor=FLAGS.hyperband_factor,
                           grid_points=FLAGS.grid_points)
    best = tuning.run_search(search, FLAGS.out_dir, experiment_flags.data_dir(), FLAGS.project_name, FLAGS.overwrite)
    if best is None:
        print("Worker done: the chief writes best.json.")
        return
    result = json.loads(best.read_text())
    print(f"Best {result['objective']} {result['score']:.4f} with {json.dumps(result['hyperparameters'])}")
    # best.json holds the whole experiment: only where the data and the results live need repeating.
    places = [f"--{name}={shlex.quote(str(FLAGS[name].value))}" for name in ("data_dir", "out_dir")
              if FLAGS[name].present]
    print(f"Wrote {best}; train with it:\n  python -m pmkd_tf.experiments.run --hparams_from={shlex.quote(str(best))} "
          f"--methods={result['method']} {' '.join(places)}".rstrip())


if __name__ == "__main__":
    cli.main(main)
