"""What every benchmark shares: the timed rows, interleaved timing, machine description, output files.

Absolute times on a shared CPU move with whatever else runs, so each
benchmark first builds (and traces) everything it compares, then times it in
rounds that visit every cell once, in a new order each round, and reports
medians over rounds of per-round ratios: cells timed seconds apart see the
same load, so their ratio survives contention that their absolute times do not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from pmkd_tf import data, methods, models, pipeline, terms
from pmkd_tf.distiller import Distiller
from pmkd_tf.errors import UserError
from pmkd_tf.pipeline import Experiment
from pmkd_tf.recipe import Recipe


# Name -> (jit_compile, Keras dtype policy).
VARIANTS = {
    "fp32": (False, "float32"),
    "bf16": (False, "mixed_bfloat16"),
    "xla_fp32": (True, "float32"),
    "xla_bf16": (True, "mixed_bfloat16"),
}

# Every timed row: what it runs. Training rows are timed inside `fit`,
# inference rows as a tf.function over the same cached batches.
ROWS = {
    "baseline": "1xN student, plain keras.Model.fit on its logits with cross-entropy (the reference, 1.00)",
    "ours_ce": "1xN student, our Distiller with no teacher (cross-entropy)",
    "teacher": "NxN teacher trained with cross-entropy by our Distiller (the pipeline's teacher phase)",
    "kd": "our Distiller, 1xN student from NxN teacher, KD weights (rho=0)",
    "fitnet": "our Distiller, 1xN student from NxN teacher, FitNet weights (alpha=0)",
    "kd_fitnet": "our Distiller, 1xN student from NxN teacher, KD+FitNet weights (also PMKD phase 3)",
    "pacemaker_phase": "our Distiller, pacemaker (1xN + Nx1 ensemble) from NxN teacher, KD+FitNet (PMKD phase 1)",
    "phase2": "our Distiller, 1xN student from the pacemaker as teacher, KD+FitNet (PMKD phase 2)",
    "keras_kd_fitnet": "keras.distillation.Distiller: LogitsDistillation(tau) + one FeatureDistillation per tap + CE",
    "column_ce": "Nx1 model (the pacemaker's other member), plain keras.Model.fit with cross-entropy",
    "teacher_inference": "NxN teacher forward pass, training=False (logits and all taps)",
    "pacemaker_inference": "pacemaker forward pass, training=False (logits and all taps)",
}

# A distillation step against the sum of the separately timed steps it is
# made of (issue 7: at most 1.15x).
TARGET_LIMIT = 1.15
TARGETS = {
    "kd": ("baseline", "teacher_inference"),
    "fitnet": ("baseline", "teacher_inference"),
    "kd_fitnet": ("baseline", "teacher_inference"),
    "phase2": ("baseline", "pacemaker_inference"),
    "pacemaker_phase": ("baseline", "column_ce", "teacher_inference"),
}

# The method (pmkd_tf.methods.METHODS) whose loss each distillation row trains with.
METHOD = {"kd": "kd", "fitnet": "fitnet", "kd_fitnet": "kd_fitnet", "pacemaker_phase": "pmkd",
          "phase2": "pmkd", "keras_kd_fitnet": "kd_fitnet"}

CIFAR10_TRAIN_IMAGES = 50_000


# ---------------------------------------------------------------- machine


class ContentionMonitor:
    """How much of the machine other processes used while a benchmark ran.

    /proc/stat gives the whole machine's busy CPU time and os.times() our
    own, so their difference over the run is everyone else's share: the
    number that says whether absolute times here are contended.
    """

    def __init__(self) -> None:
        self._start = (self._machine_busy(), self._own_cpu(), time.monotonic())

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def summary(self) -> dict:
        busy0, own0, wall0 = self._start
        busy1, own1, wall1 = self._machine_busy(), self._own_cpu(), time.monotonic()
        cores = os.cpu_count() or 1
        wall = max(wall1 - wall0, 1e-9)
        out = {"own_cpu_fraction": round((own1 - own0) / (wall * cores), 3), "load_average_end": os.getloadavg()}
        if busy0 is not None and busy1 is not None:
            other = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * cores)
            out["other_processes_cpu_fraction"] = round(other, 3)
            out["contended"] = other > 0.10
        return out


def machine() -> dict:
    """CPU model, cores, the CPU features that matter for bf16, and library versions."""
    cpu_flags = set(pipeline.cpuinfo().get("flags", "").split())
    return {
        "cpu_model": pipeline.cpu_model(),  # as each trained phase records it
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_features": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in cpu_flags],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on)"),
        "load_average_start": os.getloadavg(),
    }


def command_line(module: str) -> str:
    return " ".join(["python -m", module, *map(shlex.quote, sys.argv[1:])])


def out_paths(out: str) -> tuple[Path, Path]:
    """<out>.json and <out>.md (a given .json/.md suffix is dropped first)."""
    stem = Path(out)
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    return stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.md"


def write_outputs(out: str, result: dict, markdown: str) -> tuple[Path, Path]:
    json_path, md_path = out_paths(out)
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: cannot create {json_path.parent} ({error.strerror}).") from None
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def finish(out: str, result: dict, started: float, contention: ContentionMonitor,
           markdown: Callable[[dict], str]) -> None:
    """Stamp the wall time and the machine's other load on `result`, write both files, say where."""
    result["wall_seconds"] = time.time() - started
    result["load"] = contention.summary()
    json_path, md_path = write_outputs(out, result, markdown(result))
    print(f"wrote {json_path} and {md_path}")


def header_markdown(title: str, result: dict) -> list[str]:
    """Title, command, machine and load: what a reader needs before any number."""
    m, load = result["machine"], result["load"]
    lines = [f"# {title}", "", f"Command: `{result['command']}`", "",
             f"Machine: {m['cpu_model']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, "
             f"features {', '.join(m['cpu_features']) or 'none'}; TensorFlow {m['tensorflow']}, "
             f"Keras {m['keras']}, Python {m['python']}.", "",
             f"Wall time: {result['wall_seconds']:.0f} s. Settings: "
             + ", ".join(f"{k}={v}" for k, v in result["settings"].items()) + ".", ""]
    if result["settings"].get("tiny"):
        lines += ["**Tiny settings: these numbers test the script, they are not results.**", ""]
    if load.get("contended"):
        lines += [f"**Contended: other processes used {100 * load['other_processes_cpu_fraction']:.0f}% of the "
                  "machine's CPU during this run; trust the ratios (measured together) more than absolute "
                  "times, and re-run on an idle machine.**", ""]
    return lines


# ---------------------------------------------------------------- data


def cifar10_training_images(data_dir: str | None, images: int, seed: int) -> data.Splits:
    """`images` real CIFAR-10 training images (the test split is not needed)."""
    return data.load("cifar10", data_dir, train_examples=images, test_examples=1, seed=seed)


def cached_batches(splits: data.Splits, batch_size: int, count: int, seed: int) -> tf.data.Dataset:
    """`count` real, augmented, normalised training batches held in memory and cycled forever.

    Training rows are timed on these so that the input pipeline (measured on
    its own by benchmarks.input_pipeline) costs nothing inside the timing.
    """
    needed = batch_size * count
    keras.utils.set_random_seed(seed)  # the augmentation's crops and flips
    if len(splits.train_labels) < needed:
        raise UserError(f"{count} batches of {batch_size} need {needed} training images, "
                        f"only {len(splits.train_labels)} loaded.")
    ds = splits.train_dataset(batch_size, seed)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(count)])
    return tf.data.Dataset.from_tensor_slices((np.stack(images), np.stack(labels))).repeat().prefetch(2)


# ---------------------------------------------------------------- timing


class Timer(Protocol):
    jit_compile: bool

    def warmup(self, steps: int) -> None:
        """Run untimed steps (tracing, compilation, first allocations)."""

    def run(self, steps: int) -> float:
        """Mean wall seconds of one step over `steps` timed steps."""


class _BatchStarts(keras.callbacks.Callback):
    """Timestamps at each batch start; only a begin hook, so Keras keeps its async batch-end path."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.times.append(time.perf_counter())


class FitTimer:
    """A compiled model's training step as `model.fit` runs it, fit's own per-step loop included.

    Each call runs `steps + 2` batches and times from the start of the
    second to the start of the last: fit's per-call setup and the new
    iterator's first batch (a refilled shuffle buffer on a live pipeline)
    stay outside the window, as they are amortised over an epoch in real
    training, and the last batch is only the window's end mark.
    """

    def __init__(self, model: keras.Model, dataset: tf.data.Dataset) -> None:
        self.model = model
        self.dataset = dataset

    @property
    def jit_compile(self) -> bool:
        """Whether XLA is really on: Keras turns it off, with only a warning, for layers that do not support it."""
        return bool(self.model.jit_compile)

    def warmup(self, steps: int) -> None:
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

    def run(self, steps: int) -> float:
        starts = _BatchStarts()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps + 2, verbose=0, shuffle=False,
                       callbacks=[starts])
        return (starts.times[-1] - starts.times[1]) / steps


class InferenceTimer:
    """A model's inference forward pass, shaped like Keras' step: next(iterator) inside a tf.function."""

    def __init__(self, model: keras.Model, dataset: tf.data.Dataset, jit_compile: bool) -> None:
        forward = tf.function(lambda images: model(images, training=False), jit_compile=jit_compile)

        @tf.function
        def step(iterator):
            images, _ = next(iterator)
            return forward(images)

        self._step = step
        self._iterator = iter(dataset)
        self.jit_compile = jit_compile

    def warmup(self, steps: int) -> None:
        for _ in range(steps):
            self._step(self._iterator)

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self._step(self._iterator)
        return (time.perf_counter() - start) / steps


def interleave(cells: dict[str, Timer], rounds: int, steps: int, warmup: int, seed: int, target_seconds: float = 0.0,
               log: Callable[[str], None] = print) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Warm every cell up, then time each once per round in a fresh random order.

    With `target_seconds`, one calibration run per cell sets its step count
    so that each timing window lasts about that long (at least `steps`).
    Returns each cell's seconds per step, one value per round, so ratios can
    be taken within a round (same load) before the median across rounds,
    and the step count each cell was timed with.
    """
    counts = {}
    for name, cell in cells.items():
        start = time.perf_counter()
        cell.warmup(warmup)
        counts[name] = steps
        if target_seconds > 0:
            counts[name] = max(steps, math.ceil(target_seconds / cell.run(steps)))
        log(f"warmed up {name} in {time.perf_counter() - start:.1f} s; {counts[name]} steps per round")
    rng = random.Random(seed)
    order = list(cells)
    per_round: dict[str, list[float]] = {name: [] for name in cells}
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            per_round[name].append(cells[name].run(counts[name]))
        log(f"round {r + 1}/{rounds} done")
    return per_round, counts


def spread(values: list[float]) -> dict:
    """Median and range of per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def per_round_ratio(numerator: list[float], *denominators: list[float]) -> list[float]:
    """numerator / sum(denominators), round by round."""
    return [n / sum(parts) for n, *parts in zip(numerator, *denominators)]


# ---------------------------------------------------------------- rows


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build models under a Keras dtype policy; layers keep the policy they were built with."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclasses.dataclass(frozen=True)
class Setup:
    """One net at one width and batch size, in one variant (jit_compile x precision)."""

    net: str
    width_multiplier: float
    batch_size: int
    variant: str = "fp32"
    n: int = 3
    seed: int = 0
    num_classes: int = 10

    @property
    def jit_compile(self) -> bool:
        return VARIANTS[self.variant][0]

    @property
    def policy(self) -> str:
        return VARIANTS[self.variant][1]

    def experiment(self) -> Experiment:
        """The pipeline's Experiment, whose hyperparameters (rho, alpha, tau) every distillation row uses."""
        return Experiment("cifar10", self.net, Recipe(batch_size=self.batch_size),
                          width_multiplier=self.width_multiplier, n=self.n, jit_compile=self.jit_compile)


def feature_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are `model`'s feature taps, in tap order."""
    by_output = {}
    for layer in model.layers:
        with contextlib.suppress(AttributeError, ValueError):
            by_output[id(layer.output)] = layer.name
    return [by_output[id(tap)] for tap in model.output["features"]]


def _cross_entropy() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def logits_model(model: keras.Model) -> keras.Model:
    """The same layers (and weights) with the logits as the only output, as plain Keras expects."""
    return keras.Model(model.inputs, model.output["logits"], name=f"{model.name}_logits")


def keras_distiller(student: keras.Model, teacher: keras.Model,
                    values: Mapping[str, terms.Value]) -> keras.distillation.Distiller:
    """keras.distillation's Distiller computing exactly our KD + FitNet loss with hyperparameters `values`.

    Keras' total is  s * CE + (1 - s) * sum_i w_i * L_i ; with s = 1 - alpha,
    w = 1 for LogitsDistillation (KL at tau, times tau^2) and
    w = rho / (n_taps * alpha) for each tap's MSE, it equals ours:
    rho * mean_i MSE_i + alpha * KD + (1 - alpha) * CE.

    The KL loss is passed as a `KLDivergence` instance: LogitsDistillation
    only softmaxes the tempered logits (and multiplies by tau^2) for an
    instance, and its default, the string "kl_divergence", resolves to the
    plain function, which would take KL of raw logits (Keras 3.15).
    """
    if not 0 < values["alpha"] <= 1:
        raise UserError("keras.distillation scales every distillation loss by alpha; it needs 0 < alpha <= 1.")
    if not values["scale_kd_by_t2"]:
        raise UserError("keras.distillation's LogitsDistillation always multiplies KL by tau^2.")
    dist = keras.distillation
    teacher_taps, student_taps = feature_layer_names(teacher), feature_layer_names(student)
    tap_weight = values["rho"] / (len(teacher_taps) * values["alpha"])
    return dist.Distiller(
        teacher=logits_model(teacher), student=logits_model(student),
        distillation_losses=[dist.LogitsDistillation(values["temperature"], keras.losses.KLDivergence())]
        + [dist.FeatureDistillation("mse", t, s) for t, s in zip(teacher_taps, student_taps)],
        distillation_loss_weights=[1.0] + [tap_weight] * len(teacher_taps),
        student_loss_weight=1 - values["alpha"],
    )


class RowFactory:
    """Builds each row's timer for one Setup: fresh, identically initialised models per row.

    Every model of a role (teacher, student, column, pacemaker) starts from
    the same seed in every row, so rows differ only in what their step does.
    The frozen teacher and the frozen pacemaker teacher are shared by the
    rows that read them; nothing ever updates them.
    """

    SEED_OFFSET = {"NxN": 0, "1xN": 1, "Nx1": 2, "pacemaker": 3}

    def __init__(self, setup: Setup, dataset: tf.data.Dataset) -> None:
        self.setup = setup
        self.dataset = dataset
        self.exp = setup.experiment()
        self.checks: dict[str, dict] = {}
        self._frozen: dict[str, keras.Model] = {}

    def _build(self, role: str) -> keras.Model:
        config = models.NetConfig(self.setup.net, "1xN" if role == "pacemaker" else role, self.setup.num_classes,
                                  self.setup.width_multiplier, self.setup.n)
        keras.utils.set_random_seed(self.setup.seed + self.SEED_OFFSET[role])
        with dtype_policy(self.setup.policy):
            return models.build_pacemaker(config) if role == "pacemaker" else models.build(config)

    def _frozen_model(self, role: str) -> keras.Model:
        if role not in self._frozen:
            self._frozen[role] = self._build(role)
        return self._frozen[role]

    def _optimizer(self) -> keras.optimizers.Optimizer:
        steps_per_epoch = math.ceil(CIFAR10_TRAIN_IMAGES / self.setup.batch_size)
        return self.exp.recipe.optimizer(steps_per_epoch)

    def _plain(self, role: str) -> FitTimer:
        model = logits_model(self._build(role))
        model.compile(optimizer=self._optimizer(), loss=_cross_entropy(), metrics=["accuracy"],
                      jit_compile=self.setup.jit_compile)
        return FitTimer(model, self.dataset)

    def _terms(self, method: str) -> list[terms.Term]:
        return terms.make(methods.METHODS[method].terms, self.exp.hyperparameters)

    def _ours(self, student: keras.Model, teacher: keras.Model | None, method: str) -> FitTimer:
        distiller = Distiller(student, teacher, self._terms(method) if teacher is not None else None)
        distiller.compile(optimizer=self._optimizer(), jit_compile=self.setup.jit_compile)
        return FitTimer(distiller, self.dataset)

    def _keras(self) -> FitTimer:
        values = methods.METHODS[METHOD["keras_kd_fitnet"]].values(self.exp.hyperparameters)
        teacher = self._frozen_model("NxN")
        self.checks["keras_kd_fitnet_loss"] = self._loss_check(teacher, values)
        distiller = keras_distiller(self._build("1xN"), teacher, values)
        distiller.compile(optimizer=self._optimizer(), loss=_cross_entropy(), metrics=["accuracy"],
                          jit_compile=self.setup.jit_compile)
        return FitTimer(distiller, self.dataset)

    def _loss_check(self, teacher: keras.Model, values: Mapping[str, terms.Value]) -> dict:
        """Both distillers' total loss on one real batch from identical weights: must agree."""
        images, labels = next(iter(self.dataset))
        student = self._build("1xN")
        ours = Distiller(student, teacher, self._terms(METHOD["keras_kd_fitnet"])).compute_loss(
            x=images, y=labels, y_pred=student(images, training=True))
        theirs_model = keras_distiller(self._build("1xN"), teacher, values)
        theirs_model.compile(loss=_cross_entropy())
        theirs = theirs_model.compute_loss(x=images, y=labels, y_pred=theirs_model(images, training=True))
        ours, theirs = float(ours), float(theirs)
        return {"ours": ours, "keras": theirs, "relative_difference": abs(ours - theirs) / max(abs(ours), 1e-12)}

    def timer(self, row: str) -> Timer:
        """The timer of one row (`ROWS`)."""
        if row == "baseline":
            return self._plain("1xN")
        if row == "column_ce":
            return self._plain("Nx1")
        if row == "ours_ce":
            return self._ours(self._build("1xN"), None, "baseline")
        if row == "teacher":
            return self._ours(self._build("NxN"), None, "teacher")
        if row in ("kd", "fitnet", "kd_fitnet"):
            return self._ours(self._build("1xN"), self._frozen_model("NxN"), METHOD[row])
        if row == "pacemaker_phase":
            return self._ours(self._build("pacemaker"), self._frozen_model("NxN"), METHOD[row])
        if row == "phase2":
            return self._ours(self._build("1xN"), self._frozen_model("pacemaker"), METHOD[row])
        if row == "keras_kd_fitnet":
            return self._keras()
        if row == "teacher_inference":
            return InferenceTimer(self._frozen_model("NxN"), self.dataset, self.setup.jit_compile)
        if row == "pacemaker_inference":
            return InferenceTimer(self._frozen_model("pacemaker"), self.dataset, self.setup.jit_compile)
        raise UserError(f"Unknown row {row!r}; valid: {', '.join(ROWS)}.")
