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

from pmkd_tf.errors import UserError

SHAPES = ("NxN", "1xN", "Nx1")
STEM_CONV = "stem_conv"


def kernel_size(shape: str, n: int) -> tuple[int, int]:
    """Kernel (height, width) of an intermediate conv of the given shape."""
    if shape not in SHAPES:
        raise UserError(f"Unknown filter shape {shape!r}; valid shapes: {', '.join(SHAPES)}.")
    if n < 1 or n % 2 == 0:
        raise UserError(f"Kernel size N must be odd and positive, got {n}.")
    return {"NxN": (n, n), "1xN": (1, n), "Nx1": (n, 1)}[shape]


def conv(
    x: keras.KerasTensor,
    filters: int,
    shape: str,
    n: int,
    stride: int = 1,
    name: str | None = None,
) -> keras.KerasTensor:
    """A bias-free conv of the given filter shape ("same" padding).

    With stride 1, "same" is exactly the paper's padding: 1 for the 3x3
    teacher, (0, 1) for the 1x3 student, (1, 0) for the 3x1 column model, so
    all three keep the same spatial size. With stride 2 Keras pads the extra
    column on the right/bottom (TF convention); output sizes still match.
    """
    return keras.layers.Conv2D(
        filters,
        kernel_size(shape, n),
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def bn_relu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def scaled(channels: int, width_multiplier: float) -> int:
    """Channel count after the width multiplier (at least 1)."""
    return max(1, int(round(channels * width_multiplier)))


@dataclasses.dataclass(frozen=True)
class OnTheFlyCheck:
    """What `check_on_the_fly` found in one model.

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


def check_on_the_fly(model: keras.Model) -> OnTheFlyCheck:
    """Report whether every conv after the stem has kernel height 1.

    If so, each output row of every layer after the stem depends on a single
    row of that layer's input, so the model can run line by line with no
    frame buffer (only the stem keeps an N-row line buffer).
    """
    offending = []
    intermediate = 0
    for layer in _convs(model):
        kh, kw = layer.kernel_size
        if layer.name.endswith(STEM_CONV):
            continue
        if kh != 1:
            offending.append(layer.name)
        if kh * kw > 1:
            intermediate += int(layer.kernel.numpy().size)
    return OnTheFlyCheck(
        on_the_fly=not offending,
        offending_layers=tuple(offending),
        total_params=int(model.count_params()),
        trainable_params=sum(int(w.numpy().size) for w in model.trainable_weights),
        intermediate_conv_params=intermediate,
    )
