"""L_FKD: the squared distance of every feature tap (FitNet's hint, paper eq. 4), weighted rho."""

from __future__ import annotations

import keras
from keras import ops

from pmkd_tf.terms.base import Hyperparameter, Range, Term, f32


class FeatureDistance(Term):
    """1/n sum_i ||t_i - s_i||^2 over the n taps, each a mean over its elements so taps of any size weigh alike.

    The paper's teacher and student taps have identical shapes, so there is
    no regressor. A teacher wider than its student (`--teacher_width_multiplier`)
    gets FitNet's: a trained 1x1 conv from each student tap to the teacher's
    channels, which the Distiller trains with the student and never exports.
    """

    key = "feature"
    hyperparameters = (
        Hyperparameter("rho", 1.0, "Weight of the feature loss (paper: 0.01 to 5).", "must be >= 0",
                       lambda v: v >= 0, Range(0.01, 5.0, log=True), unused=0.0, in_every_table=True),
    )

    regressors: list[keras.layers.Dense | None] = []  # per tap, from `build`; none before: taps compared as they are

    def build(self, student: keras.Model, teacher: keras.Model | None) -> None:
        pairs = zip(student.output["features"], teacher.output["features"], strict=True)
        # A Dense layer on a (B, H, W, C) tap is a 1x1 conv over its channels; None keeps the tap as it is.
        self.regressors = [None if s.shape[-1] == t.shape[-1] else
                           keras.layers.Dense(t.shape[-1], use_bias=False, dtype="float32", name=f"regressor{i}")
                           for i, (s, t) in enumerate(pairs)]
        for regressor, tap in zip(self.regressors, student.output["features"]):
            if regressor is not None:
                regressor.build(tap.shape)
        super().build(student, teacher)

    def weight(self) -> float:
        return self.values["rho"]

    def compute(self, labels, student, teacher):
        regressors = self.regressors or [None] * len(student["features"])
        taps = [f32(s) if r is None else r(f32(s)) for r, s in zip(regressors, student["features"], strict=True)]
        pairs = list(zip(teacher["features"], taps, strict=True))
        return ops.sum(ops.stack([ops.mean(ops.square(f32(t) - s)) for t, s in pairs])) / len(pairs)
