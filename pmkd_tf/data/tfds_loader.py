"""A tensorflow-datasets image classification dataset (`image` and `label` features), in memory."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from pmkd_tf.data import images
from pmkd_tf.data.subsets import Counts, Loaded, choose, holdout
from pmkd_tf.errors import DataError


def _arrays(ds: tf.data.Dataset, shape: images.Shape) -> tuple[np.ndarray, np.ndarray]:
    """A tfds split as (uint8 images fitted to `shape`, int32 labels), in the split's stored order."""
    ds = ds.map(lambda ex: (images.fit(ex["image"], shape), ex["label"]), num_parallel_calls=tf.data.AUTOTUNE)
    pixels, labels = [np.zeros((0, *shape), np.uint8)], [np.zeros((0,), np.int64)]
    for x, y in ds.batch(images.batch_size(shape)).as_numpy_iterator():
        pixels.append(x)
        labels.append(y)
    return np.concatenate(pixels), np.concatenate(labels).astype(np.int32)


def _builder(name: str):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(f"tensorflow-datasets has no dataset {name!r}; see "
                        "https://www.tensorflow.org/datasets/catalog for the names.") from error
    features = builder.info.features
    keys = sorted(features.keys())
    if not ("image" in keys and isinstance(features["image"], tfds.features.Image)
            and "label" in keys and isinstance(features["label"], tfds.features.ClassLabel)):
        raise DataError(f"tfds:{name} is not an image classification dataset: it needs an 'image' and a "
                        f"'label' (class) feature, and has {', '.join(keys)}.")
    if features["image"].dtype != tf.uint8:
        raise DataError(f"tfds:{name} has {features['image'].dtype.name} images; only 8-bit images are supported.")
    return builder


def read_tfds(name: str, dataset: str, counts: Counts, rng: np.random.Generator, image_size: tuple[int, int] | None,
         channels: int | None, test_fraction: float, memory_limit_bytes: int | None, offline_hint: str) -> Loaded:
    """tfds `name` (asked for as `dataset`) decoded into memory, downloading and preparing it if needed.

    Its native size and channel count come from the builder's features; a
    dataset of varying image sizes needs `image_size`. Without a "test" split,
    a per-class `holdout` of "train" is the test split. Larger-than-memory
    tfds datasets are refused before reading (tfds reads records in order, so
    there is no cheap on-disk mode with a seeded random subset).
    """
    builder = _builder(name)
    height, width, native_channels = builder.info.features["image"].shape
    if image_size is None and (height is None or width is None):
        raise DataError(f"The images of {dataset} vary in size; pass --image_size=HxW.")
    shape = (*(image_size or (height, width)), channels or (1 if native_channels == 1 else 3))
    try:
        try:
            train_ds = builder.as_dataset(split="train")
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
            builder.download_and_prepare()
            train_ds = builder.as_dataset(split="train")
    except Exception as error:  # tfds raises many types when a download fails.
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise DataError(f"Could not load {dataset!r} through tensorflow-datasets ({type(error).__name__}: "
                        f"{first_line}). {offline_hint}") from error
    # Split names are known once a dataset is prepared (tfds' mock data knows none and has every split).
    known = builder.info.splits
    has_test = not known or "test" in known
    if known:
        needed = int(np.prod(shape)) * sum(known[s].num_examples for s in known if s in ("train", "test"))
        available = images.available_memory()
        limit = memory_limit_bytes if memory_limit_bytes is not None else (
            int(images.MEMORY_FRACTION * available) if available is not None else needed)
        if needed > limit:
            raise DataError(f"{dataset} would take {needed / 1e9:.2f} GB decoded, more than the {limit / 1e9:.2f} GB "
                            "it may take in memory; export it to an image folder (read from disk) or use a smaller "
                            "--image_size.")
    train = _arrays(train_ds, shape)
    if has_test:
        test = _arrays(builder.as_dataset(split="test"), shape)
        train_pool, test_pool = np.arange(len(train[1])), np.arange(len(test[1]))
    else:
        test = train
        train_pool, test_pool = holdout(train[1], tuple(builder.info.features["label"].names), test_fraction, rng,
                                        dataset)
        logging.info("%s has no test split: holding out %d%% of each class of train as the test split (%d images; "
                     "--test_fraction changes it).", dataset, round(100 * test_fraction), len(test_pool))
    train_idx, val_idx, test_idx = choose(len(train_pool), len(test_pool), counts, rng, dataset)
    picks = {"train": (train, train_pool[train_idx]), "val": (train, train_pool[val_idx]),
             "test": (test, test_pool[test_idx])}
    storage = {split: arrays[0][idx] for split, (arrays, idx) in picks.items()}
    labels = {split: arrays[1][idx] for split, (arrays, idx) in picks.items()}
    origin = {"source": "tfds", "name": dataset, "tfds_name": name, "tfds_version": str(builder.info.version),
              "test_fraction": None if has_test else test_fraction}
    return Loaded(storage, labels, tuple(builder.info.features["label"].names), shape,
                  images.histogram(storage["train"]), origin)
