"""Training recipes: the paper's schedule and the scaled presets.

The paper (sec. 4.3) trains every phase for 200 epochs, batch 128, SGD with
momentum 0.9 and weight decay 1e-5, LR 0.1 multiplied by 0.2 at epochs 60,
120 and 160. A shorter run keeps the same shape: the milestones scale with
the epoch count. The "cosine" schedule instead decays the LR smoothly to 0
over the phase (Loshchilov & Hutter).

Weight decay comes in two kinds. The paper's (PyTorch's `weight_decay`) is
"coupled": L2 added to the gradient before momentum, so with momentum 0.9
it acts about 10x as strongly as Keras' own, "decoupled" decay (subtracted
from the weights after the step) at the same coefficient.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from pmkd_tf.errors import UserError

PAPER_EPOCHS = 200
PAPER_MILESTONES = (60, 120, 160)
WEIGHT_DECAY_KINDS = ("coupled", "decoupled")
LR_SCHEDULES = ("step", "cosine")


@keras.saving.register_keras_serializable("pmkd_tf")
class CoupledSGD(keras.optimizers.SGD):
    """SGD with L2 weight decay added to the gradient before momentum, as PyTorch's SGD(weight_decay=...).

    Keras has no coupled form; `update_step` is its documented hook for a
    custom update rule, and runs on unscaled gradients under a loss-scale
    optimizer.
    """

    def __init__(self, *args, l2: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        decayed = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        super().update_step(decayed, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one phase is trained."""

    epochs: int = PAPER_EPOCHS
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    weight_decay_kind: str = "decoupled"
    lr_decay: float = 0.2
    lr_schedule: str = "step"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "learning_rate"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}.")
        for name, valid in (("weight_decay_kind", WEIGHT_DECAY_KINDS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in valid:
                raise UserError(f"Unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}.")

    def schedule(self, steps_per_epoch: int,
                 epochs: int | None = None) -> keras.optimizers.schedules.LearningRateSchedule:
        """The LR at each step of a phase of `epochs` epochs (default: the recipe's)."""
        epochs = epochs or self.epochs
        if self.lr_schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, steps_per_epoch * epochs)
        boundaries = [max(1, round(m * epochs / PAPER_EPOCHS)) * steps_per_epoch for m in PAPER_MILESTONES]
        values = [self.learning_rate * self.lr_decay**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    def optimizer(self, steps_per_epoch: int, epochs: int | None = None) -> keras.optimizers.Optimizer:
        """SGD with the recipe's LR schedule for a phase of `epochs` epochs."""
        schedule = self.schedule(steps_per_epoch, epochs)
        if self.weight_decay_kind == "coupled":
            return CoupledSGD(schedule, momentum=self.momentum, l2=self.weight_decay)
        return keras.optimizers.SGD(schedule, momentum=self.momentum, weight_decay=self.weight_decay)


@dataclasses.dataclass(frozen=True)
class Preset:
    """Defaults for one scale of experiment (`others`: further settings, by flag name); explicit flags win."""

    epochs: int
    width_multiplier: float
    seeds: int
    batch_size: int = 128
    train_examples: int | None = None
    test_examples: int | None = None
    weight_decay_kind: str = "decoupled"
    others: dict[str, object] = dataclasses.field(default_factory=dict)


PRESETS = {
    # The paper's full recipe: a GPU job.
    "paper": Preset(epochs=200, width_multiplier=1.0, seeds=5, weight_decay_kind="coupled"),
    # All eight rows x 3 seeds of one net on a 2-core CPU in about 3 hours.
    "cpu": Preset(epochs=12, width_multiplier=0.125, seeds=3, train_examples=10_000),
    # The cheapest converged setting of the convergence ladders (BENCHMARKS.md,
    # "Convergence"): on 1,000 images the baseline trained 384 epochs gains
    # +0.95 points over 192, where 2,500 and 10,000 images still gain 2.46
    # points or more per doubling at every count that fits about 12 h. About
    # 7 h for the `converged` table on a 2-core CPU.
    "converged": Preset(epochs=192, width_multiplier=0.125, seeds=3, train_examples=1_000,
                        weight_decay_kind="coupled"),
    # The MCU issue's best student, each setting chosen at a proxy scale by experiments/mcu_study.py: the 1xN
    # ResNet-8 x2 that sees every row, cosine LR, MLPerf Tiny's 5e-4 coupled decay, all 50,000 training images.
    # 30 epochs, though 120 beat 60 by 2.55 points there: a sitting lasts 3 hours and only a finished phase
    # outlives its machine (twice an unfinished chain was lost), so its dearest phase, the pacemaker (305 s per
    # epoch on a Zen 3 EPYC), must end within one sitting.
    "mcu": Preset(epochs=30, width_multiplier=2.0, seeds=1, weight_decay_kind="coupled",
                  others={"net": "resnet8", "downsampling": "average", "lr_schedule": "cosine", "weight_decay": 5e-4}),
    # A minute: proves the plumbing, not the method.
    "smoke": Preset(epochs=1, width_multiplier=1 / 16, seeds=1, batch_size=64, train_examples=256,
                    test_examples=256),
}
