"""Training recipes: the paper's schedule and the scaled presets.

The paper (sec. 4.3) trains every phase for 200 epochs, batch 128, SGD with
momentum 0.9 and weight decay 1e-5, LR 0.1 multiplied by 0.2 at epochs 60,
120 and 160. A shorter run keeps the same shape: the milestones scale with
the epoch count.
"""

from __future__ import annotations

import dataclasses

import keras

from pmkd_tf.errors import UserError

PAPER_EPOCHS = 200
PAPER_MILESTONES = (60, 120, 160)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one phase is trained."""

    epochs: int = PAPER_EPOCHS
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    lr_decay: float = 0.2

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise UserError(f"epochs must be > 0, got {self.epochs}.")
        if self.batch_size <= 0:
            raise UserError(f"batch_size must be > 0, got {self.batch_size}.")
        if self.learning_rate <= 0:
            raise UserError(f"learning_rate must be > 0, got {self.learning_rate}.")

    def milestones(self, epochs: int | None = None) -> tuple[int, ...]:
        """Epochs at which the LR drops: the paper's 60/120/160 scaled to `epochs`."""
        epochs = epochs or self.epochs
        return tuple(max(1, round(m * epochs / PAPER_EPOCHS)) for m in PAPER_MILESTONES)

    def optimizer(self, steps_per_epoch: int, epochs: int | None = None) -> keras.optimizers.Optimizer:
        """SGD with the step-wise LR schedule for a phase of `epochs` epochs."""
        boundaries = [m * steps_per_epoch for m in self.milestones(epochs)]
        values = [self.learning_rate * self.lr_decay**i for i in range(len(boundaries) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        return keras.optimizers.SGD(schedule, momentum=self.momentum, weight_decay=self.weight_decay)


@dataclasses.dataclass(frozen=True)
class Preset:
    """Defaults for one scale of experiment; explicit flags override them."""

    epochs: int
    width_multiplier: float
    seeds: int
    batch_size: int = 128
    train_examples: int | None = None
    test_examples: int | None = None


PRESETS = {
    # The paper's full recipe: a GPU job.
    "paper": Preset(epochs=200, width_multiplier=1.0, seeds=5),
    # All eight rows x 3 seeds of one net on a 2-core CPU in about 3 hours.
    "cpu": Preset(epochs=12, width_multiplier=0.125, seeds=3, train_examples=10_000),
    # A minute: proves the plumbing, not the method.
    "smoke": Preset(epochs=1, width_multiplier=1 / 16, seeds=1, batch_size=64, train_examples=256,
                    test_examples=256),
}
