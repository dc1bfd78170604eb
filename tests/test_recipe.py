"""The optimiser recipe: coupled (the paper's, PyTorch's) against decoupled (Keras') weight decay."""

import keras
import numpy as np
import pytest

from pmkd_tf.recipe import PRESETS, CoupledSGD, Recipe


def _two_steps(optimizer) -> float:
    variable = keras.Variable(np.array([1.0], "float32"))
    for _ in range(2):
        optimizer.apply([keras.ops.convert_to_tensor(np.array([0.5], "float32"))], [variable])
    return float(variable.numpy()[0])


def test_coupled_decay_is_pytorchs_sgd_by_hand():
    # PyTorch: buf = 0.9 buf + (g + wd v); v -= lr buf, with v=1, g=0.5, wd=0.1, lr=0.1:
    # step 1: buf 0.6, v 0.94; step 2: buf 0.54 + 0.594 = 1.134, v 0.8266.
    assert _two_steps(CoupledSGD(0.1, momentum=0.9, l2=0.1)) == pytest.approx(0.8266, abs=1e-6)


def test_decoupled_decay_is_keras_own_and_weaker_with_momentum():
    decoupled = _two_steps(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.1))
    plain = _two_steps(keras.optimizers.SGD(0.1, momentum=0.9))
    coupled = _two_steps(CoupledSGD(0.1, momentum=0.9, l2=0.1))
    assert coupled < decoupled < plain  # the coupled decay also accumulates in the momentum


def test_recipes_pick_their_kind_and_the_paper_preset_is_coupled():
    assert isinstance(Recipe(weight_decay_kind="coupled").optimizer(10), CoupledSGD)
    assert not isinstance(Recipe().optimizer(10), CoupledSGD)
    assert PRESETS["paper"].weight_decay_kind == PRESETS["converged"].weight_decay_kind == "coupled"
    assert PRESETS["cpu"].weight_decay_kind == "decoupled"
    with pytest.raises(ValueError, match="Unknown weight_decay_kind"):
        Recipe(weight_decay_kind="l1")


def test_the_cosine_schedule_decays_smoothly_to_zero_over_the_phase_and_step_keeps_the_papers_drops():
    cosine = Recipe(epochs=10, learning_rate=0.1, lr_schedule="cosine").schedule(steps_per_epoch=4)
    step = Recipe(epochs=10, learning_rate=0.1).schedule(steps_per_epoch=4)
    assert [float(cosine(s)) for s in (0, 20, 40)] == pytest.approx([0.1, 0.05, 0.0], abs=1e-7)
    assert [float(step(s)) for s in (12, 13, 25, 33)] == pytest.approx([0.1, 0.02, 0.004, 0.0008])  # epochs 3, 6, 8
