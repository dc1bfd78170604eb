"""H(y, P_s): cross-entropy with the labels (paper eq. 6), in every phase."""

from __future__ import annotations

import keras
from keras import ops

from pmkd_tf.terms.base import Hyperparameter, Term, f32


class CrossEntropy(Term):
    """Mean softmax cross-entropy, weighted 1 - alpha (alpha is 0 without a logit term, so 1).

    Label smoothing (Szegedy et al. 2016) moves that share of each label's
    probability evenly onto every class; at 0, the paper's hard labels, the
    term is the plain sparse cross-entropy it always was.
    """

    key = "ce"
    hyperparameters = (
        Hyperparameter("label_smoothing", 0.0, "Share of each label spread evenly over the classes (0: hard labels, "
                       "the paper's).", "must be in [0, 1)", lambda v: 0 <= v < 1),
    )

    def weight(self) -> float:
        return 1 - self.values.get("alpha", 0.0)

    def compute(self, labels, student, teacher):
        logits, smoothing = f32(student["logits"]), self.values["label_smoothing"]
        if not smoothing:
            return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        targets = ops.one_hot(ops.cast(labels, "int32"), ops.shape(logits)[-1])
        return ops.mean(keras.losses.categorical_crossentropy(targets, logits, from_logits=True,
                                                             label_smoothing=smoothing))
