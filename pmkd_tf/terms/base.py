"""What a loss term is: its hyperparameters and its value on a batch.

    loss = sum over the method's terms of  weight * value      (eq. 7 with PMKD's three terms)

A term is a `keras.layers.Layer`, so it may own trainable weights (a
regressor, say): the Distiller trains them with the student, checkpoints
them with it, and leaves them out of the saved student.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

import keras
from keras import ops

Value = float | bool


@dataclasses.dataclass(frozen=True)
class Range:
    """Where the tuner samples a hyperparameter: uniformly, or log-uniformly when `log`."""

    low: float
    high: float
    log: bool = False


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One setting of a term, which is also a flag of `experiments.run` and `tune`.

    `search` is the tuner's default range (None: never searched). `unused`
    is the value a phase's identity records when its method leaves the term
    out: eq. 7's weights were recorded by every phase so far (rho 0 without
    the feature term, alpha 0 without KD), so they keep being recorded; a
    newer hyperparameter has None and is recorded only where its term is
    used. `in_every_table` likewise: eq. 7's weights are in every table's
    settings, any other hyperparameter only where it is not at its default.
    """

    name: str
    default: Value
    help: str
    rule: str = ""  # what `valid` demands, for error messages: "must be >= 0"
    valid: Callable[[Value], bool] = lambda value: True
    search: Range | None = None
    unused: Value | None = None
    in_every_table: bool = False

    def parse(self, value: Value) -> Value:
        """`value` as this hyperparameter's type (so 1 and 1.0 give one identity); ValueError if invalid."""
        value = bool(value) if isinstance(self.default, bool) else float(value)
        if not self.valid(value):
            raise ValueError(f"{self.name} {self.rule}, got {value}.")
        return value


class Term(keras.layers.Layer):
    """One weighted term of the loss. A subclass in a module of `pmkd_tf.terms` is registered by its `key`.

    It is built for one phase with the values of every hyperparameter the
    method reads (`terms.values`), and the Distiller calls `build` once with
    the two networks before training, where a term creates any weights of its own.
    """

    key: ClassVar[str]
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]] = ()

    def __init__(self, values: Mapping[str, Value]):
        super().__init__(name=self.key, dtype="float32")
        self.values = dict(values)

    def build(self, student: keras.Model, teacher: keras.Model | None) -> None:  # noqa: D102 (see the class)
        self.built = True

    def weight(self) -> float:
        """The term's coefficient in the loss."""
        raise NotImplementedError

    def compute(self, labels, student: dict, teacher: dict | None):
        """The term's float32 value on a batch, from both networks' `{"logits", "features"}`."""
        raise NotImplementedError


def f32(x):
    """Every term is computed in float32, so a mixed-precision policy changes the networks' arithmetic only."""
    return ops.cast(x, "float32")
