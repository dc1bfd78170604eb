"""Model zoo: every network of the paper in the filter shapes PMKD needs.

Every model maps an image batch to `{"logits": (B, classes), "features": [...]}`
in one forward pass; the teacher (NxN), student (1xN) and column (Nx1)
versions of one net have the same feature taps with identical shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from pmkd_tf.errors import UserError
from pmkd_tf.models import resnet, vgg, wrn
from pmkd_tf.models.config import NetConfig
from pmkd_tf.models.filters import DOWNSAMPLINGS, FILTER_SHAPES, OnTheFlyReport, on_the_fly_report
from pmkd_tf.models.pacemaker import PACEMAKER_KINDS, build_pacemaker, pacemaker_member
from pmkd_tf.models.resnet import BLOCKS, build_resnet
from pmkd_tf.models.vgg import STAGES, build_vgg
from pmkd_tf.models.wrn import build_wrn, parse_wrn

NETS = (*STAGES, *BLOCKS, "wrn_10_10", "wrn_16_8", "wrn_28_6", "wrn_40_4")


def _family(net: str) -> tuple[Callable[[NetConfig], keras.Model], Callable[[str], tuple[str, ...]]]:
    """The builder of `net` and the function that lists its down-sampling steps."""
    if net in STAGES:
        return build_vgg, vgg.downsampling
    if net in BLOCKS:
        return build_resnet, resnet.downsampling
    if parse_wrn(net):
        return build_wrn, wrn.downsampling
    raise UserError(f"Unknown net {net!r}; valid nets: {', '.join(NETS)} (or any wrn_D_K).")


def validate_net(net: str) -> None:
    """Raise a UserError naming the valid nets if `net` is not one."""
    _family(net)


def min_input_size(net: str) -> int:
    """The fewest rows (and columns) an input of `net` may have: every layer keeps at least one of each.

    Computed from the net's down-sampling: the VGGs' valid max-pools floor,
    so they need 18 (17 -> 8 -> 4 -> 2 -> 1 -> 0); the ResNets' and WRNs'
    stride-2 "same" convs round up, so they run on any size (a 1-row strip
    stays 1 row).
    """
    size = 1  # after the last step, then before each step from the last back
    for step in reversed(_family(net)[1](net)):
        # A valid 2x2 max-pool floors the halving; a "same" stride-2 conv rounds it up, and so does the
        # "same" 2x1 pool + (1, 2)-strided conv that replaces it under `average` / `max` down-sampling.
        size = 2 * size if step == "pool" else 2 * size - 1
    return size


def check_input_size(net: str, input_shape: tuple[int, int, int]) -> None:
    """Raise UserError naming the smallest size that works if `input_shape` is too small for `net`."""
    height, width = input_shape[:2]
    smallest = min_input_size(net)
    if height < smallest or width < smallest:
        raise UserError(f"{net} needs images of at least {smallest}x{smallest} (its down-sampling shrinks "
                        f"{height}x{width} to nothing); use --image_size={max(height, smallest)}x"
                        f"{max(width, smallest)} or larger, or a net with less down-sampling.")


def build(config: NetConfig) -> keras.Model:
    """Build the model a `NetConfig` describes (after checking its input is large enough for the net)."""
    check_input_size(config.net, config.input_shape)
    model = _family(config.net)[0](config)
    # Set once here rather than passed to every BatchNormalization the builders create; it is saved with each.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.bn_momentum
    return model


def get_model(net: str, filter_shape: str = "NxN", num_classes: int = 10, width_multiplier: float = 1.0,
              **options) -> keras.Model:
    """Build `net` with intermediate convs of `filter_shape`; see `NetConfig` for options."""
    return build(NetConfig(net, filter_shape, num_classes, width_multiplier, **options))


__all__ = ["DOWNSAMPLINGS", "FILTER_SHAPES", "NETS", "PACEMAKER_KINDS", "NetConfig", "OnTheFlyReport", "build",
           "build_pacemaker", "check_input_size", "get_model", "min_input_size", "on_the_fly_report",
           "pacemaker_member", "validate_net"]
