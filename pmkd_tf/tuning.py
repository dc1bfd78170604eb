"""Keras Tuner search of the loss terms' hyperparameters (rho by default) on a held-out validation split.

A trial is a whole method pipeline (for `pmkd`: pacemaker, phase 2, phase
3), not one `model.fit`, so `PipelineTuner` is a keras-tuner `BaseTuner`
whose `run_trial` trains the method and reports the final phase's top-1 on
the validation split held out from train; the test top-1 each phase records
(for `experiments.run` to reuse the phase) is never read by the search.

Phase folders are keyed by a hash of their config, so a phase the tuned
hyperparameters do not reach (always the cross-entropy teacher) is trained
once and shared by every trial. best.json records the best trial's whole
experiment, so `experiments.run --hparams_from=best.json` reuses its phases.

The rest is keras-tuner's: its project directory makes a search resumable,
and its chief/worker mode runs trials in several processes that share one
out_dir, where the pipeline's per-phase lock trains each shared phase once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import keras_tuner as kt
import numpy as np
from absl import logging
from keras_tuner.engine.base_tuner import BaseTuner

from pmkd_tf import data, files, methods, pipeline, terms
from pmkd_tf.errors import UserError
from pmkd_tf.terms import Range

TUNERS = ("bayesian", "random", "hyperband", "grid")
# Every hyperparameter a term lets the tuner search, and where by default.
DEFAULT_RANGES: Mapping[str, Range] = {name: h.search for name, h in terms.HYPERPARAMETERS.items() if h.search}
TUNABLE = tuple(DEFAULT_RANGES)
OBJECTIVE = "val_accuracy"
# keras-tuner's own environment variables for its chief/worker mode.
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"


def distributed_role() -> str:
    """"standalone", or keras-tuner's "chief" (runs the oracle) / "worker" (runs trials), from the env."""
    if ENV_ORACLE_IP not in os.environ:
        return "standalone"
    missing = [name for name in (ENV_ORACLE_PORT, ENV_TUNER_ID) if not os.environ.get(name)]
    if missing:
        raise UserError(f"{ENV_ORACLE_IP} is set but {' and '.join(missing)} not; set all three, e.g. "
                        f"{ENV_TUNER_ID}=chief|tuner0|tuner1 and {ENV_ORACLE_PORT}=8000 (see docs/tuning.md).")
    if not os.environ[ENV_ORACLE_PORT].isdigit():
        raise UserError(f"{ENV_ORACLE_PORT} must be a port number, got {os.environ[ENV_ORACLE_PORT]!r}.")
    # keras-tuner's own test: any tuner id containing "chief" runs the oracle.
    return "chief" if "chief" in os.environ[ENV_TUNER_ID] else "worker"


@dataclasses.dataclass(frozen=True)
class Search:
    """Everything that defines one search.

    `exp` is the base experiment: `exp.recipe.epochs` is a trial's budget
    (epochs of every phase it trains, `--trial_epochs`; hyperband's largest),
    and its hyperparameters are the values of those that are not tuned.
    """

    exp: pipeline.Experiment
    method: str = "pmkd"
    tuned: tuple[str, ...] = ("rho",)  # the hyperparameters searched (`--tune`)
    ranges: Mapping[str, Range] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RANGES))
    tuner: str = "bayesian"
    max_trials: int = 10
    seeds: int = 1
    search_seed: int = 1
    hyperband_factor: int = 3
    grid_points: int = 3  # grid: values per tuned hyperparameter, evenly spaced on its scale, both ends included

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", {**DEFAULT_RANGES, **self.ranges})
        useful = methods.get(self.method).tunable
        if self.tuner not in TUNERS:
            raise UserError(f"Unknown tuner {self.tuner!r}; valid: {', '.join(TUNERS)}.")
        if not self.tuned or len(set(self.tuned)) != len(self.tuned):
            raise UserError(f"--tune must name each of {', '.join(TUNABLE)} at most once, got {list(self.tuned)}.")
        if not useful:
            raise UserError(f"{self.method} trains with cross-entropy only: it has no loss weight to tune.")
        for name in self.tuned:
            if name not in TUNABLE:
                raise UserError(f"Cannot tune {name!r}; tunable: {', '.join(TUNABLE)}.")
            if name not in useful:
                raise UserError(f"{name} has no effect on {self.method}'s loss; tune one of: {', '.join(useful)}.")
            bounds = self.ranges[name]
            if not bounds.low < bounds.high:
                raise UserError(f"--{name}_range must be low,high with low < high, got {bounds.low},{bounds.high}.")
            if bounds.log and bounds.low <= 0:
                raise UserError(f"--{name}_range is sampled log-uniformly, so its low end must be > 0.")
            terms.validate({name: bounds.low})
            terms.validate({name: bounds.high})
        if self.exp.validation_examples <= 0:
            raise UserError("The objective is top-1 on a validation split held out from train: "
                            "set --validation_examples > 0.")
        for flag, value in (("max_trials", self.max_trials), ("seeds", self.seeds)):
            if value <= 0:
                raise UserError(f"--{flag} must be > 0, got {value}.")
        if self.tuner == "grid" and self.grid_points < 2:
            raise UserError(f"--grid_points must be >= 2 (a grid includes both ends of each range), "
                            f"got {self.grid_points}.")
        if self.tuner == "hyperband" and not 2 <= self.hyperband_factor <= self.exp.recipe.epochs:
            raise UserError(f"hyperband needs 2 <= --hyperband_factor <= --trial_epochs, got {self.hyperband_factor} "
                            f"and {self.exp.recipe.epochs}; raise --trial_epochs or use --tuner=random|bayesian.")

    def experiment(self, values: Mapping[str, float], epochs: int | None = None) -> pipeline.Experiment:
        """The experiment of one trial: its loss weights and its epochs per phase."""
        tuned = {name: float(values[name]) for name in self.tuned}
        recipe = dataclasses.replace(self.exp.recipe, epochs=epochs or self.exp.recipe.epochs)
        return dataclasses.replace(self.exp, recipe=recipe, hyperparameters={**self.exp.hyperparameters, **tuned})

    def phases(self) -> tuple[list[str], list[str]]:
        """(phases every trial trains anew, phases trained once and shared), for seed 0.

        A phase is re-run by a trial exactly when its folder hash changes with
        the tuned weights, so this compares the plans at both ends of every range.
        """
        low = self.experiment({n: self.ranges[n].low for n in self.tuned})
        high = self.experiment({n: self.ranges[n].high for n in self.tuned})
        pairs = zip(pipeline.needed_phases(pipeline.final_phase(low, self.method, 0)),
                    pipeline.needed_phases(pipeline.final_phase(high, self.method, 0)), strict=True)
        changes = {a.name: a.folder(low, {}) != b.folder(high, {}) for a, b in pairs}
        return [n for n in changes if changes[n]], [n for n in changes if not changes[n]]

    def tunable(self) -> list[str]:
        """The hyperparameters the method's loss reads that the tuner can search, in `TUNABLE` order."""
        return [name for name in TUNABLE if name in methods.get(self.method).tunable]

    def hyperparameters(self) -> kt.HyperParameters:
        """The search space: tuned hyperparameters over their range, the method's others Fixed (trials record them)."""
        hp = kt.HyperParameters()
        for name in self.tunable():
            if name in self.tuned and self.tuner == "grid":
                hp.Choice(name, self.grid(name))
            elif name in self.tuned:
                bounds = self.ranges[name]
                hp.Float(name, bounds.low, bounds.high, sampling="log" if bounds.log else "linear")
            else:
                hp.Fixed(name, float(self.exp.hyperparameters[name]))
        return hp

    def grid(self, name: str) -> list[float]:
        """`--tuner=grid`'s values of `name`: `grid_points` evenly spaced on its range's scale, both ends included.

        Not keras-tuner's stepped Float, whose 5-point grid of 0.1..10 holds
        1.0000000000000002: rounded to 6 digits, a grid point is exactly the
        value a phase trained with it before (rho 1) and is found again.
        """
        bounds = self.ranges[name]
        spaced = np.geomspace if bounds.log else np.linspace
        return [float(f"{value:.6g}") for value in spaced(bounds.low, bounds.high, self.grid_points)]

    def oracle(self) -> kt.Oracle:
        common = {"objective": kt.Objective(OBJECTIVE, direction="max"), "hyperparameters": self.hyperparameters(),
                  "seed": self.search_seed, "allow_new_entries": False, "tune_new_entries": False}
        if self.tuner == "random":
            return kt.oracles.RandomSearchOracle(max_trials=self.max_trials, **common)
        if self.tuner == "grid":  # every combination of the grids, from each range's low end, until max_trials
            return kt.oracles.GridSearchOracle(max_trials=self.max_trials, **common)
        if self.tuner == "bayesian":
            # keras-tuner counts Fixed entries as dimensions; sample randomly 3x the tuned ones only.
            return kt.oracles.BayesianOptimizationOracle(max_trials=self.max_trials,
                                                         num_initial_points=3 * len(self.tuned), **common)
        # Brackets repeat until max_trials (hyperband_iterations=0 means no limit).
        oracle = kt.oracles.HyperbandOracle(max_epochs=self.exp.recipe.epochs, factor=self.hyperband_factor,
                                            hyperband_iterations=0, **common)
        oracle.max_trials = self.max_trials
        return oracle

    def fingerprint(self) -> dict:
        """Everything that decides trials and their scores (not max_trials: raising it continues a search)."""
        exp = self.exp.settings()
        for name in (*self.tuned, *pipeline.SPEED_ONLY):
            exp[name] = None
        return {
            "experiment": exp, "method": self.method, "tune": list(self.tuned),  # a renamed key renames every project
            "ranges": {name: dataclasses.asdict(self.ranges[name]) for name in self.tuned},
            "tuner": self.tuner, "seeds": self.seeds, "search_seed": self.search_seed,
            "hyperband_factor": self.hyperband_factor if self.tuner == "hyperband" else None,
            # Only a grid's: a key every search had would rename the projects searched before it existed.
            **({"grid_points": self.grid_points} if self.tuner == "grid" else {}),
        }

    def project_name(self) -> str:
        return f"{self.method}-{self.tuner}-{pipeline.digest(self.fingerprint())}"


class _FatalUserError(kt.errors.FatalError, UserError):
    """A user's mistake met inside a trial: keras-tuner stops the search, the CLI prints it."""


def project_path(search: Search, out_dir: str | Path, project_name: str | None = None) -> Path:
    """The tuner's project folder: `<out_dir>/<dataset>/<net>/tune/<project_name>`, next to the phases."""
    return Path(out_dir) / search.exp.dataset / search.exp.net / "tune" / (project_name or search.project_name())


class PipelineTuner(BaseTuner):
    """A keras-tuner `BaseTuner` (the one without `model.fit`) whose trial trains a whole method."""

    def __init__(self, search: Search, out_dir: str | Path, data_dir: str | None = None,
                 project_name: str | None = None, overwrite: bool = False, verbose: int | str = 2):
        self.spec = search
        role = distributed_role()
        if overwrite and role == "worker":
            raise UserError("Only the chief may --overwrite a distributed search; drop it on the workers.")
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir
        self.verbose = verbose
        self._splits: data.Splits | None = None
        project = project_path(search, out_dir, project_name)
        fingerprint = project / "search.json"
        if not overwrite and fingerprint.exists():
            stored, wanted = json.loads(fingerprint.read_text()), json.loads(json.dumps(search.fingerprint()))
            if stored != wanted:
                keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
                raise UserError(f"{project} holds a search with other settings ({', '.join(keys)} differ); "
                                f"use another --project_name, drop it for the default, or pass --overwrite.")
        started = not overwrite and (project / "oracle.json").exists()
        own_state = (project / f"{os.environ.get(ENV_TUNER_ID, 'tuner0')}.json").exists()
        super().__init__(oracle=search.oracle(), directory=str(project.parent), project_name=project.name,
                         overwrite=overwrite)
        if started and not own_state and role != "worker":
            # keras-tuner resumes only when this tuner id saved the project; a
            # search started standalone (tuner0) and resumed as the chief, or
            # the reverse, must continue too instead of overwriting its trials.
            self.oracle.reload()
        if not fingerprint.exists():
            files.atomic_write_json(fingerprint, search.fingerprint())

    def splits(self) -> data.Splits:
        """The data, loaded on first use (the chief never trains, so never loads it)."""
        if self._splits is None:
            self._splits = pipeline.load_splits(self.spec.exp, self.data_dir)
        return self._splits

    def run_trial(self, trial: kt.engine.trial.Trial) -> dict[str, float]:
        """Train the method with the trial's weights for every seed; mean validation top-1.

        A run whose loss became NaN/inf scores 0.0 (and `diverged` 1.0): the
        weights are bad for this objective, and a completed trial lets the
        oracle learn that, where a failed one would be ignored by it (and
        three in a row would stop the search).
        """
        values = trial.hyperparameters.values
        epochs = values.get("tuner/epochs")  # hyperband's budget for this trial; else --trial_epochs
        exp = self.spec.experiment(values, epochs)
        shown = ", ".join(f"{name}={values[name]:.4g}" for name in self.spec.tuned)
        logging.info("Trial %s on %s: %s %s, %d epochs per phase, seeds 0..%d", trial.trial_id, self.tuner_id,
                     self.spec.method, shown, exp.recipe.epochs, self.spec.seeds - 1)
        trainer = pipeline.Trainer(exp, self.splits(), self.out_dir, verbose=self.verbose)
        try:
            runs = [trainer.train_method(self.spec.method, seed) for seed in range(self.spec.seeds)]
        except UserError as error:
            # A mistake every trial would repeat: stop the search (keras-tuner
            # re-raises FatalError) rather than fail trial after trial.
            raise _FatalUserError(str(error)) from error
        record = {"epochs_per_phase": exp.recipe.epochs,
                  "hyperparameters": {n: values[n] for n in self.spec.tunable()},
                  "runs": [{k: run.get(k) for k in ("seed", "status", "val_accuracy", "phases", "total_epochs",
                                                    "total_wall_seconds", "error")} for run in runs]}
        files.atomic_write_json(Path(self.get_trial_dir(trial.trial_id)) / "pipeline.json", record)
        failed = [run for run in runs if run["status"] != "ok"]
        if failed:
            logging.warning("Trial %s diverged (scored 0): %s", trial.trial_id, failed[0]["error"])
            return {OBJECTIVE: 0.0, "diverged": 1.0}
        score = sum(run["val_accuracy"] for run in runs) / len(runs)
        logging.info("Trial %s: validation top-1 %.2f%%", trial.trial_id, 100 * score)
        return {OBJECTIVE: score, "diverged": 0.0}

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        # After every trial, so an interrupted search still leaves its best so far.
        self.write_best()

    def write_best(self) -> Path | None:
        """Write best.json: the best completed, non-diverged trial (keras-tuner's own ranking); its path or None."""
        # A diverged trial scores 0, so it is the best only when every trial diverged.
        trials = self.oracle.get_best_trials(1)
        if not trials or trials[0].status != "COMPLETED" or trials[0].metrics.get_last_value("diverged"):
            return None
        trial = trials[0]
        values = trial.hyperparameters.values
        epochs = values.get("tuner/epochs") or self.spec.exp.recipe.epochs
        best = {
            "hyperparameters": {name: float(values[name]) for name in self.spec.tunable()},
            "experiment": self.spec.experiment(values, epochs).flat(),
            "tuned": list(self.spec.tuned), "objective": OBJECTIVE, "score": float(trial.score),
            "trial_id": trial.trial_id, "method": self.spec.method, "tuner": self.spec.tuner,
            "seeds": self.spec.seeds, "trial_epochs": epochs, "project": self.project_dir,
        }
        detail = Path(self.get_trial_dir(trial.trial_id)) / "pipeline.json"
        if detail.exists():
            best["phases"] = {str(run["seed"]): run["phases"] for run in json.loads(detail.read_text())["runs"]}
        path = Path(self.project_dir) / "best.json"
        files.atomic_write_json(path, best)
        return path


def _check_port_free() -> None:
    """Fail with a clear message, before any work, when the chief's port is taken."""
    address = (os.environ[ENV_ORACLE_IP], int(os.environ[ENV_ORACLE_PORT]))
    with socket.socket() as probe:
        # SO_REUSEADDR (as gRPC) ignores a previous chief's TIME_WAIT; a live listener still fails.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(f"The chief cannot listen on {address[0]}:{address[1]} ({error.strerror}); "
                            f"pick another {ENV_ORACLE_PORT} for the chief and every worker.") from None


def run_search(search: Search, out_dir: str | Path, data_dir: str | None = None, project_name: str | None = None,
               overwrite: bool = False, verbose: int | str = 2) -> Path | None:
    """Run (or resume) a search; the path of best.json, or None on a worker (the chief writes it).

    Standalone, this process is oracle and trial runner at once. As the
    chief it only serves the oracle until every worker has been told to
    stop; as a worker it only runs the trials it is handed.
    """
    role = distributed_role()
    if role == "chief":
        _check_port_free()
    project = project_path(search, out_dir, project_name)
    # One oracle per project: a second standalone search or chief on it is
    # refused instead of interleaved. The lock sits beside the project, which
    # --overwrite deletes.
    with contextlib.ExitStack() as held:
        if role != "worker":
            held.enter_context(files.lock(project.parent / f".{project.name}.lock",
                                          busy=f"{project} is being searched by another process; wait for it, or join "
                                          f"it as a worker of a distributed search (see docs/tuning.md)."))
        tuner = PipelineTuner(search, out_dir, data_dir, project_name, overwrite, verbose)
        if role == "worker":
            state = f"joining the chief at {os.environ[ENV_ORACLE_IP]}:{os.environ[ENV_ORACLE_PORT]}"
        else:
            state = f"resuming, {len(tuner.oracle.trials)} trials on record" if tuner.oracle.trials else "new"
        logging.info("Search %s as %s (%s): %s", project, tuner.tuner_id, role, state)
        rerun, shared = search.phases()
        hyperband = search.tuner == "hyperband"
        logging.info("Each trial trains %s for %s%d epochs per phase x %d seed(s); trained once%s and shared: %s",
                     ", ".join(rerun), "up to " if hyperband else "", search.exp.recipe.epochs, search.seeds,
                     " per budget" if hyperband else "", ", ".join(shared) or "nothing")
        if role != "chief":
            tuner.splits()  # now, so a data mistake stops the search instead of failing every trial
        tuner.search()
        if role == "worker":
            return None
        best = tuner.write_best()
    if best is None:
        raise UserError(f"No trial of {project} finished without diverging; lower --learning_rate or the top of "
                        f"the ranges (each trial's error is in trial_*/pipeline.json).")
    return best
