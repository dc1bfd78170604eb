"""CIFAR ResNet8/18/34 (basic blocks) and ResNet50 (bottlenecks) in any filter shape.

Only the spatial convs change shape: both convs of a basic block, and the
middle conv of a bottleneck (its 1x1 convs and the 1x1 projection shortcuts
are already one row high). A block that halves the resolution does so in its
strided conv and its projection alike (`filters.downsample`). Feature taps:
the stem output and every residual block's output.

ResNet8 is MLPerf Tiny's image-classification network (a 16-filter stem,
one basic block each of 16, 32 and 64 filters, the last two halving the
resolution), the reference every microcontroller result is read against.
As in the other ResNets its convs have no bias and its projections a batch
norm (MLPerf's have biases and no projection norm); int8 export folds both.
"""

from __future__ import annotations

import keras

from pmkd_tf.models import filters
from pmkd_tf.models.config import NetConfig

WIDTHS = (64, 128, 256, 512)
# net: (block, blocks per stage, channels per stage); the stem has the first stage's channels.
BLOCKS = {
    "resnet8": ("basic", (1, 1, 1), (16, 32, 64)),
    "resnet18": ("basic", (2, 2, 2, 2), WIDTHS),
    "resnet34": ("basic", (3, 4, 6, 3), WIDTHS),
    "resnet50": ("bottleneck", (3, 4, 6, 3), WIDTHS),
}


def downsampling(net: str) -> tuple[str, ...]:
    """`build_resnet`'s down-sampling steps (`models.min_input_size`): a stride-2 first block in each later stage."""
    return ("stride",) * (len(BLOCKS[net][1]) - 1)


def _shortcut(x: keras.KerasTensor, out_channels: int, stride: int | tuple[int, int], name: str) -> keras.KerasTensor:
    if stride == 1 and x.shape[-1] == out_channels:
        return x
    x = keras.layers.Conv2D(out_channels, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
    return keras.layers.BatchNormalization(name=f"{name}_proj_bn")(x)


def _basic(x, width: int, stride: int, config: NetConfig, name: str):
    x, strides = filters.downsample(x, config.filter_shape, config.downsampling, stride, name)
    y = filters.conv(x, width, config.filter_shape, config.n, strides, name=f"{name}_conv1")
    y = filters.bn_relu(y, f"{name}_conv1")
    y = filters.conv(y, width, config.filter_shape, config.n, name=f"{name}_conv2")
    y = keras.layers.BatchNormalization(name=f"{name}_conv2_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, _shortcut(x, width, strides, name)])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _bottleneck(x, width: int, stride: int, config: NetConfig, name: str):
    y = keras.layers.Conv2D(width, 1, use_bias=False, name=f"{name}_reduce")(x)
    y = filters.bn_relu(y, f"{name}_reduce")
    y, strides = filters.downsample(y, config.filter_shape, config.downsampling, stride, f"{name}_conv")
    y = filters.conv(y, width, config.filter_shape, config.n, strides, name=f"{name}_conv")
    y = filters.bn_relu(y, f"{name}_conv")
    y = keras.layers.Conv2D(width * 4, 1, use_bias=False, name=f"{name}_expand")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    x, strides = filters.downsample(x, config.filter_shape, config.downsampling, stride, f"{name}_proj")
    y = keras.layers.Add(name=f"{name}_add")([y, _shortcut(x, width * 4, strides, name)])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet(config: NetConfig) -> keras.Model:
    kind, depths, widths = BLOCKS[config.net]
    block = _basic if kind == "basic" else _bottleneck
    inputs = keras.Input(config.input_shape, name="image")

    x = filters.conv(inputs, filters.scaled(widths[0], config.width_multiplier), config.stem_filter_shape, config.n,
                     name=filters.STEM_CONV)
    x = filters.bn_relu(x, "stem")
    features = [x]
    for stage, (depth, width) in enumerate(zip(depths, widths), start=1):
        for i in range(depth):
            stride = 2 if stage > 1 and i == 0 else 1
            x = block(x, filters.scaled(width, config.width_multiplier), stride, config, f"stage{stage}_block{i + 1}")
            features.append(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(config.num_classes, name="classifier")(x)
    return keras.Model(inputs, {"logits": logits, "features": features}, name=f"{config.net}_{config.filter_shape}")
