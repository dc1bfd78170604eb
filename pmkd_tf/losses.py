"""PMKD's loss terms as small pure functions, composed in one place.

    loss = rho * L_FKD + alpha * L_KD(tau) + (1 - alpha) * L_CE      (paper eq. 7)

Every term is a batch mean computed in float32 (so a bf16 policy only
changes the network's arithmetic, not the loss's).
"""

from __future__ import annotations

import dataclasses

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


def pmkd_loss(labels, student: dict, teacher: dict | None, weights: LossWeights) -> dict:
    """Every term of eq. 7 and their weighted sum, as a dict of scalars.

    With no teacher (teacher and baseline training) only cross-entropy is
    used, whatever the weights say.
    """
    terms = {"ce": cross_entropy(labels, student["logits"])}
    if teacher is None:
        terms["loss"] = terms["ce"]
        return terms
    terms["kd"] = logit_kd(teacher["logits"], student["logits"], weights.temperature, weights.scale_kd_by_t2)
    terms["feature"] = feature_distance(teacher["features"], student["features"])
    terms["loss"] = weights.rho * terms["feature"] + weights.alpha * terms["kd"] + (1 - weights.alpha) * terms["ce"]
    return terms
