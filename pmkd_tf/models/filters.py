"""Filter shapes: the one place that knows what "NxN", "1xN" and "Nx1" mean.

PMKD changes only the kernel shape of a network's intermediate convolutions:
the teacher uses NxN, the on-the-fly student 1xN (one input row per output
row), and the pacemaker's second member Nx1. Everything else (depth, widths,
strides, feature shapes) stays identical, which is what lets every feature
tap be compared with a plain squared error and no regressor.
"""

from __future__ import annotations

import dataclasses

import keras

FILTER_SHAPES = ("NxN", "1xN", "Nx1")
STEM_CONV = "stem_conv"
# How an on-the-fly model halves the axis its kernels do not cover (see `downsample`).
DOWNSAMPLINGS = ("stride", "average", "max")


def kernel_size(filter_shape: str, n: int) -> tuple[int, int]:
    """Kernel (height, width) of an intermediate conv of the given filter shape (`NetConfig` checks both)."""
    return {"NxN": (n, n), "1xN": (1, n), "Nx1": (n, 1)}[filter_shape]


def conv(x: keras.KerasTensor, filters: int, filter_shape: str, n: int, stride: int | tuple[int, int] = 1,
         name: str | None = None) -> keras.KerasTensor:
    """A bias-free conv of the given filter shape ("same" padding).

    With stride 1, "same" is exactly the paper's padding: 1 for the 3x3
    teacher, (0, 1) for the 1x3 student, (1, 0) for the 3x1 column model, so
    all three keep the same spatial size. With stride 2 Keras pads the extra
    column on the right/bottom (TF convention); output sizes still match.
    """
    return keras.layers.Conv2D(filters, kernel_size(filter_shape, n), strides=stride, padding="same", use_bias=False,
                               kernel_initializer="he_normal", name=name)(x)


def downsample(x: keras.KerasTensor, filter_shape: str, downsampling: str, stride: int,
               name: str) -> tuple[keras.KerasTensor, int | tuple[int, int]]:
    """The input and strides of a layer that halves the resolution by `stride`.

    `stride` (the paper's) strides both axes, so a 1xN layer reads only every
    other input row (an Nx1 layer every other column): most of the image is
    never seen. `average` and `max` first pool each pair of rows (2x1; 1x2
    for Nx1), which an on-the-fly chip does with one held row, and the layer
    then strides only along the axis its kernel covers. NxN layers already
    read every row and column, so they always stride. "same" padding rounds
    an odd size up exactly as a stride-2 "same" conv does, so every output
    (and feature tap) keeps the teacher's shape.
    """
    if stride == 1 or filter_shape == "NxN" or downsampling == "stride":
        return x, stride
    pool = (2, 1) if filter_shape == "1xN" else (1, 2)
    layer = keras.layers.AveragePooling2D if downsampling == "average" else keras.layers.MaxPooling2D
    pooled = layer(pool, strides=pool, padding="same", name=f"{name}_pool")(x)
    return pooled, (1, 2) if filter_shape == "1xN" else (2, 1)


def bn_relu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def scaled(channels: int, width_multiplier: float) -> int:
    """Channel count after the width multiplier (at least 1)."""
    return max(1, int(round(channels * width_multiplier)))


@dataclasses.dataclass(frozen=True)
class OnTheFlyReport:
    """What `on_the_fly_report` found in one model.

    `intermediate_conv_params` counts the kernels of the convs whose shape the
    filter shape changes (every conv after the stem with a kernel larger than
    1x1); for N=3 a 1xN model has exactly a third of the NxN model's.
    """

    on_the_fly: bool
    offending_layers: tuple[str, ...]
    total_params: int
    trainable_params: int
    intermediate_conv_params: int


def _convs(model: keras.Model):
    """Every Conv2D of a model, looking inside nested models (the pacemaker)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _convs(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            yield layer


def on_the_fly_report(model: keras.Model) -> OnTheFlyReport:
    """Report whether every conv after the stem has kernel height 1.

    If so, each output row of every layer after the stem depends on a single
    row of that layer's input, so the model can run line by line with no
    frame buffer (only the stem keeps an N-row line buffer).
    """
    body = [layer for layer in _convs(model) if not layer.name.endswith(STEM_CONV)]
    offending = tuple(layer.name for layer in body if layer.kernel_size[0] != 1)
    intermediate = sum(int(layer.kernel.numpy().size) for layer in body if layer.kernel_size != (1, 1))
    return OnTheFlyReport(on_the_fly=not offending, offending_layers=offending, total_params=int(model.count_params()),
                          trainable_params=sum(int(w.numpy().size) for w in model.trainable_weights),
                          intermediate_conv_params=intermediate)
