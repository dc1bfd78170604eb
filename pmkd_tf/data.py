"""Datasets: tfds (CIFAR-10/100, SVHN) or an image folder, as uint8 arrays + tf.data.

Images are decoded once into uint8 arrays (CIFAR-sized data fits in memory
many times over) and every epoch streams from those arrays through a
parallel tf.data map, so the input pipeline never starves the CPU trainer.

Image-folder layout (as `../shared/data/cifar10`):
    <data_dir>/<dataset>/{train,test}/<class>/<image files>
`data_dir` may also point straight at the `<dataset>` folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from pmkd_tf.errors import UserError

ENV_DATA_DIR = "PMKD_DATA_DIR"
DATASETS = ("cifar10", "cifar100", "svhn")
TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
# The paper uses standard CIFAR augmentation and none for SVHN.
AUGMENT = {"cifar10": True, "cifar100": True, "svhn": False}
# Per-channel statistics of the full training sets, so a subsampled run and
# its exported model normalise exactly alike.
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DataError(UserError):
    """A dataset that cannot be found, read or downloaded; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Splits:
    """A dataset as uint8 NHWC images and int32 labels, split three ways.

    `val_*` is held out from the training set (for tuning); it never
    overlaps the test set. `mean`/`std` are per-channel, in [0, 1] units.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def default_data_dir() -> str | None:
    """The image-folder root from `PMKD_DATA_DIR`, or None to use tfds."""
    return os.environ.get(ENV_DATA_DIR) or None


def _subsample(n: int, count: int | None, rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(n)
    return order if count is None else order[: min(count, n)]


def _folder_root(data_dir: str, dataset: str) -> Path:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--data_dir {data_dir} does not exist or is not a folder.")
    for candidate in (root / dataset, root):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise DataError(
        f"No image folder for {dataset!r} under {data_dir}: expected "
        f"{root / dataset}/train/<class>/* and {root / dataset}/test/<class>/*."
    )


def _list_folder(split_dir: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    classes = tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir()))
    files, labels = [], []
    for label, name in enumerate(classes):
        for entry in sorted(os.scandir(split_dir / name), key=lambda e: e.name):
            if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                files.append(entry.path)
                labels.append(label)
    if not files:
        raise DataError(f"{split_dir} holds no images (expected {split_dir}/<class>/*.jpg or *.png).")
    return files, np.asarray(labels, np.int32), classes


def _decode(files: list[str], labels: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode image files in parallel; unreadable or wrongly-sized ones are skipped with a warning."""

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=shape[2], expand_animations=False)
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((files, labels)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors().filter(lambda image, _: tf.reduce_all(tf.shape(image) == shape))
    images, kept = [], []
    for image_batch, label_batch in ds.batch(2048).as_numpy_iterator():
        images.append(image_batch)
        kept.append(label_batch)
    count = sum(len(k) for k in kept)
    if count < len(files):
        logging.warning("Skipped %d of %d image files that are not readable %s images.",
                        len(files) - count, len(files), "x".join(map(str, shape)))
    if not count:
        raise DataError(f"None of the {len(files)} image files could be read as {shape} images.")
    return np.concatenate(images), np.concatenate(kept).astype(np.int32)


def _load_folder(dataset, data_dir, counts, rng, shape):
    root = _folder_root(data_dir, dataset)
    train_files, train_labels, classes = _list_folder(root / "train")
    test_files, test_labels, test_classes = _list_folder(root / "test")
    if classes != test_classes:
        raise DataError(f"{root}: train and test have different class folders: {classes} vs {test_classes}.")
    n_train, n_val, n_test = counts
    order = _subsample(len(train_files), None, rng)
    val_idx = order[:n_val]
    train_idx = order[n_val:] if n_train is None else order[n_val : n_val + n_train]
    test_idx = _subsample(len(test_files), n_test, rng)

    def pick(files, labels, idx):
        idx = np.sort(idx)
        if not len(idx):
            return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int32)
        return _decode([files[i] for i in idx], labels[idx], shape)

    return (*pick(train_files, train_labels, train_idx), *pick(train_files, train_labels, val_idx),
            *pick(test_files, test_labels, test_idx), classes)


def _tfds_arrays(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for x, y in builder.as_dataset(split=split, as_supervised=True).batch(4096).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _load_tfds(dataset, counts, rng):
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAMES[dataset])
    try:
        try:
            train, test = _tfds_arrays(builder, "train"), _tfds_arrays(builder, "test")
        except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
            builder.download_and_prepare()
            train, test = _tfds_arrays(builder, "train"), _tfds_arrays(builder, "test")
    except Exception as error:  # tfds raises many types when a download fails.
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise DataError(
            f"Could not load {dataset!r} through tensorflow-datasets ({type(error).__name__}: {first_line}). "
            f"If this machine is offline, point --data_dir (or {ENV_DATA_DIR}) at an image folder "
            f"<data_dir>/{dataset}/{{train,test}}/<class>/*."
        ) from error
    classes = tuple(builder.info.features["label"].names)
    n_train, n_val, n_test = counts
    order = _subsample(len(train[1]), None, rng)
    val_idx = np.sort(order[:n_val])
    train_idx = np.sort(order[n_val:] if n_train is None else order[n_val : n_val + n_train])
    test_idx = np.sort(_subsample(len(test[1]), n_test, rng))
    return (train[0][train_idx], train[1][train_idx], train[0][val_idx], train[1][val_idx],
            test[0][test_idx], test[1][test_idx], classes)


def load(
    dataset: str,
    data_dir: str | None = None,
    train_examples: int | None = None,
    test_examples: int | None = None,
    validation_examples: int = 0,
    seed: int = 0,
    image_shape: tuple[int, int, int] = (32, 32, 3),
) -> Splits:
    """Load `dataset` from an image folder (`data_dir`) or tensorflow-datasets (None).

    The subsets are a seeded random choice; validation examples are taken
    from the training set before the training subsample, so the two are
    disjoint, and neither ever touches the test set.
    """
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}.")
    for flag, value in (("train_examples", train_examples), ("test_examples", test_examples)):
        if value is not None and value <= 0:
            raise DataError(f"--{flag} must be positive, got {value}.")
    if validation_examples < 0:
        raise DataError(f"--validation_examples must be >= 0, got {validation_examples}.")
    rng = np.random.default_rng(seed)
    counts = (train_examples, validation_examples, test_examples)
    if data_dir:
        parts = _load_folder(dataset, data_dir, counts, rng, image_shape)
    else:
        parts = _load_tfds(dataset, counts, rng)
    mean, std = STATS[dataset]
    return Splits(dataset, *parts[:6], class_names=parts[6], mean=mean, std=std, augment=AUGMENT[dataset])


def normalize(images: tf.Tensor, mean, std) -> tf.Tensor:
    """uint8 (or 0..255 float) images -> per-channel standardised float32."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _augment(image: tf.Tensor) -> tf.Tensor:
    """CIFAR augmentation: zero-pad 4, random 32x32 crop, random horizontal flip."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.random_crop(padded, shape)
    return tf.image.random_flip_left_right(image)


def train_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, mean, std,
                   augment: bool, seed: int) -> tf.data.Dataset:
    """Shuffled, augmented, normalised, batched and prefetched training data."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(labels), seed=seed)
    if augment:
        ds = ds.map(lambda x, y: (_augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(lambda x, y: (normalize(x, mean, std), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, mean, std) -> tf.data.Dataset:
    """Normalised, batched evaluation data in a fixed order."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return ds.map(lambda x, y: (normalize(x, mean, std), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)
