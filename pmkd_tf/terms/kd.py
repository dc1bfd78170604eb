"""L_KD: KL(P_t^tau || P_s^tau) of the softened logits (Hinton et al.; paper eq. 5)."""

from __future__ import annotations

from keras import ops

from pmkd_tf.terms.base import Hyperparameter, Range, Term, f32


class LogitKD(Term):
    """Summed over classes, averaged over the batch, weighted alpha.

    Multiplied by tau^2 by default (Hinton et al.), which keeps its gradients
    on the cross-entropy's scale whatever tau is; the paper's eq. 5 omits the
    factor, which `--noscale_kd_by_t2` gives.
    """

    key = "kd"
    hyperparameters = (
        Hyperparameter("alpha", 0.9, "Weight of the logit KD loss; CE gets 1 - alpha.", "must be in [0, 1]",
                       lambda v: 0 <= v <= 1, Range(0.5, 0.99), unused=0.0, in_every_table=True),
        Hyperparameter("temperature", 4.0, "KD temperature tau.", "must be > 0", lambda v: v > 0,
                       Range(1.0, 16.0, log=True), unused=4.0, in_every_table=True),
        Hyperparameter("scale_kd_by_t2", True, "Multiply the KD loss by tau^2 (Hinton et al.; the paper's eq. 5 "
                       "does not).", unused=True),
    )

    def weight(self) -> float:
        return self.values["alpha"]

    def compute(self, labels, student, teacher):
        tau = self.values["temperature"]
        t = ops.log_softmax(f32(teacher["logits"]) / tau, axis=-1)
        s = ops.log_softmax(f32(student["logits"]) / tau, axis=-1)
        kl = ops.mean(ops.sum(ops.exp(t) * (t - s), axis=-1))
        return kl * tau**2 if self.values["scale_kd_by_t2"] else kl
