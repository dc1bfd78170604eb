"""VGG with batch norm, CIFAR style, in any filter shape.

As the paper does for on-the-fly VGG, the intermediate max-poolings (after
stages 2, 3 and 4) are replaced by a stride of 2 in the first conv of the
next stage, in every variant; the first pooling (after stage 1) and the last
(after stage 5, down to 1x1) are kept. Feature taps: the first conv's output
and each stage's output just before the channel count increases.
"""

from __future__ import annotations

import keras

from pmkd_tf.models import filters
from pmkd_tf.models.config import NetConfig

STAGES = {
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
WIDTHS = (64, 128, 256, 512, 512)


def downsampling(net: str) -> tuple[str, ...]:
    """`build_vgg`'s down-sampling steps (`models.min_input_size`): pool, stride-2 first conv of stages 3-5, pool."""
    return ("pool", *("stride",) * (len(STAGES[net]) - 2), "pool")


def build_vgg(config: NetConfig) -> keras.Model:
    depths = STAGES[config.net]
    widths = [filters.scaled(w, config.width_multiplier) for w in WIDTHS]
    inputs = keras.Input(config.input_shape, name="image")

    x = filters.conv(inputs, widths[0], config.stem_filter_shape, config.n, name=filters.STEM_CONV)
    x = filters.bn_relu(x, "stem")
    features = [x]
    for stage, (depth, width) in enumerate(zip(depths, widths), start=1):
        for i in range(1 if stage == 1 else 0, depth):
            stride = 2 if stage >= 3 and i == 0 else 1
            name = f"stage{stage}_conv{i + 1}"
            x, strides = filters.downsample(x, config.filter_shape, config.downsampling, stride, name)
            x = filters.conv(x, width, config.filter_shape, config.n, strides, name=name)
            x = filters.bn_relu(x, name)
        if stage < len(widths) and widths[stage] > width:
            features.append(x)
        if stage == 1:
            x = keras.layers.MaxPooling2D(2, name="first_pool")(x)
    x = keras.layers.MaxPooling2D(2, name="last_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(config.num_classes, name="classifier")(x)
    return keras.Model(inputs, {"logits": logits, "features": features}, name=f"{config.net}_{config.filter_shape}")
