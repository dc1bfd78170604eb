"""Model zoo: every network of the paper in the filter shapes PMKD needs.

Every model maps an image batch to `{"logits": (B, classes), "features": [...]}`
in one forward pass; the teacher (NxN), student (1xN) and column (Nx1)
versions of one net have the same feature taps with identical shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from pmkd_tf.errors import UserError
from pmkd_tf.models.config import NetConfig
from pmkd_tf.models.filters import SHAPES, OnTheFlyReport, check_on_the_fly
from pmkd_tf.models.pacemaker import KINDS as PACEMAKERS
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


def build(config: NetConfig) -> keras.Model:
    """Build the model a `NetConfig` describes."""
    return _builder(config.net)(config)


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
    "NETS",
    "PACEMAKERS",
    "SHAPES",
    "NetConfig",
    "OnTheFlyReport",
    "build",
    "build_pacemaker",
    "check_on_the_fly",
    "get_model",
    "pacemaker_member",
    "validate_net",
]
