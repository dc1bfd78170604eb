"""Image files -> fixed-size uint8 images, with TensorFlow ops only.

One function, `fit`, turns any decoded image into the dataset's (H, W, C).
The in-memory mode runs it once over the files, the on-disk mode in every
epoch, and the tfds loader over its examples, so all three give the same
pixels for the same file; that is what makes the two storage modes
interchangeable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from pmkd_tf.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Decoded bytes per batch of a decoding pass: big enough to keep tf.data's
# parallel map busy, small enough that the statistics' temporaries stay small
# for large images.
_BATCH_BYTES = 16 << 20
# In-memory arrays may take at most this share of the available memory:
# `tf.data.Dataset.from_tensor_slices` copies them once more into a tensor,
# and the model, its optimizer and the batches in flight need the rest.
MEMORY_FRACTION = 0.25

Shape = tuple[int, int, int]


def fit(image: tf.Tensor, image_shape: Shape) -> tf.Tensor:
    """A decoded uint8 image of any size with 1-4 channels -> a uint8 image of `image_shape`.

    Alpha is dropped; colour becomes grayscale with `tf.image.rgb_to_grayscale`
    (ITU-R 601 weights) and grayscale is repeated into three channels, the
    same for every file format (TF's codecs disagree: JPEG and PNG convert
    with their own weights, BMP and GIF cannot decode to one channel). An
    image of another size is stretched to (H, W) bilinearly with antialiasing
    (the user chose the shape, so nothing is cropped) and rounded; an image
    already of the right size keeps its exact pixels.
    """
    height, width, channels = image_shape

    def convert(source: tf.Tensor, colour: bool) -> tf.Tensor:
        if channels == 1:
            return tf.image.rgb_to_grayscale(source[..., :3]) if colour else source[..., :1]
        return source[..., :3] if colour else tf.repeat(source[..., :1], 3, axis=-1)

    def resize(source: tf.Tensor) -> tf.Tensor:
        resized = tf.image.resize(source, (height, width), method="bilinear", antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)

    # A file's channel count is known only once decoded; a tfds feature's is
    # known statically (and the branch it rules out would not build).
    if image.shape[-1] is None:
        converted = tf.cond(tf.shape(image)[-1] >= 3, lambda: convert(image, True), lambda: convert(image, False))
    else:
        converted = convert(image, image.shape[-1] >= 3)
    same_size = tf.reduce_all(tf.shape(converted)[:2] == (height, width))
    return tf.ensure_shape(tf.cond(same_size, lambda: converted, lambda: resize(converted)), image_shape)


def read(path: tf.Tensor, image_shape: Shape) -> tf.Tensor:
    """Decode one JPEG/PNG/BMP/GIF file (a GIF's first frame; 16-bit PNG scaled to 8 bits) and `fit` it."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.uint8, expand_animations=False)
    return fit(image, image_shape)


def batch_size(image_shape: Shape) -> int:
    """Images per batch of a decoding pass (see `_BATCH_BYTES`)."""
    return max(1, min(512, _BATCH_BYTES // int(np.prod(image_shape))))


class PixelHistogram:
    """Per-channel counts of every uint8 value: exact, order-independent mean and std.

    Counting values instead of summing floats makes the statistics of the
    in-memory and on-disk modes identical however the batches fall, and a
    `bincount` needs no temporaries beyond one channel of one batch.
    """

    def __init__(self, channels: int) -> None:
        self.counts = np.zeros((channels, 256), np.int64)

    def add(self, images: np.ndarray) -> None:
        flat = images.reshape(-1, self.counts.shape[0])
        for c in range(self.counts.shape[0]):
            self.counts[c] += np.bincount(flat[:, c], minlength=256)

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and standard deviation of each channel in [0, 1] units, rounded to 6 digits.

        A constant channel (all-black blue in red-only images) would divide by
        zero; its std is floored at one grey level.
        """
        values = np.arange(256) / 255.0
        total = self.counts.sum(axis=1)
        mean = self.counts @ values / total
        std = np.sqrt(np.maximum(self.counts @ values**2 / total - mean**2, 0.0))
        std = np.maximum(std, 1 / 255)
        return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def histogram(images: np.ndarray) -> PixelHistogram:
    """The `PixelHistogram` of an in-memory uint8 NHWC array."""
    result = PixelHistogram(images.shape[-1])
    step = batch_size(images.shape[1:])
    for start in range(0, len(images), step):
        result.add(images[start:start + step])
    return result


@dataclasses.dataclass(frozen=True)
class Decoded:
    """What one pass over a list of files found.

    `ok[i]` says whether file i decoded; `images` (only when kept) has one
    slot per file, filled where `ok`; `histogram` counts the pixels of the
    first `counted` files that decoded.
    """

    ok: np.ndarray
    images: np.ndarray | None
    histogram: PixelHistogram


def decode_files(paths: Sequence[str], image_shape: Shape, keep: bool, counted: int = 0) -> Decoded:
    """Decode and `fit` every file once, in parallel, noting the ones TensorFlow cannot decode.

    One pass over all of a dataset's chosen files (one tf.data graph to
    trace, not three). With `keep=False` nothing is held but the statistics:
    the on-disk mode uses this pass to find undecodable files before
    training, so both modes train on the same files, and to measure the
    training split (the first `counted` files).
    """
    n = len(paths)
    images = np.empty((n, *image_shape), np.uint8) if keep else None
    ok = np.zeros(n, bool)
    counts = PixelHistogram(image_shape[2])
    if n:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(list(paths), tf.string), tf.range(n)))
        ds = ds.map(lambda path, i: (read(path, image_shape), i), num_parallel_calls=tf.data.AUTOTUNE)
        for batch, index in ds.ignore_errors().batch(batch_size(image_shape)).as_numpy_iterator():
            ok[index] = True
            counts.add(batch[index < counted])
            if keep:
                images[index] = batch
    return Decoded(ok, images, counts)


@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """One split kept on disk: its files, decoded and fitted again in every epoch.

    The files were all decoded once at load time, so a failure here means a
    file changed since.
    """

    paths: tuple[str, ...]
    image_shape: Shape

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self) -> np.ndarray:
        """All the images as one uint8 array (for the few thousand test images the exporter reads)."""
        decoded = decode_files(self.paths, self.image_shape, keep=True)
        if not decoded.ok.all():
            broken = self.paths[int(np.flatnonzero(~decoded.ok)[0])]
            raise DataError(f"{broken} no longer decodes (changed since the dataset was loaded); reload the data.")
        return decoded.images


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (what can be allocated without swapping), None off Linux."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
