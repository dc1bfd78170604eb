"""H(y, P_s): cross-entropy with the labels (paper eq. 6), in every phase."""

from __future__ import annotations

import keras
from keras import ops

from pmkd_tf.terms.base import Term, f32


class CrossEntropy(Term):
    """Mean sparse softmax cross-entropy, weighted 1 - alpha (alpha is 0 without a logit term, so 1)."""

    key = "ce"

    def weight(self) -> float:
        return 1 - self.values.get("alpha", 0.0)

    def compute(self, labels, student, teacher):
        return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, f32(student["logits"]),
                                                                    from_logits=True))
