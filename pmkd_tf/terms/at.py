"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) over the feature taps FitNet uses.

A tap's attention map is the channel mean of |A|^p at each pixel, flattened
and L2-normalised, so it says where a network looks, not how strongly;
the term is beta/2 times the sum over taps of the mean squared difference
of the two maps, with the paper's CIFAR settings beta = 1000, p = 2.
"""

from __future__ import annotations

from keras import ops

from pmkd_tf.terms.base import Hyperparameter, Range, Term, f32


def attention(feature, p: float):
    """The L2-normalised spatial attention map of a (B, H, W, C) feature: (B, H * W)."""
    energy = ops.mean(ops.power(ops.abs(f32(feature)), p), axis=-1)
    flat = ops.reshape(energy, (ops.shape(energy)[0], -1))
    return flat / ops.maximum(ops.norm(flat, axis=-1, keepdims=True), 1e-12)


class AttentionTransfer(Term):
    key = "at"
    hyperparameters = (
        Hyperparameter("beta", 1000.0, "Weight of the attention-transfer loss (beta/2 times the sum over taps; "
                       "its paper's CIFAR value 1000).", "must be >= 0", lambda v: v >= 0, Range(10.0, 1e4, log=True)),
        Hyperparameter("at_p", 2.0, "Exponent p of the attention maps, sum over channels of |A|^p.", "must be > 0",
                       lambda v: v > 0),
    )

    def weight(self) -> float:
        return self.values["beta"] / 2

    def compute(self, labels, student, teacher):
        p = self.values["at_p"]
        pairs = zip(teacher["features"], student["features"], strict=True)
        return ops.sum(ops.stack([ops.mean(ops.square(attention(t, p) - attention(s, p))) for t, s in pairs]))
