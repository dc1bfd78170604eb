"""An image folder: <data_dir>/<name>/train/<class>/* and, if present, test/<class>/*.

It is read in steps, each cheap enough to come before the next:
1. list the files: names and sizes (the folder's fingerprint); empty files
   are skipped here;
2. only if a default must be found, read every training file's header with
   Pillow (TensorFlow cannot tell a size without decoding): the most common
   size, and whether every image is grayscale;
3. estimate the memory the chosen subsets take decoded (H x W x C bytes an
   image) against the memory available, and decode them once with
   TensorFlow (`images.decode_files`): into memory if they fit, else only to
   find the files TensorFlow cannot decode and to count the training
   pixels, after which every epoch decodes them again from disk. Whether a
   file is used depends on TensorFlow decoding it, never on the mode or on
   step 2, so both modes see the same files.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

from pmkd_tf.data import images
from pmkd_tf.data.subsets import Counts, Loaded, choose, holdout
from pmkd_tf.errors import DataError

# Pillow band names of a single-channel image: 1-bit, 8-bit, 32-bit int
# (also 16-bit PNGs) and float. Palette ("P") images count as colour, which
# is how TensorFlow decodes them.
_GRAY_BANDS = ("1", "L", "I", "F")
_FORMATS = "JPEG/PNG/BMP/GIF"


def find_root(data_dir: str, dataset: str) -> Path:
    """`<data_dir>/<dataset>`, or `data_dir` itself when it is the dataset's folder (holds train/)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--data_dir {data_dir} does not exist or is not a folder.")
    for candidate in (root / dataset, root):
        if (candidate / "train").is_dir():
            return candidate
    raise DataError(f"No image folder for {dataset!r} under {data_dir}: expected "
                    f"{root / dataset}/train/<class>/<images> (and optionally test/<class>/<images>).")


def _visible(entries) -> list[os.DirEntry]:
    """Entries in name order, without hidden ones (.DS_Store, .ipynb_checkpoints, editors' files)."""
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _header(path: str) -> tuple[int, int, bool] | None:
    """(height, width, grayscale) from the file's header, or None if Pillow cannot read it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width, image.getbands()[0] in _GRAY_BANDS
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return None


class _Split:
    """One split folder (train/ or test/), listed: its non-empty image files, their labels, the fingerprint lines."""

    def __init__(self, split_dir: Path) -> None:
        self.dir = split_dir
        self.classes = tuple(e.name for e in _visible(os.scandir(split_dir)) if e.is_dir())
        listed: list[tuple[int, os.DirEntry]] = []
        ignored = 0
        for label, name in enumerate(self.classes):
            entries = [e for e in _visible(os.scandir(split_dir / name)) if e.is_file()]
            files = [e for e in entries if e.name.lower().endswith(images.IMAGE_SUFFIXES)]
            if not files:
                raise DataError(f"Empty class folder {split_dir / name}: put its images in it (.jpg, .jpeg, .png, "
                                ".bmp, .gif) or remove it.")
            ignored += len(entries) - len(files)
            listed += [(label, e) for e in files]
        if ignored:
            logging.warning("%s: ignored %d files without an image suffix (.jpg, .jpeg, .png, .bmp, .gif).",
                            split_dir, ignored)
        sizes = [e.stat().st_size for _, e in listed]
        # What the fingerprint covers: every listed file's relative path and size.
        self.listing = [(f"{split_dir.name}/{self.classes[label]}/{e.name}", size)
                        for (label, e), size in zip(listed, sizes)]
        kept = [(label, e.path) for (label, e), size in zip(listed, sizes) if size]
        if len(kept) < len(listed):
            logging.warning("Skipped %d of %d image files in %s that are empty (0 bytes).", len(listed) - len(kept),
                            len(listed), split_dir)
        self.files = [path for _, path in kept]
        self.labels = np.asarray([label for label, _ in kept], np.int32)
        for label, name in enumerate(self.classes):
            if not np.any(self.labels == label):
                raise DataError(f"Class folder {split_dir / name} has no readable images: every file in it is empty.")


def _fingerprint(splits: list[_Split]) -> str:
    """sha1 of every listed file's relative path and size: cheap, and changes when files are added,
    removed, renamed or rewritten with another size (file contents are not read)."""
    digest = hashlib.sha1()
    for path, size in sorted(entry for split in splits for entry in split.listing):
        digest.update(f"{path}\t{size}\n".encode())
    return digest.hexdigest()


def _survey(files: list[str]) -> list[tuple[int, int, bool]]:
    """(height, width, grayscale) of every file Pillow can read the header of, in parallel threads."""
    with concurrent.futures.ThreadPoolExecutor(min(32, 4 * (os.cpu_count() or 1))) as pool:
        return [h for h in pool.map(_header, files) if h is not None]


def _default_shape(train: _Split, image_size: tuple[int, int] | None, channels: int | None, name: str,
                   native: images.Shape | None) -> images.Shape:
    """The requested (H, W, C), defaulting to the most common training size and to grayscale iff all are.

    The paper datasets' native 32x32x3 needs no survey; a survey reads every
    training file's header, once, and only when a default is needed.
    """
    if native is not None:
        return (*(image_size or native[:2]), channels or native[2])
    if image_size is not None and channels is not None:
        return (*image_size, channels)
    logging.info("%s: reading the headers of %d training images for the default image size and channels.", name,
                 len(train.files))
    headers = _survey(train.files)
    if not headers:
        raise DataError(f"None of the {len(train.files)} files in {train.dir} is a readable {_FORMATS} image.")
    if image_size is None:
        sizes = collections.Counter((h, w) for h, w, _ in headers)
        # Ties go to the larger size: downscaling loses less than upscaling invents.
        image_size, count = max(sizes.items(), key=lambda item: (item[1], item[0][0] * item[0][1], item[0]))
        if len(sizes) > 1:
            logging.info("%s: the training images come in %d sizes; resizing all to the most common, %dx%d (%d of "
                         "%d images). --image_size=HxW chooses another.", name, len(sizes), *image_size, count,
                         len(headers))
    if channels is None:
        channels = 1 if all(gray for _, _, gray in headers) else 3
        if channels == 1:
            logging.info("%s: every training image is grayscale, so the images have 1 channel (--channels=3 to "
                         "change).", name)
    return (*image_size, channels)


def _report_skipped(split: str, paths: list[str], chosen: np.ndarray, ok: np.ndarray, classes: tuple[str, ...],
                    where: str) -> None:
    """Count one split's files that did not decode (`~ok`) in a warning.

    A class left with no image in the training split is an error (it could
    not be learnt); the validation and test subsets only lose the files (a
    held-out split is chosen before decoding, so a corrupt file can be a
    small class's only test image).
    """
    if not ok.all():
        logging.warning("Skipped %d of %d image files in %s that are not readable %s images (e.g. %s).",
                        int(np.sum(~ok)), len(paths), where, _FORMATS, paths[int(np.flatnonzero(~ok)[0])])
        for label in np.unique(chosen) if split == "train" else ():
            if not np.any(chosen[ok] == label):
                raise DataError(f"Class {classes[label]!r} has no readable images in {where}: none of its "
                                f"{int(np.sum(chosen == label))} files decodes as a {_FORMATS} image; replace or "
                                "remove them.")


def read_folder(dataset: str, data_dir: str, counts: Counts, rng: np.random.Generator,
                image_size: tuple[int, int] | None, channels: int | None, test_fraction: float,
                memory_limit_bytes: int | None, native: images.Shape | None) -> Loaded:
    """The folder's three splits, decoded into memory if they fit under the limit, else kept on disk.

    `native` is the paper dataset's own shape (its defaults, no survey), None for any other folder.
    """
    root = find_root(data_dir, dataset)
    train = _Split(root / "train")
    if len(train.classes) < 2:
        raise DataError(f"{train.dir} has {len(train.classes)} class folder(s); a classifier needs at least two: "
                        f"{train.dir}/<class>/<images>.")
    has_test = (root / "test").is_dir()
    test = _Split(root / "test") if has_test else train
    if test.classes != train.classes:
        raise DataError(f"{root}: train/ and test/ have different class folders (only in train: "
                        f"{sorted(set(train.classes) - set(test.classes))}, only in test: "
                        f"{sorted(set(test.classes) - set(train.classes))}); make them match, or remove test/ to "
                        "hold out --test_fraction of train/.")
    shape = _default_shape(train, image_size, channels, dataset, native)

    train_pool, test_pool = np.arange(len(train.files)), np.arange(len(test.files))
    if not has_test:
        train_pool, test_pool = holdout(train.labels, train.classes, test_fraction, rng, str(train.dir))
        logging.info("%s has no test/ folder: holding out %d%% of each class of train/ as the test split "
                     "(%d images; --test_fraction changes it).", root, round(100 * test_fraction), len(test_pool))
    train_idx, val_idx, test_idx = choose(len(train_pool), len(test_pool), counts, rng, str(train.dir))
    chosen = {"train": (train, train_pool[train_idx], str(train.dir)),
              "val": (train, train_pool[val_idx], f"{train.dir} (validation)"),
              "test": (test, test_pool[test_idx], f"{test.dir}" + ("" if has_test else " (held out)"))}

    needed = int(np.prod(shape)) * sum(len(idx) for _, idx, _ in chosen.values())
    available = images.available_memory()
    if memory_limit_bytes is None:
        memory_limit_bytes = int(images.MEMORY_FRACTION * available) if available is not None else needed
    in_memory = needed <= memory_limit_bytes
    if not in_memory:
        logging.info("%s: %.2f GB of decoded %dx%dx%d images exceed the %.2f GB they may take in memory; reading "
                     "them from disk in every epoch instead (decode and resize per epoch). Checking every file "
                     "once now.", dataset, needed / 1e9, *shape, memory_limit_bytes / 1e9)

    paths = {split: [folder.files[i] for i in idx] for split, (folder, idx, _) in chosen.items()}
    decoded = images.decode_files([p for split in paths.values() for p in split], shape, keep=in_memory,
                                  counted=len(paths["train"]))
    storage, labels, start = {}, {}, 0
    for split, (folder, idx, where) in chosen.items():
        stop = start + len(idx)
        ok = decoded.ok[start:stop]
        _report_skipped(split, paths[split], folder.labels[idx], ok, train.classes, where)
        labels[split] = folder.labels[idx][ok]
        if in_memory:  # views of the one decoded array unless files were skipped
            storage[split] = decoded.images[start:stop] if ok.all() else decoded.images[start:stop][ok]
        else:
            storage[split] = images.ImageFiles(tuple(p for p, kept in zip(paths[split], ok) if kept), shape)
        start = stop
    origin = {"source": "folder", "name": dataset, "path": str(root.resolve()),
              "fingerprint": _fingerprint([train, test] if has_test else [train]),
              "test_fraction": None if has_test else test_fraction}
    return Loaded(storage, labels, train.classes, shape, decoded.histogram, origin)
