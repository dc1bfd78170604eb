"""The small config every model builder is a pure function of."""

from __future__ import annotations

import dataclasses
import numbers

from pmkd_tf.errors import UserError
from pmkd_tf.models.filters import DOWNSAMPLINGS, FILTER_SHAPES


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Which network to build and in which filter shape (that of its intermediate convolutions).

    `stem` "NxN" keeps the teacher's stem conv in every variant, as the paper
    does; "body" gives the stem the body's filter shape, for a model with no
    line buffer at all. `downsampling` is how a 1xN or Nx1 model halves the
    axis its kernels do not cover: "stride" (the paper's: drops every other
    row) or "average" / "max" (pools row pairs first, `filters.downsample`);
    NxN ignores it.
    """

    net: str  # `vgg16`, `resnet18`, `wrn_40_4`, ...
    filter_shape: str = "NxN"
    num_classes: int = 10
    width_multiplier: float = 1.0  # scales every channel count (CPU-scale runs use < 1)
    n: int = 3  # the N of the filter shapes, odd (3 in the paper)
    stem: str = "NxN"
    input_shape: tuple[int, int, int] = (32, 32, 3)  # (H, W, C): any H and W from `models.min_input_size(net)` up
    downsampling: str = "stride"
    bn_momentum: float = 0.99  # every batch norm's, Keras' way (PyTorch's 0.1, the paper's, is Keras' 0.9)

    def __post_init__(self) -> None:
        if self.filter_shape not in FILTER_SHAPES:
            raise UserError(f"Unknown filter shape {self.filter_shape!r}; valid: {', '.join(FILTER_SHAPES)}.")
        if self.n < 1 or self.n % 2 == 0:
            raise UserError(f"Kernel size N must be odd and positive, got {self.n}.")
        if self.downsampling not in DOWNSAMPLINGS:
            raise UserError(f"Unknown downsampling {self.downsampling!r}; valid: {', '.join(DOWNSAMPLINGS)}.")
        if self.stem not in ("NxN", "body"):
            raise UserError(f"stem must be 'NxN' or 'body', got {self.stem!r}.")
        if not self.width_multiplier > 0:
            raise UserError(f"width_multiplier must be > 0, got {self.width_multiplier}.")
        if not 0 <= self.bn_momentum < 1:
            raise UserError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}.")
        if self.num_classes < 2:
            raise UserError(f"num_classes must be >= 2, got {self.num_classes}.")
        if len(self.input_shape) != 3 or not all(isinstance(d, numbers.Integral) and d > 0 for d in self.input_shape):
            raise UserError(f"input_shape must be (height, width, channels) of positive integers, got "
                            f"{self.input_shape}.")

    @property
    def stem_filter_shape(self) -> str:
        return "NxN" if self.stem == "NxN" else self.filter_shape

    def with_filter_shape(self, filter_shape: str) -> NetConfig:
        """The same net in another filter shape (teacher -> student -> column)."""
        return dataclasses.replace(self, filter_shape=filter_shape)
