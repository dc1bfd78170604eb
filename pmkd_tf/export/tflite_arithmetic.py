"""TFLite's integer arithmetic, as its reference kernels (and TensorFlow Lite Micro) compute it.

The one copy that the Python row streamer (`streaming`) evaluates and the C
engine's planner (`cstream.graph`) turns into the engine's tables, so that
both stay bit-exact with LiteRT for the same reason:

* `same_padding`: TF's "same" padding of a window along one axis;
* `quantize_multiplier`, `multiply_by_quantized_multiplier`: a real scale as
  a Q31 multiplier and a power-of-two shift, and applying it (every int8
  kernel's requantisation);
* `mean_multiplier`, `quantized_mean`: the int8 MEAN (global average pool),
  whose requantisation also divides by the element count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) of TF "same" padding: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: `real` as a Q31 integer multiplier and a power-of-two shift."""
    if real == 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = int(math.floor(abs(fraction) * (1 << 31) + 0.5)) * (1 if fraction >= 0 else -1)
    if fixed == 1 << 31:
        fixed, shift = fixed // 2, shift + 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier (int32, double rounding): x * multiplier * 2^(shift - 31)."""
    x *= 1 << max(shift, 0)
    if x == multiplier == -(1 << 31):
        high = (1 << 31) - 1
    else:
        product = x * multiplier
        nudged = product + ((1 << 30) if product >= 0 else 1 - (1 << 30))
        high = abs(nudged) >> 31 if nudged >= 0 else -(abs(nudged) >> 31)
    exponent = max(-shift, 0)
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> exponent) + (1 if (high & mask) > threshold else 0)


def mean_multiplier(input_scale: float, output_scale: float, count: int,
                    quantize: Callable[[float], tuple[int, int]] = quantize_multiplier) -> tuple[int, int]:
    """The (multiplier, shift) of an int8 MEAN over `count` elements, as reference_ops::QuantizedMeanOrSum sets it.

    The multiplier of scale_in / scale_out (float32 scales, divided in
    double) is shifted left by up to 32 bits of headroom, then divided by the
    element count. `quantize` is QuantizeMultiplier, or a caller's checked
    version of it.
    """
    multiplier, shift = quantize(float(np.float32(input_scale)) / float(np.float32(output_scale)))
    headroom = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << headroom) // count, shift - headroom


def quantized_mean(total: np.ndarray, count: int, input_qp: tuple[float, int], output_qp: tuple[float, int],
                   dtype=np.int8) -> np.ndarray:
    """TFLite's int8 MEAN from the per-channel sums of the raw int8 inputs, in the kernel's integer arithmetic.

    reference_ops::QuantizedMeanOrSum (what LiteRT's reference kernels and
    TFLite Micro run): `mean_multiplier` applied to sum - zp_in * count,
    plus zp_out, saturated.
    """
    multiplier, shift = mean_multiplier(input_qp[0], output_qp[0], count)
    info = np.iinfo(dtype)
    values = [multiply_by_quantized_multiplier(int(s) - input_qp[1] * count, multiplier, shift) + output_qp[1]
              for s in total]
    return np.clip(values, info.min, info.max).astype(dtype)
