"""`Splits`: a loaded dataset, and the tf.data datasets training and evaluation read from it."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from pmkd_tf.data.images import ImageFiles, read

AUGMENTS = ("crop_flip", "crop", "none")
SPLITS = ("train", "val", "test")


def normalize(images: tf.Tensor, mean, std) -> tf.Tensor:
    """uint8 (or 0..255 float) images -> per-channel standardised float32."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def augment_image(image: tf.Tensor, seed: tf.Tensor, flip: bool) -> tf.Tensor:
    """The CIFAR augmentation for any H x W: zero-pad 4, random crop back to H x W, (flip) random left-right flip.

    Stateless ops with a per-image `seed`: the result depends on nothing
    else, not on which thread of the parallel map ran first, so a seeded
    run is reproducible and the two storage modes augment identically.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed) if flip else image


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """A dataset split three ways: uint8 NHWC images and int32 labels, plus what a run must record.

    `val` is held out from the training set (for tuning); it never overlaps
    the test set. `mean`/`std` are per-channel, in [0, 1] units. `storage`
    maps each split to its images: a uint8 array (in memory) or
    `ImageFiles` (on disk, decoded in every epoch); `train_dataset`
    and `eval_dataset` read either. `identity` is a JSON-able description
    of exactly which data this is (see `data.load`).
    """

    name: str
    train_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    identity: dict
    storage: dict[str, np.ndarray | ImageFiles]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_examples(self, split: str) -> int:
        """Examples in "train", "val" or "test" (without decoding anything)."""
        return len(self._labels(split))

    @property
    def in_memory(self) -> bool:
        """False when the images are read from disk in every epoch (too large to hold)."""
        return all(isinstance(s, np.ndarray) for s in self.storage.values())

    # The decoded images as arrays. On disk they are decoded on first access
    # and kept: fine for the test and calibration images the exporter reads;
    # training never asks (it uses `train_dataset`).
    @functools.cached_property
    def train_images(self) -> np.ndarray:
        return self._pixels("train")

    @functools.cached_property
    def val_images(self) -> np.ndarray:
        return self._pixels("val")

    @functools.cached_property
    def test_images(self) -> np.ndarray:
        return self._pixels("test")

    def _pixels(self, split: str) -> np.ndarray:
        stored = self.storage[split]
        return stored if isinstance(stored, np.ndarray) else stored.decode()

    def _labels(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return getattr(self, f"{split}_labels")

    def _images(self, split: str, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Turn (stored image or file name, label) pairs into (uint8 image, label) pairs."""
        if isinstance(self.storage[split], np.ndarray):
            return ds
        shape = self.image_shape
        return ds.map(lambda path, y: (read(path, shape), y), num_parallel_calls=tf.data.AUTOTUNE)

    def _stored(self, split: str) -> tuple[np.ndarray | tf.Tensor, np.ndarray]:
        """A split's stored images (or the file names to decode them from) and its labels."""
        stored = self.storage[split]
        source = stored if isinstance(stored, np.ndarray) else tf.constant(list(stored.paths), tf.string)
        return source, self._labels(split)

    def _slices(self, split: str) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(self._stored(split))

    def train_dataset(self, batch_size: int, seed: int, epoch: int | tf.Variable = 0) -> tf.data.Dataset:
        """One epoch of shuffled, augmented, normalised, batched and prefetched training data.

        Epoch e's order and crops are drawn from (seed, e) alone, so a phase
        resumed at epoch e sees what an uninterrupted one would have seen
        (tf.data's own reshuffle_each_iteration restarts its sequence in every
        new process: each sitting would replay the first epochs' batches).
        `epoch` may be a variable: each iteration of the dataset then draws the
        epoch the variable holds when iterated (`pipeline.EpochData` sets it as
        each of Keras' epochs begins). Both storage modes draw the same order
        and crops, so they yield the same batches; on disk only the file names
        are shuffled and each image is decoded when its turn comes.
        """
        source, labels = (tf.convert_to_tensor(t) for t in self._stored("train"))
        n, flip, key = self.num_examples("train"), self.augment == "crop_flip", tf.constant([seed, 0], tf.int64)

        def draw(index: tf.Tensor) -> tf.data.Dataset:
            # Stateless ops, not Dataset.shuffle: its seed cannot be a tensor and mixes in the global seed.
            epoch_key = tf.random.experimental.stateless_fold_in(key, index)
            order = tf.random.experimental.stateless_shuffle(tf.range(n), epoch_key)
            # Gathered a batch at a time: one call per image would cost more than the augmentation.
            ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
                lambda i: (tf.gather(source, i), tf.gather(labels, i))).unbatch()
            ds = self._images("train", ds)
            if self.augment != "none":
                # One seed pair per image, from the epoch's key and the image's place in the epoch.
                ds = ds.enumerate().map(
                    lambda i, xy: (augment_image(xy[0], tf.random.experimental.stateless_fold_in(epoch_key, i), flip),
                                   xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
            return ds.batch(batch_size)

        mean, std = self.mean, self.std
        # The epoch is read when the dataset is iterated (a variable's value then), not when it is built.
        ds = tf.data.Dataset.range(1).map(lambda _: tf.cast(tf.convert_to_tensor(epoch), tf.int64)).flat_map(draw)
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
        ds = ds.map(lambda x, y: (normalize(x, mean, std), y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
        """Normalised, batched data of one split ("val", "test" or unaugmented "train") in a fixed order."""
        mean, std = self.mean, self.std
        ds = self._images(split, self._slices(split)).batch(batch_size)
        return ds.map(lambda x, y: (normalize(x, mean, std), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE)
