"""The Distiller: one keras.Model that trains a student from an optional teacher.

Each training step runs the teacher once in inference mode (never updated)
and the student once in training mode, takes logits and every feature tap
from that single pass, and applies `losses.pmkd_loss`. With no teacher it is
plain cross-entropy training, so the teacher, the baseline, every KD variant
and all three PMKD phases share this one step. Teacher and student may each
be a single model or a pacemaker ensemble (phase 1 trains both members).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pmkd_tf import losses

TERMS = ("loss", "ce", "kd", "feature")


class Distiller(keras.Model):
    """Trains `student` on `losses.pmkd_loss` against `teacher` (None: CE only).

    Saving a Distiller saves the student alone, which is what deployment and
    the next phase need.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model | None = None,
                 weights: losses.LossWeights | None = None, **kwargs):
        super().__init__(name=kwargs.pop("name", "distiller"), **kwargs)
        self.student = student
        self.teacher = teacher
        self.loss_weights_ = weights or losses.LossWeights()
        if teacher is not None:
            teacher.trainable = False
        names = TERMS if teacher is not None else ("loss", "ce")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Both networks are built functional models, so this wrapper is too.
        self.built = True

    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy]

    def call(self, images, training: bool = False):
        return self.student(images, training=training)

    def _record(self, terms: dict, labels, logits) -> dict:
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        self.accuracy.update_state(labels, logits)
        logs = {m.name: m.result() for m in self.metrics}
        if _multi_worker(self.distribute_strategy):
            # Keras reduces logs across workers along axis 0, which fails on
            # scalars (keras-team/keras#20585); a length-1 vector reduces to
            # the cross-worker mean.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_out = None if self.teacher is None else self.teacher(images, training=False)
        with tf.GradientTape() as tape:
            student_out = self.student(images, training=True)
            terms = losses.pmkd_loss(labels, student_out, teacher_out, self.loss_weights_)
            # Each replica sees 1/R of the global batch and gradients are
            # summed across replicas, so the per-replica mean is divided by R.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = terms["loss"] / replicas
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._record(terms, labels, student_out["logits"])

    def test_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_out = None if self.teacher is None else self.teacher(images, training=False)
        student_out = self.student(images, training=False)
        terms = losses.pmkd_loss(labels, student_out, teacher_out, self.loss_weights_)
        return self._record(terms, labels, student_out["logits"])

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build what `fit` needs without tracing a data batch.

        Keras' version first reduces a batch across replicas, which fails
        under MultiWorkerMirroredStrategy; both networks are already built and
        the metrics are our own, so only the optimizer's slots are missing.
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.student.trainable_variables)

    def save(self, filepath, *args, **kwargs) -> None:
        """Save the student alone (the teacher is an input, not a result)."""
        self.student.save(filepath, *args, **kwargs)


def _multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under a MultiWorkerMirroredStrategy that spans more than one process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1
