"""Each loss term against a value computed by hand."""

import math

import numpy as np
import pytest

from pmkd_tf import losses


def test_cross_entropy_by_hand():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "float32")
    labels = np.array([0, 2])
    expected = (-math.log(math.e**2 / (math.e**2 + 2)) - math.log(1 / (math.e + 2))) / 2
    assert float(losses.cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_logit_kd_by_hand_with_and_without_tau_squared():
    t = np.array([[4.0, 0.0]], "float32")
    s = np.array([[0.0, 0.0]], "float32")
    tau = 2.0
    pt = np.array([math.e**2, 1.0]) / (math.e**2 + 1)
    kl = float(np.sum(pt * np.log(pt / 0.5)))
    assert float(losses.logit_kd(t, s, tau, scale_by_t2=False)) == pytest.approx(kl, rel=1e-5)
    assert float(losses.logit_kd(t, s, tau)) == pytest.approx(kl * tau**2, rel=1e-5)
    assert float(losses.logit_kd(t, t, tau)) == pytest.approx(0.0, abs=1e-6)


def test_feature_distance_averages_taps_of_different_sizes():
    t = [np.zeros((1, 2, 2, 1), "float32"), np.zeros((1, 1, 1, 3), "float32")]
    s = [np.full((1, 2, 2, 1), 2.0, "float32"), np.array([[[[1.0, 0.0, 0.0]]]], "float32")]
    # tap 1: mean of 4 squares of 2 = 4; tap 2: (1 + 0 + 0) / 3
    assert float(losses.feature_distance(t, s)) == pytest.approx((4 + 1 / 3) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="teacher features"):
        losses.feature_distance(t, s[:1])


def test_pmkd_loss_is_the_weighted_sum_of_its_terms():
    rng = np.random.default_rng(0)
    student = {"logits": rng.normal(size=(4, 5)).astype("float32"),
               "features": [rng.normal(size=(4, 3, 3, 2)).astype("float32")]}
    teacher = {"logits": rng.normal(size=(4, 5)).astype("float32"),
               "features": [rng.normal(size=(4, 3, 3, 2)).astype("float32")]}
    labels = np.array([0, 1, 2, 3])
    w = losses.LossWeights(rho=0.7, alpha=0.9, temperature=4.0)
    terms = {k: float(v) for k, v in losses.pmkd_loss(labels, student, teacher, w).items()}
    assert terms["loss"] == pytest.approx(0.7 * terms["feature"] + 0.9 * terms["kd"] + 0.1 * terms["ce"], rel=1e-5)
    alone = losses.pmkd_loss(labels, student, None, w)
    assert set(alone) == {"ce", "loss"} and float(alone["loss"]) == pytest.approx(terms["ce"], rel=1e-6)


@pytest.mark.parametrize("kwargs", [{"rho": -1}, {"alpha": 1.5}, {"alpha": -0.1}, {"temperature": 0}])
def test_weights_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        losses.LossWeights(**kwargs)
