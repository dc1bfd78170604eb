"""The Distiller: one keras.Model that trains a student from an optional teacher.

Keras' own `train_step` runs the student once in training mode (`call`);
`compute_loss` runs the teacher once in inference mode (never updated) and
sums the method's weighted loss terms (`pmkd_tf.terms`) over the logits and
every feature tap of those two passes. Because the loss lives in
`compute_loss`, Keras applies everything `fit` sets up around it (the loss
scaling of a mixed_float16 policy, the replica scaling of a distribution
strategy, `steps_per_execution`). With no teacher it is plain cross-entropy
training, so the teacher, the baseline, every KD variant and all three PMKD
phases share this one step. Teacher and student may each be a single model
or a pacemaker ensemble (phase 1 trains both members).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from pmkd_tf import terms as loss_terms


class Distiller(keras.Model):
    """Trains `student` on the weighted sum of `terms` (`terms.make`) against `teacher` (default: cross-entropy).

    Its checkpoints (`save_weights`) hold the terms' own weights too; `save`
    saves the student alone.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model | None = None,
                 terms: list[loss_terms.Term] | None = None, **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        self.student = student
        self.teacher = teacher
        self.terms = terms or loss_terms.make((), {})
        if teacher is None and len(self.terms) > 1:
            raise ValueError("Distillation terms need a teacher to learn from.")
        if teacher is not None:
            teacher.trainable = False
        for term in self.terms:
            term.build(student, teacher)
        # "loss" itself is Keras' own tracker; these log each term, the same columns every epoch.
        self.term_trackers = [keras.metrics.Mean(name=term.key) for term in self.terms]
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Both networks are built functional models, so this wrapper is too.
        self.built = True

    def call(self, images, training: bool = False):
        return self.student(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_out = None if self.teacher is None else self.teacher(x, training=False)
        loss = 0.0
        for term, tracker in zip(self.terms, self.term_trackers):
            value = term.compute(y, y_pred, teacher_out)
            tracker.update_state(value)
            loss += term.weight() * value
        # Each replica sees 1/R of the global batch and gradients are summed
        # across replicas, so the per-replica mean is divided by R (Keras'
        # loss tracker multiplies it back for the log).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.accuracy.update_state(y, y_pred["logits"])
        logs = self.get_metrics_result()
        if _multi_worker(self.distribute_strategy):
            # Keras reduces logs across workers along axis 0, which fails on
            # scalars (keras-team/keras#20585); a length-1 vector reduces to
            # the cross-worker mean.
            logs = {name: ops.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build what `fit` needs without tracing a data batch.

        Keras' version first reduces a batch across replicas, which fails
        under MultiWorkerMirroredStrategy (it cannot convert the PerReplica
        batch); both networks are already built and the metrics are our own,
        so only the optimizer's slots are missing. This overrides a private
        Keras method, so setup.cfg pins the Keras minor version it is tested
        with.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)  # the student's and any term's own

    def save(self, filepath, *args, **kwargs) -> None:
        """Save the student alone: what deployment and the next phase need (the teacher is an input, not a result)."""
        self.student.save(filepath, *args, **kwargs)


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under a MultiWorkerMirroredStrategy that spans more than one process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1
