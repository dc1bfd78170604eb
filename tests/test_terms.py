"""Each loss term against a value computed by hand, and what the registry derives from the terms."""

import math

import numpy as np
import pytest

from pmkd_tf import terms
from pmkd_tf.errors import UserError


def _value(key, student, teacher=None, labels=None, **given):
    term = terms.make([key] if key != "ce" else [], given)[-1]
    return float(term.compute(labels, student, teacher)), term.weight()


def test_cross_entropy_by_hand():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "float32")
    expected = (-math.log(math.e**2 / (math.e**2 + 2)) - math.log(1 / (math.e + 2))) / 2
    value, weight = _value("ce", {"logits": logits}, labels=np.array([0, 2]))
    assert value == pytest.approx(expected, rel=1e-5) and weight == 1.0  # no logit term: alpha is 0


def test_logit_kd_by_hand_with_and_without_tau_squared():
    t, s = {"logits": np.array([[4.0, 0.0]], "float32")}, {"logits": np.array([[0.0, 0.0]], "float32")}
    pt = np.array([math.e**2, 1.0]) / (math.e**2 + 1)
    kl = float(np.sum(pt * np.log(pt / 0.5)))
    assert _value("kd", s, t, temperature=2.0, scale_kd_by_t2=False) == pytest.approx((kl, 0.9), rel=1e-5)
    assert _value("kd", s, t, temperature=2.0)[0] == pytest.approx(kl * 4, rel=1e-5)
    assert _value("kd", t, t)[0] == pytest.approx(0.0, abs=1e-6)
    assert terms.make(["kd"], {"alpha": 0.7})[0].weight() == pytest.approx(0.3)  # CE gets 1 - alpha


def test_label_smoothing_by_hand():
    logits = np.array([[2.0, 0.0, 0.0]], "float32")
    log_p = np.log(np.exp(logits[0]) / np.exp(logits[0]).sum())
    targets = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])  # 0.1 of the label spread over the 3 classes
    value, _ = _value("ce", {"logits": logits}, labels=np.array([0]), label_smoothing=0.1)
    assert value == pytest.approx(float(-(targets * log_p).sum()), rel=1e-5)


def test_feature_distance_averages_taps_of_different_sizes():
    t = {"features": [np.zeros((1, 2, 2, 1), "float32"), np.zeros((1, 1, 1, 3), "float32")]}
    s = {"features": [np.full((1, 2, 2, 1), 2.0, "float32"), np.array([[[[1.0, 0.0, 0.0]]]], "float32")]}
    # tap 1: mean of 4 squares of 2 = 4; tap 2: (1 + 0 + 0) / 3
    assert _value("feature", s, t, rho=0.5) == pytest.approx(((4 + 1 / 3) / 2, 0.5), rel=1e-6)


def test_attention_transfer_by_hand():
    # One 1x2 tap, 2 channels. Student |A|^2 channel means: (1+0)/2, (0+4)/2 -> (0.5, 2) -> normalised;
    # the teacher looks only at the first pixel: (1, 0).
    s = {"features": [np.array([[[[1.0, 0.0], [0.0, 2.0]]]], "float32")]}
    t = {"features": [np.array([[[[3.0, 3.0], [0.0, 0.0]]]], "float32")]}
    student_map = np.array([0.5, 2.0]) / math.hypot(0.5, 2.0)
    expected = float(np.mean((student_map - np.array([1.0, 0.0])) ** 2))
    assert _value("at", s, t) == pytest.approx((expected, 500.0), rel=1e-5)  # weight beta / 2
    assert _value("at", t, t)[0] == pytest.approx(0.0, abs=1e-7)
    # p = 1: channel means of |A| are (0.5, 1).
    student_map = np.array([0.5, 1.0]) / math.hypot(0.5, 1.0)
    expected = float(np.mean((student_map - np.array([1.0, 0.0])) ** 2))
    assert _value("at", s, t, at_p=1.0)[0] == pytest.approx(expected, rel=1e-5)


def test_the_registry_is_found_from_the_package_and_phases_record_eq7_as_before():
    assert set(terms.TERMS) == {"ce", "kd", "feature", "at"}
    assert [h.name for h in terms.TERMS["at"].hyperparameters] == ["beta", "at_p"]
    # Eq. 7's weights in the form every committed phase recorded them; AT's only where AT is used.
    assert terms.values(["kd"], {"rho": 3}) == {"rho": 0.0, "alpha": 0.9, "temperature": 4.0, "scale_kd_by_t2": True}
    assert terms.values(["at"], {})["beta"] == 1000.0 and terms.values(["at"], {})["at_p"] == 2.0


@pytest.mark.parametrize("given, message", [({"rho": -1}, "rho must be >= 0"), ({"alpha": 1.5}, "alpha must be in"),
                                            ({"temperature": 0}, "temperature must be > 0"),
                                            ({"beta": -1}, "beta must be >= 0"), ({"gamma": 1}, "Unknown hyper")])
def test_values_out_of_range_are_refused(given, message):
    with pytest.raises(UserError, match=message):
        terms.validate(given)
