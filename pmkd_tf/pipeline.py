"""The pipeline: which phases a method needs, and training them on disk, resumably.

A *phase* is one training of one model (the teacher, a pacemaker or a
student) by the `Distiller`, from an optional model it learns from. A
method (`methods.METHODS`) is a short chain of phases: `final_phase` gives
the last, `needed_phases` all of them.

Every phase lives in its own folder named by a hash of everything its result
depends on (its inputs' configs and the data it saw included), so an
artefact is reused exactly when its config matches: the teacher by every
method and seed, a pacemaker by every method of its loss family and seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import keras
import tensorflow as tf
from absl import logging

from pmkd_tf import data, files, methods, models, terms
from pmkd_tf.distiller import Distiller
from pmkd_tf.errors import UserError
from pmkd_tf.recipe import Recipe

PHASE3_INITS = ("student", "pacemaker_row")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# tf.distribute strategies by name: the default, all local devices, or the workers TF_CONFIG names.
STRATEGIES = {"default": tf.distribute.get_strategy, "mirrored": tf.distribute.MirroredStrategy,
              "multiworker": tf.distribute.MultiWorkerMirroredStrategy}
# Experiment settings that change a phase's speed, not its result.
SPEED_ONLY = ("jit_compile", "steps_per_execution")
# Settings added after phases and tables were committed (newer hyperparameters too), at the value that behaves as
# the code did before: there they stay out of a phase's identity and a table's settings, so both are still found.
ADDED_SETTINGS = {"downsampling": "stride", "teacher_width_multiplier": None, "bn_momentum": 0.99,
                  "lr_schedule": "step", **{name: h.default for name, h in terms.HYPERPARAMETERS.items()
                                            if not h.in_every_table}}


def _as_before(settings: dict) -> dict:
    """`settings` as recorded before the `ADDED_SETTINGS` existed: without each one at its old value."""
    return {key: value for key, value in settings.items() if key not in ADDED_SETTINGS or value != ADDED_SETTINGS[key]}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything that defines one table: data, net, recipe and every term's hyperparameters (defaults filled in).

    `teacher_width_multiplier` (None: the students') widens the NxN teacher
    alone; its feature taps then have more channels than the student's, which
    a feature term bridges with a regressor.
    """

    dataset: str
    net: str
    recipe: Recipe = Recipe()
    width_multiplier: float = 1.0
    n: int = 3
    hyperparameters: Mapping[str, terms.Value] = dataclasses.field(default_factory=dict)
    pacemaker_kind: str = "ensemble"
    phase3_init: str = "student"
    teacher_per_seed: bool = False
    train_examples: int | None = None
    test_examples: int | None = None
    validation_examples: int = 0
    image_size: tuple[int, int] | None = None  # None: the dataset's native size
    channels: int | None = None  # None: 1 if every training image is grayscale, else 3
    augment: str | None = None  # None: the paper's choice for a named dataset, else crop_flip
    test_fraction: float = 0.2  # of a folder without test/, held out per class
    precision: str = "float32"
    jit_compile: bool = False
    steps_per_execution: int = 1
    downsampling: str = "stride"
    teacher_width_multiplier: float | None = None
    bn_momentum: float = 0.99

    def __post_init__(self) -> None:
        models.validate_net(self.net)
        for name, value, valid in (("pacemaker_kind", self.pacemaker_kind, models.PACEMAKER_KINDS),
                                   ("phase3_init", self.phase3_init, PHASE3_INITS),
                                   ("precision", self.precision, PRECISIONS)):
            if value not in valid:
                raise UserError(f"Unknown {name} {value!r}; valid: {', '.join(valid)}.")
        if self.steps_per_execution < 1:
            raise UserError(f"steps_per_execution must be >= 1, got {self.steps_per_execution}.")
        if self.teacher_width_multiplier == self.width_multiplier:
            object.__setattr__(self, "teacher_width_multiplier", None)  # one meaning, so one identity
        for role in ("teacher", "student"):
            models.NetConfig(self.net, width_multiplier=self.width(role), n=self.n, downsampling=self.downsampling)
        defaults = {name: h.default for name, h in terms.HYPERPARAMETERS.items()}
        object.__setattr__(self, "hyperparameters", {**defaults, **terms.validate(self.hyperparameters)})

    def settings(self) -> dict:
        """The experiment as best.json and the tuner record it: its fields (the recipe nested) and each
        hyperparameter beside them, an added setting only where it changes something (`_as_before`)."""
        settings = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        settings["recipe"] = _as_before(dataclasses.asdict(settings["recipe"]))
        settings.update(settings.pop("hyperparameters"))
        return _as_before(settings)

    def flat(self) -> dict:
        """`settings` with the recipe's fields beside the others: how a table records its settings."""
        flat = self.settings()
        flat.update(flat.pop("recipe"))
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping) -> Experiment:
        """The experiment a `flat` (or `settings`) record describes (unknown keys, e.g. a table's command, ignored)."""
        flat = {**flat, **flat.get("recipe", {})}
        own = {key: flat[key] for key in cls.__dataclass_fields__ if key in flat}
        own.update(recipe=Recipe(**{key: flat[key] for key in Recipe.__dataclass_fields__ if key in flat}),
                   hyperparameters={name: flat[name] for name in terms.HYPERPARAMETERS if name in flat})
        if own.get("image_size") is not None:
            own["image_size"] = tuple(own["image_size"])
        return cls(**own)

    def width(self, role: str) -> float:
        """The width multiplier of a phase's model: the teacher's, else the students' (a pacemaker's too)."""
        return (self.teacher_width_multiplier or self.width_multiplier) if role == "teacher" else self.width_multiplier

    def net_config(self, role: str, num_classes: int, input_shape: tuple[int, int, int]) -> models.NetConfig:
        """The model of a phase of `role`: NxN for the teacher, else 1xN (a pacemaker adds its Nx1 member)."""
        return models.NetConfig(self.net, "NxN" if role == "teacher" else "1xN", num_classes, self.width(role),
                                self.n, input_shape=input_shape, downsampling=self.downsampling,
                                bn_momentum=self.bn_momentum)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training of a `role` ("teacher", "pacemaker" or "student") with `method`'s loss terms."""

    name: str
    role: str
    method: str
    seed: int
    epochs: int
    taught_by: Phase | None = None
    init: Phase | None = None  # start from this phase's trained weights
    init_member: str | None = None  # ... or from this member of its pacemaker

    @property
    def inputs(self) -> tuple[Phase, ...]:
        """The phases whose trained models this one needs: the one it learns from, the one it starts from."""
        return tuple(p for p in (self.taught_by, self.init) if p is not None)

    def config(self, exp: Experiment, data_identity: dict) -> dict:
        """Everything the phase's result depends on, its inputs' configs and its data included."""
        spec = methods.METHODS[self.method]
        config = {
            "phase": self.name, "role": self.role, "terms": list(spec.terms) if self.taught_by else [],
            "seed": self.seed, "epochs": self.epochs, "data": data_identity, "net": exp.net,
            "width_multiplier": exp.width(self.role), "n": exp.n,
            "pacemaker_kind": exp.pacemaker_kind if self.role == "pacemaker" else None,
            "train_examples": exp.train_examples, "test_examples": exp.test_examples,
            "validation_examples": exp.validation_examples, "precision": exp.precision,
            "recipe": _as_before(dataclasses.asdict(exp.recipe)),
            "weights": spec.values(exp.hyperparameters) if self.taught_by else None,
            "taught_by": self.taught_by.config(exp, data_identity) if self.taught_by else None,
            "init": self.init.config(exp, data_identity) if self.init else None, "init_member": self.init_member,
        }
        config.update(bn_momentum=exp.bn_momentum, label_smoothing=exp.hyperparameters["label_smoothing"])
        if self.role != "teacher":
            config["downsampling"] = exp.downsampling  # NxN models ignore it: one teacher serves every kind
        return _as_before(config)

    def folder(self, exp: Experiment, data_identity: dict) -> str:
        return f"{self.name}-{digest(self.config(exp, data_identity))}"


def digest(obj: object) -> str:
    """A short hash of a JSON-able object, the same for equal objects whatever their key order."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def final_phase(exp: Experiment, method: str, seed: int) -> Phase:
    """The final phase of `method` for `seed`; its taught_by/init links give the rest."""
    spec = methods.get(method)
    epochs = exp.recipe.epochs
    teacher_seed = seed if exp.teacher_per_seed else 0
    teacher = Phase(f"teacher-seed{teacher_seed}", "teacher", "teacher", teacher_seed, epochs)
    if spec.trains_teacher:
        return teacher
    name = f"{method}-seed{seed}"
    if not spec.via_pacemaker:
        return Phase(name, "student", method, seed, epochs * spec.epoch_factor, teacher if spec.terms else None)
    pacemaker = Phase(f"pacemaker-{spec.family}-{exp.pacemaker_kind}-seed{seed}", "pacemaker", method, seed, epochs,
                      teacher)
    if exp.phase3_init == "student":
        phase2 = Phase(f"{name}-phase2", "student", method, seed, epochs, pacemaker)
        return Phase(name, "student", method, seed, epochs, teacher, init=phase2)
    # Fig. 2 reading: phase 3 starts from the pacemaker's 1xN member, so the
    # phase 2 student would be thrown away and is not trained.
    return Phase(name, "student", method, seed, epochs, teacher, init=pacemaker, init_member="1xN")


def needed_phases(phase: Phase) -> Iterator[Phase]:
    """A phase and every phase it depends on, each once, dependencies first."""
    chain = [needed for p in phase.inputs for needed in needed_phases(p)] + [phase]
    return iter({p.name: p for p in chain}.values())  # each name once, where it first comes


def load_splits(exp: Experiment, data_dir: str | None) -> data.Splits:
    """The data an experiment trains and is measured on."""
    return data.load(exp.dataset, data_dir, exp.train_examples, exp.test_examples, exp.validation_examples,
                     image_size=exp.image_size, channels=exp.channels, augment=exp.augment,
                     test_fraction=exp.test_fraction)


class TrainingDiverged(RuntimeError):
    """A phase's loss became NaN or infinite."""


def worker_out_dir(out_dir: str | Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: `out_dir` on the chief, a private folder on other workers.

    Every multi-worker process runs the same training in lockstep; only the
    chief's files are the results, the others write beside them so no two
    processes ever write one file.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return Path(out_dir)
    chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())
    return Path(out_dir) if chief else Path(out_dir) / f".{resolver.task_type}-{resolver.task_id}"


class EpochCheckpoint(keras.callbacks.Callback):
    """Atomic end-of-epoch checkpoints that keep history.csv consistent.

    Each epoch end writes the weights (student and optimizer state) to a new
    file, then atomically replaces `state.json`, the single commit point;
    `resume` loads the committed epoch before `fit` and cuts history.csv
    back to it, so a kill at any instant neither redoes nor loses an epoch.
    Not Keras' BackupAndRestore: it writes its weights and metadata in place,
    where a SIGKILL mid-write leaves a file that cannot be loaded, and it
    does not know about the CSV log.
    """

    def __init__(self, folder: Path, history: Path) -> None:
        super().__init__()
        self.folder = folder
        self.history = history
        self.state = folder / "state.json"

    def resume(self, model: keras.Model) -> int:
        """Load the last committed epoch into `model` (optimizer built first); the epoch to start from.

        `seconds` then holds the training time of the committed epochs, so a
        resumed phase reports its whole cost, not only the last sitting's;
        `cpu_seconds` splits it by CPU, since a phase resumed on another
        machine may have run on CPUs up to 2x apart in speed.
        """
        self._started = time.time()
        self.cpu = cpu_model()
        self.cpu_seconds: dict[str, float] = {}
        if not self.state.exists():
            # A fresh start: rows left by a run without a checkpoint must not be appended to.
            self.history.unlink(missing_ok=True)
            return 0
        state = json.loads(self.state.read_text())
        # A checkpoint written before the CPUs were recorded counts its seconds as "unrecorded".
        self.cpu_seconds = state.get("cpu_seconds", {"unrecorded": state["seconds"]})
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / state["weights"])
        if self.history.exists():
            rows = self.history.read_bytes().splitlines(keepends=True)
            os.truncate(self.history, sum(len(row) for row in rows[: 1 + state["epoch"]]))
        return state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return  # the NaN guard stopped it: nothing worth committing
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch{epoch + 1}.weights.h5"
        files.atomic_save(self.folder / name, self.model.save_weights)
        old = json.loads(self.state.read_text())["weights"] if self.state.exists() else None
        now = time.time()
        self.cpu_seconds[self.cpu] = self.cpu_seconds.get(self.cpu, 0.0) + now - self._started
        self._started = now
        files.atomic_write_json(self.state, {"epoch": epoch + 1, "weights": name, "seconds": self.seconds,
                                             "cpu_seconds": self.cpu_seconds})
        if old and old != name:
            (self.folder / old).unlink(missing_ok=True)

    @property
    def seconds(self) -> float:
        """Training seconds of the committed epochs, over every sitting and CPU."""
        return sum(self.cpu_seconds.values())


class EpochData(keras.callbacks.Callback):
    """Tells the training data which epoch Keras is in, so each epoch draws its own shuffle and crops.

    Keras iterates the same dataset afresh in every epoch without saying
    which epoch that is, and tf.data's own reshuffling restarts in every
    process: each sitting of a resumed phase would replay the first epochs'
    batches. The dataset reads `epoch` when iterated, after `on_epoch_begin`
    (`data.Splits.train_dataset`). One dataset over all epochs would not do:
    under `steps_per_execution` an execution runs on across an epoch's end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


class NanGuard(keras.callbacks.Callback):
    """Stops a phase whose epoch-mean loss is not finite, and remembers the epoch.

    It reads the loss once per epoch, from the logs Keras has already brought
    to the host, so it never blocks asynchronous dispatch; a NaN in any batch
    makes the epoch's mean NaN.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failed_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_epoch = epoch + 1
            self.model.stop_training = True


@contextlib.contextmanager
def _policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy for the block (models built inside compute in it)."""
    previous = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, i.e. not Linux)."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in (path.read_text() if path.exists() else "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU a phase trains on, beside its wall time: these machines' CPUs differ up to 2x in speed.

    The model name alone can hide that ("AMD EPYC" has been two generations here), so its family and model
    numbers and its widest vector unit (what TensorFlow's CPU kernels use) come with it.
    """
    fields = cpuinfo()
    if "model name" not in fields:
        return platform.processor() or "unknown"  # no /proc/cpuinfo (not Linux)
    flags = set(fields.get("flags", "").split())
    vector = next((name for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                   if flag in flags), "no AVX2")
    return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {vector})"


class Trainer:
    """Runs phases on one dataset, reusing every finished artefact on disk.

    `callbacks` are extra Keras callbacks for every phase, run after the
    checkpoint of each epoch has been committed.
    """

    def __init__(self, exp: Experiment, splits: data.Splits, out_dir: str | Path,
                 strategy: tf.distribute.Strategy | None = None, verbose: int | None = None,
                 callbacks: Sequence[keras.callbacks.Callback] = ()):
        models.check_input_size(exp.net, splits.image_shape)  # before anything is written
        self.exp = exp
        self.splits = splits
        self.root = Path(out_dir) / exp.dataset / exp.net
        self.strategy = strategy or tf.distribute.get_strategy()
        # Keras's verbose="auto" draws its progress bar into log files too (its Progbar takes any posix process
        # for a terminal): megabytes of backspaces per phase in a `nohup` log. There, one line per epoch.
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
        self.callbacks = list(callbacks)
        self._done: dict[str, dict] = {}

    def folder(self, phase: Phase) -> Path:
        return self.root / phase.folder(self.exp, self.splits.identity)

    def trained_model(self, phase: Phase) -> Path:
        """The saved model of a finished phase that a later phase learns from or starts from."""
        path = self.folder(phase) / "model.keras"
        if not path.exists():
            # result.json alone (e.g. a results folder committed without its weights) is enough to report
            # a phase, not to teach or initialise another.
            raise UserError(f"{path.parent} has a result but no model.keras, which {phase.name} must provide to "
                            f"the phases after it; delete {path.parent} to retrain it.")
        return path

    def build_model(self, phase: Phase) -> keras.Model:
        """The phase's fresh model: seeded, or started from the weights of `phase.init`."""
        config = self.exp.net_config(phase.role, self.splits.num_classes, self.splits.image_shape)
        keras.utils.set_random_seed(phase.seed)
        model = models.build_pacemaker(config, self.exp.pacemaker_kind) if phase.role == "pacemaker" \
            else models.build(config)
        if phase.init is not None:
            path = self.trained_model(phase.init)
            start = keras.saving.load_model(path)
            if phase.init_member:
                start = models.pacemaker_member(start, phase.init_member)
            if [w.shape for w in start.weights] != [w.shape for w in model.weights]:
                raise UserError(f"{path} holds {start.name}, not the {model.name} that {phase.name} starts from; "
                                f"delete {path.parent} to retrain it.")
            model.set_weights(start.get_weights())
        return model

    def train_phase(self, phase: Phase) -> dict:
        """Train `phase` (and the phases it needs) unless done; return its result."""
        folder = self.folder(phase)
        if folder.name in self._done:
            return self._done[folder.name]
        for needed in phase.inputs:
            self.train_phase(needed)
        done = folder / "result.json"
        if not done.exists():
            for needed in phase.inputs:
                self.trained_model(needed)  # before anything of this phase is written
            if phase.taught_by is not None and phase.taught_by.role == "teacher":
                self._warn_if_weak(self.train_phase(phase.taught_by))
            # Workers of a distributed search share an out_dir and all need the
            # same teacher first: one trains it, the others wait, then reuse it.
            with files.lock(folder.parent / f".{folder.name}.lock"):
                if not done.exists():
                    self._fit(phase, folder)
        result = json.loads(done.read_text())
        if result.get("status") == "failed":
            raise TrainingDiverged(result["error"])
        self._done[folder.name] = result
        return result

    def _warn_if_weak(self, teacher: dict) -> None:
        """One line when a teacher is below 1.5x chance (e.g. too few epochs on little data): little to distil."""
        split = "validation" if "val_accuracy" in teacher else "test"
        accuracy = teacher.get("val_accuracy", teacher["test_accuracy"])
        chance = 1 / self.splits.num_classes
        if accuracy < 1.5 * chance:
            logging.warning("The teacher %s scores %.2f%% on %s, below 1.5x chance (%.2f%% for %d classes): its "
                            "students have little to learn from it; train it longer (--epochs) or on more images.",
                            teacher["folder"], 100 * accuracy, split, 150 * chance, self.splits.num_classes)

    def _fit(self, phase: Phase, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        files.atomic_write_json(folder / "config.json", phase.config(self.exp, self.splits.identity))
        recipe = self.exp.recipe
        steps = math.ceil(self.splits.num_examples("train") / recipe.batch_size)
        epoch_data = EpochData()  # outside the strategy's scope: a plain variable, not a mirrored one
        train = self.splits.train_dataset(recipe.batch_size, phase.seed, epoch_data.epoch)
        with _policy(self.exp.precision), self.strategy.scope():
            teacher = keras.saving.load_model(self.trained_model(phase.taught_by)) if phase.taught_by else None
            student = self.build_model(phase)
            distiller = Distiller(student, teacher, terms.make(methods.METHODS[phase.method].terms,
                                                                self.exp.hyperparameters))
            distiller.compile(optimizer=recipe.optimizer(steps, phase.epochs), jit_compile=self.exp.jit_compile,
                              steps_per_execution=self.exp.steps_per_execution)
            checkpoint = EpochCheckpoint(folder / "checkpoint", folder / "history.csv")
            initial_epoch = checkpoint.resume(distiller)
            guard = NanGuard()
            # Order matters: the guard runs before the checkpoint, and the
            # history row is written before the checkpoint that commits it.
            callbacks = [epoch_data, guard, keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
                         checkpoint, keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False),
                         *self.callbacks]
            logging.info("Phase %s: %d epochs%s -> %s", phase.name, phase.epochs,
                         f" (resuming after epoch {initial_epoch})" if initial_epoch else "", folder)
            # Validation, like test, is scored once after training: it is the
            # tuner's objective, and a split larger than a small training subset
            # would otherwise cost more per epoch than the training itself.
            distiller.fit(train, epochs=phase.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                          verbose=self.verbose, shuffle=False)
            if guard.failed_epoch is not None:
                error = (f"{phase.name}: loss became NaN/inf in epoch {guard.failed_epoch}; "
                         "lower the learning rate or rho.")
                files.atomic_write_json(folder / "result.json", {"status": "failed", "error": error,
                                                                 "phase": phase.name, "epoch": guard.failed_epoch})
                raise TrainingDiverged(error)
            result = {"status": "ok", "phase": phase.name, "epochs": phase.epochs,
                      "wall_seconds": round(checkpoint.seconds, 1), "cpu": checkpoint.cpu,
                      "cpu_seconds": {cpu: round(s, 1) for cpu, s in checkpoint.cpu_seconds.items()},
                      "folder": folder.name}
            for split in ("test", "val") if self.splits.num_examples("val") else ("test",):
                dataset = self.splits.eval_dataset(split, recipe.batch_size)
                scores = distiller.evaluate(dataset, verbose=0, return_dict=True)
                result[f"{split}_accuracy"] = float(scores["accuracy"])
        files.atomic_save(folder / "model.keras", student.save)
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
        files.atomic_write_json(folder / "result.json", result)

    def train_method(self, method: str, seed: int) -> dict:
        """Train `method` for `seed` (reusing what exists); its result with full cost: a run of a results table."""
        final = final_phase(self.exp, method, seed)
        try:
            result = dict(self.train_phase(final))
        except TrainingDiverged as error:
            return {"method": method, "seed": seed, "status": "failed", "error": str(error)}
        results = [self.train_phase(p) for p in needed_phases(final)]
        result.update(method=method, seed=seed, phases=[r["folder"] for r in results],
                      total_epochs=sum(r["epochs"] for r in results),
                      total_wall_seconds=round(sum(r["wall_seconds"] for r in results), 1),
                      cpus=sorted({cpu for r in results for cpu in r.get("cpu_seconds", [r.get("cpu", "unrecorded")])}))
        return result


def out_dir_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """Refuse a second runner on the same output folder instead of corrupting it."""
    return files.lock(root / ".lock", busy=f"{root} is in use by another runner; wait for it or use another --out_dir.")
