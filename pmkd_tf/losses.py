"""PMKD's loss terms as small pure functions, composed in one place.

    loss = rho * L_FKD + alpha * L_KD(tau) + (1 - alpha) * L_CE      (paper eq. 7)

`TERMS` is the one table of terms: each names its weight in eq. 7 and the
hyperparameters it reads. A method (see `methods.py`) picks the terms it
distils with; adding a term is one entry here plus its function. Every term
is a batch mean computed in float32, so a mixed-precision policy changes
the network's arithmetic, not the loss's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
from keras import ops

from pmkd_tf.errors import UserError


def _f32(x):
    return ops.cast(x, "float32")


def cross_entropy(labels, logits):
    """H(y, P_s): mean sparse softmax cross-entropy (paper eq. 6)."""
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, _f32(logits), from_logits=True))


def logit_kd(teacher_logits, student_logits, temperature: float, scale_by_t2: bool = True):
    """KL(P_t^tau || P_s^tau) summed over classes, averaged over the batch (eq. 5).

    Multiplied by tau^2 by default (Hinton et al.), which keeps its gradients
    on the same scale as the cross-entropy's whatever tau is; the paper's
    eq. 5 omits the factor, so `scale_by_t2=False` gives the literal form.
    """
    t = ops.log_softmax(_f32(teacher_logits) / temperature, axis=-1)
    s = ops.log_softmax(_f32(student_logits) / temperature, axis=-1)
    kl = ops.mean(ops.sum(ops.exp(t) * (t - s), axis=-1))
    return kl * temperature**2 if scale_by_t2 else kl


def feature_distance(teacher_features, student_features):
    """L_FKD = 1/n sum_i ||t_i - s_i||^2 over the n feature taps (eq. 4).

    Each tap's squared distance is a mean over its elements, so taps of
    different sizes weigh alike; no regressor, since shapes already match.
    """
    if len(teacher_features) != len(student_features):
        raise UserError(f"{len(teacher_features)} teacher features but {len(student_features)} student features.")
    terms = [ops.mean(ops.square(_f32(t) - _f32(s))) for t, s in zip(teacher_features, student_features)]
    return ops.sum(ops.stack(terms)) / len(terms)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """rho, alpha and tau of eq. 7 (paper defaults tau=4, alpha=0.9)."""

    rho: float = 0.0
    alpha: float = 0.9
    temperature: float = 4.0
    scale_kd_by_t2: bool = True

    def __post_init__(self) -> None:
        if self.rho < 0:
            raise UserError(f"rho must be >= 0, got {self.rho}.")
        if not 0 <= self.alpha <= 1:
            raise UserError(f"alpha must be in [0, 1], got {self.alpha}.")
        if self.temperature <= 0:
            raise UserError(f"temperature must be > 0, got {self.temperature}.")


@dataclasses.dataclass(frozen=True)
class Term:
    """One term of eq. 7: its weight, its value on a batch, and the hyperparameters it reads."""

    weight: Callable[[LossWeights], float]
    value: Callable[[object, dict, dict, LossWeights], object]  # (labels, student, teacher, weights)
    hyperparameters: tuple[str, ...] = ()


TERMS: dict[str, Term] = {
    "ce": Term(lambda w: 1 - w.alpha, lambda y, s, t, w: cross_entropy(y, s["logits"])),
    "kd": Term(lambda w: w.alpha,
               lambda y, s, t, w: logit_kd(t["logits"], s["logits"], w.temperature, w.scale_kd_by_t2),
               ("alpha", "temperature")),
    "feature": Term(lambda w: w.rho, lambda y, s, t, w: feature_distance(t["features"], s["features"]), ("rho",)),
}


def pmkd_loss(labels, student: dict, teacher: dict | None, weights: LossWeights) -> dict:
    """Every term of eq. 7 and their weighted sum ("loss"), as a dict of scalars.

    With a teacher every term is computed (so each is logged, even at weight
    0); without one (teacher and baseline training) only cross-entropy, at
    weight 1.
    """
    if teacher is None:
        ce = TERMS["ce"].value(labels, student, None, weights)
        return {"ce": ce, "loss": ce}
    terms = {name: term.value(labels, student, teacher, weights) for name, term in TERMS.items()}
    terms["loss"] = sum(TERMS[name].weight(weights) * value for name, value in terms.items())
    return terms
