"""What every reader of a dataset hands to `data.load`, and the seeded choice of subsets they share."""

from __future__ import annotations

import dataclasses

import numpy as np

from pmkd_tf.errors import DataError
from pmkd_tf.data.images import ImageFiles, PixelHistogram, Shape


@dataclasses.dataclass(frozen=True)
class Counts:
    """How many examples of each split a run asked for (None = all)."""

    train: int | None
    validation: int
    test: int | None


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One dataset's three splits as a reader found them, before `data.load` adds defaults and identity.

    `storage` maps "train"/"val"/"test" to a uint8 NHWC array (in memory) or
    `ImageFiles` (on disk); `histogram` counts the training split's pixels;
    `origin` is the part of `Splits.identity` only the reader knows: where
    the data came from and how the test split was made.
    """

    storage: dict[str, np.ndarray | ImageFiles]
    labels: dict[str, np.ndarray]
    class_names: tuple[str, ...]
    image_shape: Shape
    histogram: PixelHistogram
    origin: dict


def holdout(labels: np.ndarray, class_names: tuple[str, ...], fraction: float, rng: np.random.Generator,
            where: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a seeded per-class split of a training set with no test split.

    Each class gives round(fraction x its size) images to the test split,
    at least one and never all, so every class is both trained and measured
    and the class balance of the test split is the training set's.
    """
    train, test = [], []
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise DataError(f"{where}: class {name!r} has {len(members)} readable image(s); holding out a test split "
                            "needs at least 2 per class (add images, or a test/<class>/ folder).")
        count = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
        chosen = rng.permutation(members)
        test.append(chosen[:count])
        train.append(chosen[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def choose(train_pool: int, test_pool: int, counts: Counts, rng: np.random.Generator,
           where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, validation, test) indices into the two pools: a seeded random choice.

    Validation examples come off the training pool before the training
    subsample, so the two are disjoint and neither touches the test pool;
    asking for more examples than exist takes them all. The random draws are
    the ones the loader has always made, so the CIFAR subsets of earlier
    runs are unchanged.
    """
    order = rng.permutation(train_pool)
    if counts.validation >= train_pool:
        raise DataError(f"--validation_examples={counts.validation} leaves no training images: {where} has "
                        f"{train_pool}; ask for fewer.")
    val = order[:counts.validation]
    end = None if counts.train is None else counts.validation + counts.train
    train = order[counts.validation:end]
    test = rng.permutation(test_pool)[:counts.test]
    return np.sort(train), np.sort(val), np.sort(test)
