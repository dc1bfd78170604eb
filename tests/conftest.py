"""Shared fixtures: the real CIFAR-10 folder and a small real subset of it."""

import os
from pathlib import Path

import pytest
import tensorflow as tf

from pmkd_tf import data
from helpers import HANG_SECONDS, require

# Two logical CPU devices, so MirroredStrategy has two replicas to compare.
# This must happen before TensorFlow initialises its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One hang budget for the whole suite: each test gets the limit its subprocesses already have."""
    for item in items:
        item.add_marker(pytest.mark.timeout(HANG_SECONDS))


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The image-folder root holding cifar10/ (CI sets PMKD_DATA_DIR and checks it exists)."""
    root = os.environ.get(data.ENV_DATA_DIR) or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (Path(root) / "cifar10" / "train").is_dir():
        require([f"real CIFAR-10 not found under {root}; set {data.ENV_DATA_DIR}"], "Real-data tests")
    return root


@pytest.fixture(scope="session")
def cifar(data_dir) -> data.Splits:
    """A few hundred real CIFAR-10 images: 320 train, 64 validation, 160 test."""
    return data.load("cifar10", data_dir, train_examples=320, test_examples=160, validation_examples=64)
