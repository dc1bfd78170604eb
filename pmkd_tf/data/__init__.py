"""Datasets: the paper's three, any tensorflow-datasets image classifier, or any image folder.

`load` returns `Splits`: uint8 images and int32 labels split into train,
validation and test, the image shape, normalisation statistics,
augmentation and class names, and an `identity` that says exactly which
data a run saw. Images are decoded once into memory when they fit (most do,
many times over) and every epoch streams from those arrays through a
parallel tf.data map; a folder too large for memory is read from disk in
every epoch instead, with the same results.

Datasets, by name:
- `cifar10`, `cifar100`, `svhn`: an image folder `<data_dir>/<name>/` if a
  `data_dir` is given, else tensorflow-datasets; the paper's augmentation.
- `tfds:<name>`: any tensorflow-datasets dataset with `image` and `label`
  features, e.g. `tfds:mnist`.
- anything else: an image folder `<data_dir>/<name>/train/<class>/*` and, if
  present, `test/<class>/*` (else a seeded per-class share of train/ is the
  test split). JPEG, PNG, BMP and GIF files of any sizes, colour and
  grayscale mixed. `data_dir` may also point straight at the `<name>` folder.
"""

from __future__ import annotations

import os
import re

import numpy as np
from absl import logging

from pmkd_tf.data import folder, tfds_loader
from pmkd_tf.data.images import IMAGE_SUFFIXES, ImageFiles
from pmkd_tf.data.splits import AUGMENTS, Splits, normalize
from pmkd_tf.data.subsets import Counts
from pmkd_tf.errors import DataError

ENV_DATA_DIR = "PMKD_DATA_DIR"
DATASETS = ("cifar10", "cifar100", "svhn")
DATASET_HELP = ("cifar10, cifar100, svhn, tfds:<name> (a tensorflow-datasets image classifier), or the name of an "
                "image folder <data_dir>/<name>/train/<class>/*")
TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
NATIVE_SHAPE = (32, 32, 3)
# The paper uses standard CIFAR augmentation and none for SVHN.
AUGMENT = {"cifar10": "crop_flip", "cifar100": "crop_flip", "svhn": "none"}
# Per-channel statistics of the paper datasets' full training sets.
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
_TFDS_PREFIX = "tfds:"
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

__all__ = ["AUGMENTS", "DATASETS", "DATASET_HELP", "ENV_DATA_DIR", "IMAGE_SUFFIXES", "STATS", "DataError",
           "ImageFiles", "Splits", "default_data_dir", "load", "normalize", "parse_image_size"]


def default_data_dir() -> str | None:
    """The image-folder root from `PMKD_DATA_DIR`, or None to use tfds."""
    return os.environ.get(ENV_DATA_DIR) or None


def parse_image_size(text: str) -> tuple[int, int]:
    """"24x96" -> (24, 96): rows x columns, as `--image_size` takes it."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or not all(int(g) > 0 for g in match.groups()):
        raise DataError(f"--image_size must be HxW (rows x columns, both positive), e.g. 24x96; got {text!r}.")
    return int(match.group(1)), int(match.group(2))


def _check_arguments(train_examples, test_examples, validation_examples, image_size, channels, augment,
                     test_fraction) -> None:
    for flag, value in (("train_examples", train_examples), ("test_examples", test_examples)):
        if value is not None and value <= 0:
            raise DataError(f"--{flag} must be positive, got {value}.")
    if validation_examples < 0:
        raise DataError(f"--validation_examples must be >= 0, got {validation_examples}.")
    if image_size is not None and (len(image_size) != 2 or not all(int(s) == s and s > 0 for s in image_size)):
        raise DataError(f"--image_size must be HxW with positive H and W, got {image_size}.")
    if channels not in (None, 1, 3):
        raise DataError(f"--channels must be 1 (grayscale) or 3 (colour), got {channels}.")
    if augment is not None and augment not in AUGMENTS:
        raise DataError(f"--augment must be one of {', '.join(AUGMENTS)}, got {augment!r}.")
    if not 0 < test_fraction < 1:
        raise DataError(f"--test_fraction must be between 0 and 1, got {test_fraction}.")


def load(
    dataset: str,
    data_dir: str | None = None,
    train_examples: int | None = None,
    test_examples: int | None = None,
    validation_examples: int = 0,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    augment: str | None = None,
    test_fraction: float = 0.2,
    memory_limit_bytes: int | None = None,
) -> Splits:
    """Load `dataset` (see the module docstring) and choose its seeded subsets.

    Args:
      dataset: `cifar10`/`cifar100`/`svhn`, `tfds:<name>`, or an image folder's name.
      data_dir: the image-folder root; None loads the paper datasets from tfds.
      train_examples, test_examples: subset sizes (None = all); validation
        examples come off the training set first, so the three never overlap.
      seed: seeds the subsets and a folder's held-out test split.
      image_size: (H, W) every image is resized to; default the dataset's
        native size, for a folder its most common training size.
      channels: 1 or 3; default 1 if every training image is grayscale.
      augment: `crop_flip`, `crop` or `none`; default the paper's choice for
        its datasets (SVHN: none), else `crop_flip`.
      test_fraction: share of each class held out as the test split of a
        folder (or tfds dataset) with no test split.
      memory_limit_bytes: decoded images larger than this are read from disk
        in every epoch (folders) or refused (tfds); default a quarter of the
        available memory (`images.MEMORY_FRACTION`). The storage mode does not
        change the results, so it is not part of `identity`.

    Normalisation statistics are measured on the training subset, except
    that the paper datasets at their native 32x32x3 keep their published
    full-training-set statistics (`STATS`): every model in our tables and
    every committed teacher was trained with exactly those constants, and a
    subsampled run normalises exactly as the full run does, so its results
    and exported models stay comparable.

    `identity` holds: source ("folder" or "tfds"), name, the folder's path
    and fingerprint (sha1 of its files' relative paths and sizes) or the
    tfds name and version, test_fraction (None when the dataset has its own
    test split), image_shape, mean, std, statistics ("published" or
    "train"), augment, the three subset sizes and the seed.
    """
    _check_arguments(train_examples, test_examples, validation_examples, image_size, channels, augment,
                     test_fraction)
    image_size = None if image_size is None else tuple(int(s) for s in image_size)
    counts = Counts(train_examples, validation_examples, test_examples)
    rng = np.random.default_rng(seed)
    offline = (f"If this machine is offline, point --data_dir (or {ENV_DATA_DIR}) at an image folder "
               f"<data_dir>/{dataset.removeprefix(_TFDS_PREFIX)}/{{train,test}}/<class>/*.")
    options = (counts, rng, image_size, channels, test_fraction, memory_limit_bytes)
    if dataset.startswith(_TFDS_PREFIX) and dataset[len(_TFDS_PREFIX):]:
        loaded = tfds_loader.read_tfds(dataset[len(_TFDS_PREFIX):], dataset, *options, offline)
    elif data_dir and _FOLDER_NAME.fullmatch(dataset):
        loaded = folder.read_folder(dataset, data_dir, *options, NATIVE_SHAPE if dataset in DATASETS else None)
    elif dataset in DATASETS:
        loaded = tfds_loader.read_tfds(TFDS_NAMES[dataset], dataset, *options, offline)
    elif _FOLDER_NAME.fullmatch(dataset):
        raise DataError(f"Unknown dataset {dataset!r}: not one of cifar10, cifar100, svhn or tfds:<name>; for an "
                        f"image folder pass --data_dir (or set {ENV_DATA_DIR}) to the folder holding "
                        f"{dataset}/train/<class>/*.")
    else:
        raise DataError(f"Invalid dataset {dataset!r}; valid datasets: {DATASET_HELP} (a plain folder name).")

    published = dataset in DATASETS and loaded.image_shape == NATIVE_SHAPE
    mean, std = STATS[dataset] if published else loaded.histogram.mean_std()
    augment = augment or AUGMENT.get(dataset, "crop_flip")
    labels = loaded.labels
    identity = {
        **loaded.origin,
        "image_shape": list(loaded.image_shape),
        "mean": list(mean),
        "std": list(std),
        "statistics": "published" if published else "train",
        "augment": augment,
        "train_examples": len(labels["train"]),
        "validation_examples": len(labels["val"]),
        "test_examples": len(labels["test"]),
        "seed": seed,
    }
    splits = Splits(dataset, labels["train"], labels["val"], labels["test"], loaded.class_names,
                    loaded.image_shape, mean, std, augment, identity, loaded.storage)
    logging.info("%s: %d train, %d validation, %d test images of %dx%dx%d in %d classes (%s), mean %s, std %s (%s), "
                 "augment %s.", dataset, *(len(labels[s]) for s in ("train", "val", "test")), *loaded.image_shape,
                 splits.num_classes, "in memory" if splits.in_memory else "read from disk every epoch",
                 mean, std, identity["statistics"], augment)
    return splits
