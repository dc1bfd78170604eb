"""Methods and phases: what gets trained, from what, in which order.

A *phase* is one training of one student (a plain model or a pacemaker)
against an optional teacher, with one loss family. A *method* (a row of the
paper's tables) is a short chain of phases:

    teacher     NxN net, cross-entropy
    baseline    1xN student, cross-entropy
    kd|fitnet|kd_fitnet        teacher -> student
    pm_kd|pm_fitnet|pmkd       phase 1 teacher -> pacemaker,
                               phase 2 pacemaker -> student,
                               phase 3 teacher -> student (from phase 2)

Every phase lives in its own folder named by a hash of everything that
determines it (including the phases it learns from), so an artefact is
reused exactly when its config matches: the teacher by every method and
seed, a pacemaker by every method of its loss family and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf
from absl import logging

from pmkd_tf import data, models
from pmkd_tf.distiller import Distiller
from pmkd_tf.errors import UserError
from pmkd_tf.losses import LossWeights
from pmkd_tf.recipe import Recipe


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the paper's tables."""

    family: str  # loss family: "ce", "kd", "fitnet" or "kd_fitnet"
    pacemaker: bool = False
    epoch_factor: int = 1  # compute-matched controls train the student longer


METHODS = {
    "teacher": Method("ce"),
    "baseline": Method("ce"),
    "kd": Method("kd"),
    "fitnet": Method("fitnet"),
    "kd_fitnet": Method("kd_fitnet"),
    "pm_kd": Method("kd", pacemaker=True),
    "pm_fitnet": Method("fitnet", pacemaker=True),
    "pmkd": Method("kd_fitnet", pacemaker=True),
    "baseline_long": Method("ce", epoch_factor=2),
    "kd_fitnet_long": Method("kd_fitnet", epoch_factor=2),
}
PAPER_METHODS = ("teacher", "baseline", "kd", "fitnet", "kd_fitnet", "pm_kd", "pm_fitnet", "pmkd")
PHASE3_INITS = ("student", "pacemaker_row")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything that defines one table: data, net, recipe and loss weights."""

    dataset: str
    net: str
    recipe: Recipe = Recipe()
    width_multiplier: float = 1.0
    n: int = 3
    rho: float = 1.0
    alpha: float = 0.9
    temperature: float = 4.0
    pacemaker: str = "ensemble"
    phase3_init: str = "student"
    teacher_per_seed: bool = False
    train_examples: int | None = None
    test_examples: int | None = None
    validation_examples: int = 0
    jit_compile: bool = False

    def __post_init__(self) -> None:
        models.validate_net(self.net)
        if self.pacemaker not in models.PACEMAKERS:
            raise UserError(f"Unknown pacemaker {self.pacemaker!r}; valid: {', '.join(models.PACEMAKERS)}.")
        if self.phase3_init not in PHASE3_INITS:
            raise UserError(f"Unknown phase3_init {self.phase3_init!r}; valid: {', '.join(PHASE3_INITS)}.")
        models.NetConfig(self.net, width_multiplier=self.width_multiplier, n=self.n)
        self.weights("kd_fitnet")

    def weights(self, family: str) -> LossWeights:
        """The loss weights of a family: KD has rho=0, FitNet alpha=0."""
        rho = 0.0 if family in ("ce", "kd") else self.rho
        alpha = 0.0 if family in ("ce", "fitnet") else self.alpha
        return LossWeights(rho=rho, alpha=alpha, temperature=self.temperature)

    def net_config(self, shape: str, num_classes: int) -> models.NetConfig:
        return models.NetConfig(self.net, shape, num_classes, self.width_multiplier, self.n)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training: `student` ("NxN", "1xN" or "pacemaker") from `teacher`."""

    name: str
    student: str
    family: str
    seed: int
    epochs: int
    teacher: Phase | None = None
    init: Phase | None = None  # start from this phase's trained weights
    init_member: str | None = None  # ... or from this member of its pacemaker

    def config(self, exp: Experiment) -> dict:
        """Everything the phase's result depends on, its inputs' configs included."""
        weights = exp.weights(self.family) if self.teacher else None
        return {
            "phase": self.name, "student": self.student, "family": self.family, "seed": self.seed,
            "epochs": self.epochs, "dataset": exp.dataset, "net": exp.net,
            "width_multiplier": exp.width_multiplier, "n": exp.n,
            "pacemaker": exp.pacemaker if self.student == "pacemaker" else None,
            "train_examples": exp.train_examples, "validation_examples": exp.validation_examples,
            "recipe": dataclasses.asdict(exp.recipe),
            "weights": dataclasses.asdict(weights) if weights else None,
            "teacher": self.teacher.config(exp) if self.teacher else None,
            "init": self.init.config(exp) if self.init else None, "init_member": self.init_member,
        }

    def folder(self, exp: Experiment) -> str:
        digest = hashlib.sha1(json.dumps(self.config(exp), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"


def plan(exp: Experiment, method: str, seed: int) -> Phase:
    """The final phase of `method` for `seed`; its teacher/init links give the rest."""
    if method not in METHODS:
        raise UserError(f"Unknown method {method!r}; valid methods: {', '.join(METHODS)}.")
    spec = METHODS[method]
    epochs = exp.recipe.epochs
    teacher_seed = seed if exp.teacher_per_seed else 0
    teacher = Phase(f"teacher-seed{teacher_seed}", "NxN", "ce", teacher_seed, epochs)
    if method == "teacher":
        return teacher
    if spec.family == "ce":
        return Phase(f"{method}-seed{seed}", "1xN", "ce", seed, epochs * spec.epoch_factor)
    if not spec.pacemaker:
        return Phase(f"{method}-seed{seed}", "1xN", spec.family, seed, epochs * spec.epoch_factor, teacher)
    pacemaker = Phase(f"pacemaker-{spec.family}-{exp.pacemaker}-seed{seed}", "pacemaker", spec.family, seed,
                      epochs, teacher)
    phase2 = Phase(f"{method}-seed{seed}-phase2", "1xN", spec.family, seed, epochs, pacemaker)
    if exp.phase3_init == "student":
        return Phase(f"{method}-seed{seed}", "1xN", spec.family, seed, epochs, teacher, init=phase2)
    # Fig. 2 reading: phase 3 starts from the pacemaker's 1xN member, so the
    # phase 2 student would be thrown away and is not trained.
    return Phase(f"{method}-seed{seed}", "1xN", spec.family, seed, epochs, teacher, init=pacemaker,
                 init_member="1xN")


class TrainingDiverged(RuntimeError):
    """A phase's loss became NaN or infinite."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model_atomically(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default`, `mirrored` (all local devices) or `multiworker` (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"Unknown strategy {name!r}; valid: default, mirrored, multiworker.")


class EpochCheckpoint(keras.callbacks.Callback):
    """Atomic end-of-epoch checkpoints that keep history.csv consistent.

    Each epoch end writes the weights (student and optimizer state) to a new
    file, then atomically replaces `state.json`, the single commit point. On
    resume, training restarts after the committed epoch and history.csv is
    cut back to the committed rows, so a kill at any instant neither redoes
    nor loses an epoch. Keras' BackupAndRestore writes its files in place,
    where a kill mid-write can leave them inconsistent.
    """

    def __init__(self, folder: Path, history: Path) -> None:
        super().__init__()
        self.folder = folder
        self.history = history

    @property
    def state(self) -> Path:
        return self.folder / "state.json"

    def on_train_begin(self, logs=None):
        if not self.state.exists():
            return
        state = json.loads(self.state.read_text())
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.folder / state["weights"])
        # The same hook Keras' own BackupAndRestore uses to resume mid-fit.
        self.model._initial_epoch = state["epoch"]
        if self.history.exists():
            # Truncate in place: CSVLogger already holds the file open for appending.
            rows = self.history.read_bytes().splitlines(keepends=True)
            os.truncate(self.history, sum(len(row) for row in rows[: 1 + state["epoch"]]))

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch{epoch + 1}.weights.h5"
        tmp = self.folder / f"tmp-{name}"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.folder / name)
        old = json.loads(self.state.read_text())["weights"] if self.state.exists() else None
        _atomic_write(self.state, json.dumps({"epoch": epoch + 1, "weights": name}))
        if old and old != name:
            (self.folder / old).unlink(missing_ok=True)


def worker_out_dir(out_dir: str | Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: `out_dir` on the chief, a private folder on other workers.

    Every multi-worker process runs the same training in lockstep; only the
    chief's files are the results, the others write beside them so no two
    processes ever write one file.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return Path(out_dir)
    cluster = resolver.cluster_spec().as_dict()
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in cluster)
    return Path(out_dir) if chief else Path(out_dir) / f".{resolver.task_type}-{resolver.task_id}"


class _NanGuard(keras.callbacks.Callback):
    """Stops a phase at the first non-finite loss and remembers where."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.failed_epoch: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_epoch = self.epoch + 1
            self.model.stop_training = True


class Trainer:
    """Runs phases on one dataset, reusing every finished artefact on disk."""

    def __init__(self, exp: Experiment, splits: data.Splits, out_dir: str | Path,
                 strategy: tf.distribute.Strategy | None = None, verbose: int | str = "auto"):
        self.exp = exp
        self.splits = splits
        self.root = Path(out_dir) / exp.dataset / exp.net
        self.strategy = strategy or tf.distribute.get_strategy()
        self.verbose = verbose
        self._done: dict[str, dict] = {}

    def folder(self, phase: Phase) -> Path:
        return self.root / phase.folder(self.exp)

    def _build(self, phase: Phase) -> keras.Model:
        shape = "1xN" if phase.student == "pacemaker" else phase.student
        config = self.exp.net_config(shape, self.splits.num_classes)
        keras.utils.set_random_seed(phase.seed)
        model = models.build_pacemaker(config, self.exp.pacemaker) if phase.student == "pacemaker" \
            else models.build(config)
        if phase.init is not None:
            path = self.folder(phase.init) / "model.keras"
            source = keras.saving.load_model(path)
            if phase.init_member:
                source = models.pacemaker_member(source, phase.init_member)
            if [w.shape for w in source.weights] != [w.shape for w in model.weights]:
                raise UserError(f"{path} holds {source.name}, not the {model.name} that {phase.name} starts from; "
                                f"delete {path.parent} to retrain it.")
            model.set_weights(source.get_weights())
        return model

    def result(self, phase: Phase) -> dict:
        """Train `phase` (and the phases it needs) unless done; return its result."""
        folder = self.folder(phase)
        if folder.name in self._done:
            return self._done[folder.name]
        for needed in (phase.teacher, phase.init):
            if needed is not None:
                self.result(needed)
        done = folder / "result.json"
        if not done.exists():
            with _phase_lock(folder):
                if not done.exists():
                    self._train(phase, folder)
        result = json.loads(done.read_text())
        if result.get("status") == "failed":
            raise TrainingDiverged(result["error"])
        self._done[folder.name] = result
        return result

    def _pipelines(self, batch_size: int, seed: int):
        s = self.splits
        train = data.train_pipeline(s.train_images, s.train_labels, batch_size, s.mean, s.std, s.augment, seed)
        test = data.eval_pipeline(s.test_images, s.test_labels, batch_size, s.mean, s.std)
        val = data.eval_pipeline(s.val_images, s.val_labels, batch_size, s.mean, s.std) if len(s.val_labels) \
            else None
        return train, val, test

    def _train(self, phase: Phase, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = phase.config(self.exp)
        _atomic_write(folder / "config.json", json.dumps(config, indent=2, sort_keys=True))
        recipe = self.exp.recipe
        # Seed before the input pipeline exists: its augmentation ops take
        # their seeds from the global one when they are created.
        keras.utils.set_random_seed(phase.seed)
        train, val, test = self._pipelines(recipe.batch_size, phase.seed)
        steps = math.ceil(len(self.splits.train_labels) / recipe.batch_size)
        with self.strategy.scope():
            teacher = keras.saving.load_model(self.folder(phase.teacher) / "model.keras") if phase.teacher else None
            student = self._build(phase)
            distiller = Distiller(student, teacher, self.exp.weights(phase.family))
            distiller.compile(optimizer=recipe.optimizer(steps, phase.epochs), jit_compile=self.exp.jit_compile)
        checkpoint = EpochCheckpoint(folder / "checkpoint", folder / "history.csv")
        if not checkpoint.state.exists():
            # A fresh start: rows left by an unfinished run without a
            # checkpoint (e.g. copied from elsewhere) must not be appended to.
            (folder / "history.csv").unlink(missing_ok=True)
        guard = _NanGuard()
        # Order matters: the history row is written before the checkpoint
        # that commits its epoch.
        callbacks = [
            guard,
            keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
            checkpoint,
            keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False),
        ]
        logging.info("Phase %s: %d epochs -> %s", phase.name, phase.epochs, folder)
        start = time.time()
        distiller.fit(train, epochs=phase.epochs, validation_data=val, callbacks=callbacks, verbose=self.verbose,
                      shuffle=False)
        wall = time.time() - start
        if guard.failed_epoch is not None:
            error = f"{phase.name}: loss became NaN/inf in epoch {guard.failed_epoch}; lower the learning rate or rho."
            _atomic_write(folder / "result.json", json.dumps({"status": "failed", "error": error, "phase": phase.name,
                                                         "epoch": guard.failed_epoch}, indent=2))
            raise TrainingDiverged(error)
        save_model_atomically(student, folder / "model.keras")
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
        result = {
            "status": "ok", "phase": phase.name,
            "test_accuracy": float(distiller.evaluate(test, verbose=0, return_dict=True)["accuracy"]),
            "epochs": phase.epochs, "wall_seconds": round(wall, 1), "folder": folder.name,
        }
        if val is not None:
            result["val_accuracy"] = float(distiller.evaluate(val, verbose=0, return_dict=True)["accuracy"])
        _atomic_write(folder / "result.json", json.dumps(result, indent=2))

    def run(self, method: str, seed: int) -> dict:
        """Train `method` for `seed` (reusing what exists); its result with full cost."""
        final = plan(self.exp, method, seed)
        try:
            result = dict(self.result(final))
        except TrainingDiverged as error:
            return {"method": method, "seed": seed, "status": "failed", "error": str(error)}
        phases = list(chain(final))
        results = [self.result(p) for p in phases]
        result.update(
            method=method, seed=seed,
            phases=[r["folder"] for r in results],
            total_epochs=sum(r["epochs"] for r in results),
            total_wall_seconds=round(sum(r["wall_seconds"] for r in results), 1),
        )
        return result


@contextlib.contextmanager
def _phase_lock(folder: Path) -> Iterator[None]:
    """Let one process train a phase while others needing it wait, then reuse it.

    Workers of a distributed search share an out_dir and all need the same
    teacher first. The `flock` dies with its process, so a killed trainer
    never leaves a stale lock; the next one resumes from its checkpoint.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("Waiting for another process to finish %s", folder.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def chain(phase: Phase) -> Iterator[Phase]:
    """A phase and every phase it depends on, each once, dependencies first."""
    seen: dict[str, Phase] = {}

    def visit(p: Phase) -> None:
        for q in (p.teacher, p.init):
            if q is not None:
                visit(q)
        seen.setdefault(p.name, p)

    visit(phase)
    return iter(seen.values())


@contextlib.contextmanager
def out_dir_lock(root: Path) -> Iterator[None]:
    """Refuse a second runner on the same output folder instead of corrupting it."""
    root.mkdir(parents=True, exist_ok=True)
    lock = root / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pid = lock.read_text().strip() or "?"
        if pid.isdigit() and not _alive(int(pid)):
            lock.unlink()
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        else:
            raise UserError(f"{root} is in use by another runner (pid {pid}); wait for it or use another "
                               f"--out_dir (delete {lock} if that process is gone).") from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
