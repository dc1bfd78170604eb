"""Wide ResNet WRN-d-k (pre-activation basic blocks) in any filter shape.

d = 6n + 4 with n blocks per stage; stage widths 16k, 32k, 64k. Feature
taps: the stem output and every block's output (before the next block's
pre-activation), so teacher and student taps have identical shapes.
"""

from __future__ import annotations

import re

import keras

from pmkd_tf.errors import UserError
from pmkd_tf.models import filters
from pmkd_tf.models.config import NetConfig

NAME = re.compile(r"^wrn_(\d+)_(\d+)$")


def parse_wrn(net: str) -> tuple[int, int] | None:
    """(depth, widen factor) of a `wrn_D_K` name, or None if it is not one."""
    match = NAME.match(net)
    if not match:
        return None
    depth, widen = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 or widen < 1:
        raise UserError(f"{net}: WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...) and width >= 1.")
    return depth, widen


def downsampling(net: str) -> tuple[str, ...]:
    """`build_wrn`'s down-sampling steps (`models.min_input_size`): a stride-2 first block in stages 2 and 3."""
    return ("stride", "stride")


def _block(x, width: int, stride: int, config: NetConfig, name: str):
    pre = filters.bn_relu(x, f"{name}_pre")
    # One pool (if any) feeds the strided conv and the projection alike.
    pre, strides = filters.downsample(pre, config.filter_shape, config.downsampling, stride, name)
    y = filters.conv(pre, width, config.filter_shape, config.n, strides, name=f"{name}_conv1")
    y = filters.bn_relu(y, f"{name}_conv1")
    y = filters.conv(y, width, config.filter_shape, config.n, name=f"{name}_conv2")
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = keras.layers.Conv2D(width, 1, strides=strides, use_bias=False, name=f"{name}_proj")(pre)
    return keras.layers.Add(name=f"{name}_out")([y, shortcut])


def build_wrn(config: NetConfig) -> keras.Model:
    depth, widen = parse_wrn(config.net)
    blocks = (depth - 4) // 6
    inputs = keras.Input(config.input_shape, name="image")

    x = filters.conv(inputs, filters.scaled(16, config.width_multiplier), config.stem_filter_shape, config.n,
                     name=filters.STEM_CONV)
    features = [x]
    for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen), start=1):
        for i in range(blocks):
            stride = 2 if stage > 1 and i == 0 else 1
            x = _block(x, filters.scaled(width, config.width_multiplier), stride, config, f"stage{stage}_block{i + 1}")
            features.append(x)
    x = filters.bn_relu(x, "final")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(config.num_classes, name="classifier")(x)
    return keras.Model(inputs, {"logits": logits, "features": features}, name=f"{config.net}_{config.filter_shape}")
