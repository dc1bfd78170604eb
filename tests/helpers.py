"""Small helpers several test files share."""

import os

import keras
import numpy as np
import pytest

# Every test, and every subprocess it starts, gets this long before it fails as hung (conftest.py gives it to each
# test). A guard against hangs, never a timing assertion: generous enough that a machine busy with a training beside
# the suite does not trip it (limits of 120-600 s did), short enough that a real hang still ends inside CI's 90 min.
HANG_SECONDS = 1200


def randomise_batch_norm(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization non-trivial statistics, so a wrong kernel or stream changes the logits."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.3, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0.0, 0.3, channels))
    return model


def reshape_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Real CIFAR pixels in another input shape: tiled and cropped to H x W, RGB averaged to grey for one channel."""
    height, width, channels = shape
    tiles = (1, -(-height // images.shape[1]), -(-width // images.shape[2]), 1)
    images = np.tile(images, tiles)[:, :height, :width]
    if channels == 1:
        images = np.round(images.mean(axis=-1, keepdims=True)).astype(np.uint8)
    return images


def require(missing: list[str], what: str) -> None:
    """Skip naming what is missing, or fail under CI=true (where `.ci/run` installs every tool and checks the data)."""
    if missing:
        message = f"{what} impossible: " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
