"""The int8 `.tflite` as the C engine runs it: a list of row-streaming nodes with integer parameters only.

Every tensor is seen as rows: `(H, W, C)` int8 with rows of `W * C` bytes,
channels interleaved (a `[1, N]` vector is one row `(1, 1, N)`). Each TFLite
op becomes one node that turns input rows into output rows:

* "conv" (CONV_2D): output row `o` reads the `kernel height` input rows from
  `o * stride - pad_top`; rows and columns outside the input are TF "same"
  padding, i.e. pixels holding the input zero point;
* "max_pool", "average_pool" (MAX_POOL_2D, AVERAGE_POOL_2D): the same
  window rule, but a pool ignores its padding: an edge window is just the
  pixels inside the input (an average divides by their count);
* "add", "mul" (ADD, MUL): row `o` of each input, or a per-channel constant;
* "mean" (MEAN over H and W): a running int32 sum per channel, requantised
  after the last row;
* "collect" (RESHAPE of a map taller than one row): every input row, copied
  into one output row. A RESHAPE of a one-row tensor moves no byte (the row
  layout is the same) and becomes no node at all.

Node 0 is the camera image. All the arithmetic parameters are computed
here, offline, exactly as TFLite's kernels compute them in `Prepare` (double
precision where TFLite uses double, float where it uses float), so that the
C engine does only the integer part and matches LiteRT's reference kernels
bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from pmkd_tf.errors import StreamingError
from pmkd_tf.export import flatbuffer
from pmkd_tf.export.tflite_arithmetic import mean_multiplier, quantize_multiplier, same_padding

INPUT, CONV, MAX_POOL, AVERAGE_POOL, ADD, MUL, MEAN, COLLECT = (
    "input", "conv", "max_pool", "average_pool", "add", "mul", "mean", "collect")
NODE_KINDS = (INPUT, CONV, MAX_POOL, AVERAGE_POOL, ADD, MUL, MEAN, COLLECT)
WINDOW_KINDS = (CONV, MAX_POOL, AVERAGE_POOL)  # the kernels that hold `window` input rows (PMKD_MAX_WINDOW)
SUPPORTED_OPS = ("CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "ADD", "MUL", "MEAN", "RESHAPE")
# ADD rescales both inputs to a common scale after this left shift (TFLite's value for int8).
ADD_LEFT_SHIFT = 20
INT8_MIN, INT8_MAX = -128, 127
# Limits of the engine's table fields (uint16 geometry, uint8 kernel sizes would not do for COLLECT).
MAX_DIMENSION = 65535

_ACTIVATIONS = {schema.ActivationFunctionType.NONE: "NONE", schema.ActivationFunctionType.RELU: "RELU",
                schema.ActivationFunctionType.RELU_N1_TO_1: "RELU_N1_TO_1",
                schema.ActivationFunctionType.RELU6: "RELU6"}


@dataclasses.dataclass
class EngineNode:
    """One op of the model as the C engine runs it: its rows, and its kernel's integer parameters.

    (The Python streamer's counterpart, whose rows LiteRT computes, is
    `pmkd_tf.export.streaming.LiteRTNode`.)

    `inputs` are the producing nodes of the activation inputs (0 = the image).
    Vertically, output row `o` reads input rows `o * stride - pad_top + [0,
    window)`; horizontally, output column `x` reads columns `x * stride_w -
    pad_left + [0, kernel_w)`. `act` is the output clamp (the fused
    activation, or the int8 range). `params` holds the kind's integer
    parameters and constant arrays.
    """

    kind: str
    label: str
    inputs: tuple[int, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    window: int = 1
    stride: int = 1
    pad_top: int = 0
    kernel_w: int = 1
    stride_w: int = 1
    pad_left: int = 0
    act: tuple[int, int] = (INT8_MIN, INT8_MAX)
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def row_bytes(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    @property
    def macs_per_row(self) -> int:
        """Multiply-accumulates of one output row (convs only)."""
        if self.kind != CONV:
            return 0
        return self.out_shape[1] * self.out_shape[2] * self.window * self.kernel_w * self.in_shape[2]


@dataclasses.dataclass(frozen=True)
class Graph:
    """The nodes in execution order (a topological order; node 0 is the image) and the model's I/O."""

    nodes: tuple[EngineNode, ...]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.nodes[0].out_shape

    @property
    def classes(self) -> int:
        return self.nodes[-1].row_bytes


def _multiplier(real: float, label: str) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier, checked against the engine's fixed point (a Q31 in [0, 2^31), shift <= 30)."""
    multiplier, shift = quantize_multiplier(real)
    if not (0 <= multiplier < 2 ** 31 and shift <= 30):
        raise StreamingError(f"{label}: requantisation scale {real:.3g} is out of range (a negative or absurd "
                             "quantisation scale); re-export the model.")
    return multiplier, shift


def _round_half_away(value: float) -> int:
    """std::round: halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def activation_range(fused: int, scale: float, zero_point: int, label: str) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for int8: `zero_point + round(f / scale)` in float32."""
    if fused not in _ACTIVATIONS:
        raise StreamingError(f"{label}: fused activation {fused} is not supported by the C engine (only NONE, "
                             "RELU, RELU6, RELU_N1_TO_1).")

    def quantize(value: float) -> int:
        return zero_point + _round_half_away(float(np.float32(value) / np.float32(scale)))

    name = _ACTIVATIONS[fused]
    if name == "RELU":
        return max(INT8_MIN, quantize(0.0)), INT8_MAX
    if name == "RELU6":
        return max(INT8_MIN, quantize(0.0)), min(INT8_MAX, quantize(6.0))
    if name == "RELU_N1_TO_1":
        return max(INT8_MIN, quantize(-1.0)), min(INT8_MAX, quantize(1.0))
    return INT8_MIN, INT8_MAX


class _Parser:
    """Walks the operators of a one-subgraph int8 model and builds the nodes."""

    def __init__(self, tflite_model: bytes) -> None:
        model = flatbuffer_utils.read_model_from_bytearray(tflite_model)
        if len(model.subgraphs) != 1:
            raise StreamingError(f"The model has {len(model.subgraphs)} subgraphs; the C engine runs one-graph "
                                 "models only.")
        self.model = model
        self.graph = model.subgraphs[0]
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise StreamingError(f"The model has {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} "
                                 "outputs; the C engine runs one image into one logits row.")
        self.producer: dict[int, int] = {}  # tensor index -> node index
        self.nodes: list[EngineNode] = []

    def tensor(self, index: int):
        return self.graph.tensors[index]

    def constant(self, index: int) -> np.ndarray | None:
        """The tensor's constant data in its dtype, or None for an activation."""
        values = flatbuffer.constant(self.model, index)
        kind = self.tensor(index).type
        if values is not None and kind not in (schema.TensorType.INT8, schema.TensorType.INT32):
            raise StreamingError(f"Constant tensor {index} is {flatbuffer.TENSOR_TYPE_NAMES.get(kind, kind)}; the C "
                                 "engine takes int8 weights and int32 biases (export with convert_int8).")
        return values

    def quantisation(self, index: int, label: str) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor int8 tensor."""
        tensor = self.tensor(index)
        scale_and_zero_point = flatbuffer.quantisation(tensor)
        if tensor.type != schema.TensorType.INT8 or scale_and_zero_point is None:
            raise StreamingError(f"{label}: tensor {index} is not a per-tensor quantised int8 tensor; the C engine "
                                 "runs full-integer int8 models (export with convert_int8).")
        return scale_and_zero_point

    def shape(self, index: int, label: str) -> tuple[int, int, int]:
        """The tensor as (H, W, C) rows: [1, H, W, C], or [1, N] as one row of N."""
        shape = [int(d) for d in self.tensor(index).shape]
        if len(shape) == 4 and shape[0] == 1:
            hwc = tuple(shape[1:])
        elif len(shape) == 2 and shape[0] == 1:
            hwc = (1, 1, shape[1])
        else:
            raise StreamingError(f"{label}: tensor shape {shape} is neither [1, H, W, C] nor [1, N]; the C engine "
                                 "streams images and vectors only.")
        if max(hwc) > MAX_DIMENSION or min(hwc) < 1:
            raise StreamingError(f"{label}: tensor shape {shape} is outside the engine's 1..{MAX_DIMENSION} range.")
        return hwc

    def producer_of(self, index: int, label: str) -> int:
        if index not in self.producer:
            raise StreamingError(f"{label}: input tensor {index} is neither the image nor an earlier op's output.")
        return self.producer[index]

    def parse(self) -> Graph:
        image = self.graph.inputs[0]
        label = "the model input"
        scale, zero_point = self.quantisation(image, label)
        self.nodes.append(EngineNode(INPUT, "image", (), (0, 0, 0), self.shape(image, label)))
        self.producer[image] = 0
        for index, op in enumerate(self.graph.operators):
            name = flatbuffer.op_name(self.model, op)
            label = f"op {index} ({name})"
            if name not in SUPPORTED_OPS:
                raise StreamingError(f"{label}: the C engine has no {name} kernel; it runs "
                                     f"{', '.join(SUPPORTED_OPS)}.")
            if len(op.outputs) != 1:
                raise StreamingError(f"{label} has {len(op.outputs)} outputs; the C engine runs one-output ops.")
            getattr(self, f"_{name.lower()}")(op, label)
        output = self.graph.outputs[0]
        if self.producer.get(output) != len(self.nodes) - 1 or len(self.nodes) < 2:
            raise StreamingError("The model's output is not produced by its last op; re-export it.")
        out_scale, out_zero_point = self.quantisation(output, "the model output")
        if self.nodes[-1].out_shape[0] != 1:
            raise StreamingError(f"The model's output {self.nodes[-1].out_shape} has more than one row; the C engine "
                                 "returns one logits row.")
        return Graph(tuple(self.nodes), scale, zero_point, out_scale, out_zero_point)

    def _add_node(self, op, node: EngineNode) -> None:
        self.nodes.append(node)
        self.producer[op.outputs[0]] = len(self.nodes) - 1

    def _conv_2d(self, op, label: str) -> None:
        options = op.builtinOptions
        if options.dilationHFactor != 1 or options.dilationWFactor != 1:
            raise StreamingError(f"{label}: dilated convolutions are not supported by the C engine.")
        x, w, b = (list(op.inputs) + [-1])[:3]
        producer = self.producer_of(x, label)
        in_shape, out_shape = self.shape(x, label), self.shape(op.outputs[0], label)
        weights = self.constant(w)
        if weights is None or weights.ndim != 4 or weights.shape[3] != in_shape[2] \
                or weights.shape[0] != out_shape[2]:
            raise StreamingError(f"{label}: the filter must be a constant [out, kh, kw, in] int8 tensor.")
        out_c, kh, kw, _ = weights.shape
        q = self.tensor(w).quantization
        filter_scales = np.asarray(q.scale, np.float32)
        if np.any(np.asarray(q.zeroPoint) != 0) or len(filter_scales) not in (1, out_c):
            raise StreamingError(f"{label}: the filter is not symmetric per-channel int8 (TFLite's int8 conv).")
        bias = np.zeros(out_c, np.int32) if b < 0 else self.constant(b)
        if bias is None or bias.dtype != np.int32 or bias.shape != (out_c,):
            raise StreamingError(f"{label}: the bias must be a constant int32 vector of {out_c} values.")
        in_scale, in_zero_point = self.quantisation(x, label)
        out_scale, out_zero_point = self.quantisation(op.outputs[0], label)
        (top, _), (left, _) = [self._padding(options.padding, size, k, s, out, label)
                               for size, k, s, out in ((in_shape[0], kh, options.strideH, out_shape[0]),
                                                       (in_shape[1], kw, options.strideW, out_shape[1]))]
        # PopulateConvolutionQuantizationParams: input * filter / output scale, in double, per channel.
        scales = np.broadcast_to(filter_scales, (out_c,))
        multipliers, shifts = zip(*(_multiplier(float(in_scale) * float(s) / float(out_scale), label)
                                    for s in scales))
        # The kernel adds input_offset = -zero_point to every in-bounds input; folded into the bias here, so
        # that a padding pixel must read exactly the zero point (which is what TF's padding means).
        folded = bias.astype(np.int64) - in_zero_point * weights.reshape(out_c, -1).astype(np.int64).sum(axis=1)
        if np.any(np.abs(folded) >= 2 ** 31):
            raise StreamingError(f"{label}: the folded bias overflows int32.")
        self._add_node(op, EngineNode(
            CONV, f"{label} {kh}x{kw} stride {options.strideH}x{options.strideW}", (producer,), in_shape, out_shape,
            window=kh, stride=options.strideH, pad_top=top, kernel_w=kw, stride_w=options.strideW, pad_left=left,
            act=activation_range(options.fusedActivationFunction, out_scale, out_zero_point, label),
            params={"weights": np.ascontiguousarray(weights), "bias": folded.astype(np.int32),
                    "multiplier": np.asarray(multipliers, np.int64), "shift": np.asarray(shifts, np.int64),
                    "input_zero_point": in_zero_point, "output_zero_point": out_zero_point}))

    @staticmethod
    def _padding(padding: int, size: int, kernel: int, stride: int, out: int, label: str) -> tuple[int, int]:
        """(padding before, output size) of TF's SAME or VALID rule, checked against the tensor's shape."""
        if padding == schema.Padding.SAME:
            expected, before, _ = same_padding(size, kernel, stride)
        else:
            expected, before = (size - kernel) // stride + 1, 0
        if expected != out or expected < 1:
            raise StreamingError(f"{label}: output size {out} does not follow from input {size}, kernel {kernel}, "
                                 f"stride {stride}.")
        return before, expected

    def _pool(self, op, label: str, kind: str) -> None:
        """MAX_POOL_2D or AVERAGE_POOL_2D, VALID or SAME: TFLite's int8 kernels need no parameter but the clamp."""
        options = op.builtinOptions
        x = op.inputs[0]
        in_shape, out_shape = self.shape(x, label), self.shape(op.outputs[0], label)
        rows = (in_shape[0], options.filterHeight, options.strideH, out_shape[0])
        columns = (in_shape[1], options.filterWidth, options.strideW, out_shape[1])
        (top, _), (left, _) = (self._padding(options.padding, *axis, label) for axis in (rows, columns))
        if self.quantisation(x, label) != self.quantisation(op.outputs[0], label):
            raise StreamingError(f"{label}: input and output quantisation differ; TFLite's int8 pools need them "
                                 "equal.")
        out_scale, out_zero_point = self.quantisation(op.outputs[0], label)
        self._add_node(op, EngineNode(
            kind, f"{label} {options.filterHeight}x{options.filterWidth} stride {options.strideH}x{options.strideW}",
            (self.producer_of(x, label),), in_shape, out_shape, window=options.filterHeight, stride=options.strideH,
            pad_top=top, kernel_w=options.filterWidth, stride_w=options.strideW, pad_left=left,
            act=activation_range(options.fusedActivationFunction, out_scale, out_zero_point, label)))

    def _max_pool_2d(self, op, label: str) -> None:
        self._pool(op, label, MAX_POOL)

    def _average_pool_2d(self, op, label: str) -> None:
        self._pool(op, label, AVERAGE_POOL)

    def _elementwise_inputs(self, op, label: str, out_shape) -> tuple[tuple[int, ...], np.ndarray | None, int]:
        """(activation producers, the constant broadcast to one value per channel or None, its input slot)."""
        producers, constant, slot = [], None, -1
        for position, index in enumerate(op.inputs):
            values = self.constant(index)
            if values is None:
                if self.shape(index, label) != out_shape:
                    raise StreamingError(f"{label}: input {self.shape(index, label)} and output {out_shape} differ; "
                                         "the C engine broadcasts only per-channel constants.")
                producers.append(self.producer_of(index, label))
                continue
            shape = [int(d) for d in self.tensor(index).shape]
            if values.size not in (1, out_shape[2]) or any(d != 1 for d in shape[:-1]):
                raise StreamingError(f"{label}: constant of shape {shape} is not per-channel; the C engine "
                                     "broadcasts only [C] (or scalar) constants over a map.")
            constant, slot = np.broadcast_to(values.reshape(-1), (out_shape[2],)).astype(np.int8), position
        if not producers:
            raise StreamingError(f"{label}: both inputs are constants; fold them before export.")
        return tuple(producers), constant, slot

    def _binary(self, op, label: str, kind: str) -> None:
        out_shape = self.shape(op.outputs[0], label)
        producers, constant, slot = self._elementwise_inputs(op, label, out_shape)
        scales, zero_points = zip(*(self.quantisation(i, label) for i in op.inputs))
        out_scale, out_zero_point = self.quantisation(op.outputs[0], label)
        params = {"offset": [-z for z in zero_points], "output_zero_point": out_zero_point,
                  "constant": constant, "constant_slot": slot}
        if kind == ADD:
            # add.cc Prepare: both inputs rescaled to twice the larger input scale (float, then double).
            twice_max = float(2 * max(np.float32(s) for s in scales))
            inputs = [_multiplier(float(s) / twice_max, label) for s in scales]
            output = _multiplier(twice_max / float((1 << ADD_LEFT_SHIFT) * np.float32(out_scale)), label)
            params.update(multiplier=[m for m, _ in inputs], shift=[s for _, s in inputs],
                          output_multiplier=output[0], output_shift=output[1])
        else:
            # mul.cc Prepare: input1 * input2 / output scale, in double.
            params.update(zip(("output_multiplier", "output_shift"),
                              _multiplier(float(scales[0]) * float(scales[1]) / float(out_scale), label)))
        self._add_node(op, EngineNode(kind, label, producers, out_shape, out_shape,
                                      act=activation_range(op.builtinOptions.fusedActivationFunction, out_scale,
                                                           out_zero_point, label),
                                      params=params))

    def _add(self, op, label: str) -> None:
        self._binary(op, label, ADD)

    def _mul(self, op, label: str) -> None:
        self._binary(op, label, MUL)

    def _mean(self, op, label: str) -> None:
        x, axes_index = op.inputs
        axes = self.constant(axes_index)
        if axes is None or sorted(int(a) % 4 for a in axes.reshape(-1)) != [1, 2]:
            raise StreamingError(f"{label}: only the global average pool (MEAN over axes 1, 2) is supported by the "
                                 "C engine.")
        in_shape, out_shape = self.shape(x, label), self.shape(op.outputs[0], label)
        if out_shape != (1, 1, in_shape[2]):
            raise StreamingError(f"{label}: output {out_shape} is not one value per channel.")
        (in_scale, in_zero_point), (out_scale, out_zero_point) = (self.quantisation(x, label),
                                                                  self.quantisation(op.outputs[0], label))
        count = in_shape[0] * in_shape[1]
        multiplier, shift = mean_multiplier(in_scale, out_scale, count, lambda real: _multiplier(real, label))
        self._add_node(op, EngineNode(MEAN, label, (self.producer_of(x, label),), in_shape, out_shape,
                                      window=in_shape[0],
                                      params={"multiplier": multiplier, "shift": shift,
                                              "input_sum_offset": in_zero_point * count,
                                              "output_zero_point": out_zero_point}))

    def _reshape(self, op, label: str) -> None:
        x = op.inputs[0]
        producer = self.producer_of(x, label)
        in_shape, out_shape = self.shape(x, label), self.shape(op.outputs[0], label)
        if out_shape[0] != 1 or math.prod(in_shape) != out_shape[1] * out_shape[2]:
            raise StreamingError(f"{label}: reshape {in_shape} -> {out_shape} is not a flatten into one row.")
        if self.quantisation(x, label) != self.quantisation(op.outputs[0], label):
            raise StreamingError(f"{label}: a reshape that requantises is not supported by the C engine.")
        if in_shape[0] == 1:
            self.producer[op.outputs[0]] = producer  # the same bytes: no node
            return
        self._add_node(op, EngineNode(COLLECT, label, (producer,), in_shape, out_shape, window=in_shape[0]))


def parse(tflite_model: bytes) -> Graph:
    """The nodes of an int8 model; raises `StreamingError` naming the op and why if the engine cannot run it."""
    return _Parser(tflite_model).parse()
