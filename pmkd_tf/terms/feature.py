"""L_FKD: the squared distance of every feature tap (FitNet's hint, paper eq. 4), weighted rho."""

from __future__ import annotations

from keras import ops

from pmkd_tf.terms.base import Hyperparameter, Range, Term, f32


class FeatureDistance(Term):
    """1/n sum_i ||t_i - s_i||^2 over the n taps, each a mean over its elements so taps of any size weigh alike.

    No regressor: teacher and student taps have identical shapes.
    """

    key = "feature"
    hyperparameters = (
        Hyperparameter("rho", 1.0, "Weight of the feature loss (paper: 0.01 to 5).", "must be >= 0",
                       lambda v: v >= 0, Range(0.01, 5.0, log=True), unused=0.0, in_every_table=True),
    )

    def weight(self) -> float:
        return self.values["rho"]

    def compute(self, labels, student, teacher):
        pairs = list(zip(teacher["features"], student["features"], strict=True))
        return ops.sum(ops.stack([ops.mean(ops.square(f32(t) - f32(s))) for t, s in pairs])) / len(pairs)
