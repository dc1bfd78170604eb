"""The Distiller: teacher frozen, one student pass, metrics, saving, replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pmkd_tf import data, models, terms
from pmkd_tf.distiller import Distiller

TINY = 1 / 16


def _batch(cifar, n=32):
    x = data.normalize(cifar.train_images[:n], cifar.mean, cifar.std)
    return x, cifar.train_labels[:n]


def _pair(net="vgg13"):
    keras.utils.set_random_seed(0)
    return models.get_model(net, "NxN", 10, TINY), models.get_model(net, "1xN", 10, TINY)


def test_step_updates_only_the_student(cifar):
    teacher, student = _pair()
    before_t = [w.numpy().copy() for w in teacher.weights]
    before_s = [w.numpy().copy() for w in student.trainable_weights]
    d = Distiller(student, teacher, terms.make(("kd", "feature"), {"rho": 1.0}))
    d.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    x, y = _batch(cifar)
    logs = d.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "ce", "kd", "feature", "accuracy"}
    for a, b in zip(before_t, teacher.weights):
        np.testing.assert_array_equal(a, b.numpy())  # bit-identical, BN statistics included
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before_s, student.trainable_weights))


def test_total_equals_weighted_sum_of_logged_terms(cifar):
    teacher, student = _pair()
    d = Distiller(student, teacher, terms.make(("kd", "feature"), {"rho": 0.5, "alpha": 0.9, "temperature": 4.0}))
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _batch(cifar)
    logs = d.test_on_batch(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(0.5 * logs["feature"] + 0.9 * logs["kd"] + 0.1 * logs["ce"], rel=1e-5)


def test_pacemaker_as_student_trains_both_members_and_as_teacher(cifar):
    config = models.NetConfig("vgg13", width_multiplier=TINY)
    teacher = models.build(config)
    pacemaker = models.build_pacemaker(config)
    members = [models.pacemaker_member(pacemaker, s) for s in ("1xN", "Nx1")]
    before = [[w.numpy().copy() for w in m.trainable_weights] for m in members]
    d = Distiller(pacemaker, teacher, terms.make(("kd", "feature"), {"rho": 1.0}))
    d.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _batch(cifar)
    d.train_on_batch(x, y)
    for member, old in zip(members, before):
        assert any(not np.array_equal(a, b.numpy()) for a, b in zip(old, member.trainable_weights))
    student = models.build(config.with_filter_shape("1xN"))
    phase2 = Distiller(student, pacemaker, terms.make(("kd", "feature"), {"rho": 1.0}))
    phase2.compile(optimizer=keras.optimizers.SGD(0.1))
    assert np.isfinite(phase2.train_on_batch(x, y, return_dict=True)["loss"])


def test_a_wider_teacher_is_reached_through_regressors_trained_and_checkpointed_but_never_exported(cifar, tmp_path):
    """FitNet's 1x1 regressor is the feature term's own weight: trained with the student, in its checkpoints, not
    in the deployable student; with equal widths (the paper's) there is none."""
    keras.utils.set_random_seed(0)
    teacher, student = (models.get_model("resnet8", shape, 10, width) for shape, width in (("NxN", 0.5), ("1xN", 0.25)))
    d = Distiller(student, teacher, terms.make(("feature",), {}))
    regressors = [v for v in d.trainable_variables if "regressor" in v.path]
    assert [tuple(v.shape) for v in regressors] == [(4, 8), (4, 8), (8, 16), (16, 32)]
    d.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in regressors]
    assert set(d.train_on_batch(*_batch(cifar), return_dict=True)) == {"loss", "ce", "feature", "accuracy"}
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, regressors))
    d.save_weights(tmp_path / "checkpoint.weights.h5")
    again = Distiller(models.get_model("resnet8", "1xN", 10, 0.25), teacher, terms.make(("feature",), {}))
    again.load_weights(tmp_path / "checkpoint.weights.h5")
    for a, b in zip(d.trainable_variables, again.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    d.save(tmp_path / "student.keras")
    assert keras.saving.load_model(tmp_path / "student.keras").count_params() == student.count_params()
    same_width = Distiller(student, models.get_model("resnet8", "NxN", 10, 0.25), terms.make(("feature",), {}))
    assert len(same_width.trainable_variables) == len(student.trainable_variables)


def test_no_teacher_is_plain_cross_entropy(cifar):
    _, student = _pair()
    d = Distiller(student)
    d.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    x, y = _batch(cifar)
    logs = d.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "ce", "accuracy"} and logs["loss"] == pytest.approx(logs["ce"])


def test_saving_a_distiller_saves_the_student(cifar, tmp_path):
    teacher, student = _pair()
    d = Distiller(student, teacher)
    d.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    assert loaded.name == student.name and loaded.count_params() == student.count_params()


def test_mirrored_two_replicas_match_one_device(cifar):
    cpus = tf.config.list_logical_devices("CPU")
    assert len(cpus) >= 2, "tests/conftest.py splits the CPU into two logical devices"
    # Both replicas get the same 8 images, so per-replica batch-norm statistics
    # equal the full batch's and only the replica loss scaling can differ: a
    # plain per-replica mean would double the gradients.
    x, y = _batch(cifar, 8)
    x, y = np.concatenate([x, x]), np.concatenate([y, y])

    def one_step(strategy):
        with strategy.scope():
            teacher, student = _pair()
            d = Distiller(student, teacher, terms.make(("kd", "feature"), {"rho": 1.0}))
            d.compile(optimizer=keras.optimizers.SGD(0.1))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        logs = d.fit(ds, epochs=1, verbose=0).history
        return logs["loss"][0], [w.numpy() for w in student.trainable_weights]

    loss_1, weights_1 = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
    loss_2, weights_2 = one_step(tf.distribute.MirroredStrategy(
        [c.name for c in cpus[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice()))
    assert loss_2 == pytest.approx(loss_1, rel=1e-4)
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_moves_the_student_as_far_as_float32(cifar, policy):
    # mixed_float16 makes `compile` wrap the optimizer in a loss-scale
    # optimizer; a step that did not scale its loss would move the weights
    # 2^15 times too little.
    x, y = _batch(cifar)

    def update(policy_name):
        keras.mixed_precision.set_global_policy(policy_name)
        try:
            teacher, student = _pair()
            before = [w.numpy().copy() for w in student.trainable_weights]
            d = Distiller(student, teacher, terms.make(("kd", "feature"), {"rho": 1.0}))
            d.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
            d.train_on_batch(x, y)
            return sum(float(np.abs(w.numpy() - b).sum()) for w, b in zip(student.trainable_weights, before))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    reference = update("float32")
    assert reference > 0
    assert update(policy) == pytest.approx(reference, rel=0.1)
