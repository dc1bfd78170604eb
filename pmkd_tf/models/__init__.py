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
from pmkd_tf.models.filters import DOWNSAMPLINGS, SHAPES, OnTheFlyCheck, check_on_the_fly
from pmkd_tf.models.pacemaker import KINDS as PACEMAKER_KINDS
from pmkd_tf.models.pacemaker import build_pacemaker, pacemaker_member
from pmkd_tf.models.resnet import BLOCKS, build_resnet
from pmkd_tf.models.vgg import STAGES, build_vgg
from pmkd_tf.models.wrn import build_wrn, parse_wrn

NETS = (*STAGES, *BLOCKS, "wrn_10_10", "wrn_16_8", "wrn_28_6", "wrn_40_4")


def _builder(net: str) -> Callable[[NetConfig], keras.Model]:
    if net in STAGES:
        return build_vgg
    if net in BLOCKS:
        return build_resnet
    if parse_wrn(net):
        return build_wrn
    raise UserError(f"Unknown net {net!r}; valid nets: {', '.join(NETS)} (or any wrn_D_K).")


def validate_net(net: str) -> None:
    """Raise ValueError naming the valid nets if `net` is not one."""
    _builder(net)


def _downsampling(net: str) -> tuple[str, ...]:
    if net in STAGES:
        return vgg.downsampling(net)
    if net in BLOCKS:
        return resnet.downsampling(net)
    validate_net(net)
    return wrn.downsampling(net)


def _survives(size: int, steps: tuple[str, ...]) -> bool:
    for step in steps:
        # A valid 2x2 max-pool floors the halving; a "same" stride-2 conv rounds it up, and so does the
        # "same" 2x1 pool + (1, 2)-strided conv that replaces it under `average` / `max` down-sampling.
        size = size // 2 if step == "pool" else -(-size // 2)
        if size < 1:
            return False
    return True


def min_input_size(net: str) -> int:
    """The fewest rows (and columns) an input of `net` may have: every layer keeps at least one of each.

    Computed from the net's down-sampling: the VGGs' valid max-pools floor,
    so they need 18 (17 -> 8 -> 4 -> 2 -> 1 -> 0); the ResNets' and WRNs'
    stride-2 "same" convs round up, so they run on any size (a 1-row strip
    stays 1 row).
    """
    steps = _downsampling(net)
    return next(size for size in range(1, 2 ** (len(steps) + 2)) if _survives(size, steps))


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
    builder = _builder(config.net)
    check_input_size(config.net, config.input_shape)
    return builder(config)


def get_model(
    net: str,
    shape: str = "NxN",
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    **options,
) -> keras.Model:
    """Build `net` with intermediate convs of `shape`; see `NetConfig` for options."""
    return build(NetConfig(net, shape, num_classes, width_multiplier, **options))


__all__ = [
    "DOWNSAMPLINGS",
    "NETS",
    "PACEMAKER_KINDS",
    "SHAPES",
    "NetConfig",
    "OnTheFlyCheck",
    "build",
    "build_pacemaker",
    "check_input_size",
    "check_on_the_fly",
    "get_model",
    "min_input_size",
    "pacemaker_member",
    "validate_net",
]
