"""Row-streaming (on-the-fly) inference: run a student's `.tflite` one image row at a time.

This is the point of a 1xN student. Every conv after the stem has kernel
height 1, so output row r of a layer depends on one input row (row r, or row
2r after a vertical stride of 2), and the whole network can run as rows
arrive from a camera, holding no frame buffer:

* the NxN stem keeps an N-row line buffer (padding rows above and below);
* every later layer turns one input row into one output row; a vertically
  strided layer simply keeps every other row; a 2x2 max-pool, or the 2x1
  pool before a stride of `--downsampling=average|max`, keeps 2 rows;
* global average pooling keeps a running per-channel sum;
* the classifier runs once, after the last row.

The executor is one graph walker over "nodes" (one per TFLite op). It
pushes each camera row depth-first through the graph and counts the bytes
of every row, line buffer, queue and accumulator it holds at any moment, so
the reported peak is what a line-by-line runtime must hold. The same nodes
also give the full-frame peak (whole tensors, same liveness rule).

`TFLiteStreamer` builds the nodes from a float or int8 `.tflite`: each op
is cut out as a one-op model with the same weights and quantisation and run
by LiteRT's reference kernels (which TFLite Micro matches bit for bit) on
row strips. A conv's "same" padding is done here, with the input zero point
for int8 (what the kernel's padding means) and 0.0 for float. A pool
ignores its padding rather than reading it, so it runs on the rows of its
window inside the input and pads columns by the kernel's own rule. Only the
global average pool's final step is computed here: for int8 the kernel's
integer requantisation, emulated from the op's own parameters; for float
the sum divided by the pixel count. One code path thus serves both models,
and the stream equals the full-frame model run by the same kernels.

A model with a conv of kernel height > 1 after the stem (a teacher) is
refused: each such layer would need an N-row line buffer.
`line_buffers=True` streams it anyway, with those buffers, to measure
exactly that cost.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from pmkd_tf.errors import StreamingError
from pmkd_tf.export.flatbuffer import DTYPES, constant, op_name, quantisation
from pmkd_tf.export.tflite import TensorSpec, quantize_pixels
from pmkd_tf.export.tflite_arithmetic import quantized_mean, same_padding

IMAGE = -1
WINDOW, MEAN, COLLECT = "window", "mean", "collect"
UNQUANTISED = (0.0, 0)  # the (scale, zero point) of a float tensor


@dataclasses.dataclass(frozen=True)
class LiteRTNode:
    """One op of the model as the row executor runs it: its rows, and LiteRT computing them.

    (The C engine's counterpart, with the kernel's integer parameters, is
    `pmkd_tf.export.cstream.graph.EngineNode`.)

    kind:
      "window": output row r is `compute(rows)` of the input rows
        `r * stride - pad_top + [0, window)` (rows outside the input are
        `pad_row`, or left out if it is None: a pool's padding is no
        value, its window just ends there); with several inputs (Add),
        `window` is 1 and row r of every input is passed. A non-spatial
        tensor (after pooling) is one row of height 1.
      "mean": the input rows are summed into one `acc_dtype` accumulator;
        `compute([sum])` gives the output after the last row.
      "collect": the rows are stacked and `compute([frame])` runs once
        (Flatten before a classifier; its map is 1x1 in the zoo).
    `frame_bytes` is the size of the whole output tensor, for the full-frame
    comparison.
    """

    name: str
    inputs: tuple[int, ...]
    kind: str
    in_height: int
    out_height: int
    compute: Callable[[list[np.ndarray]], np.ndarray]
    frame_bytes: int
    window: int = 1
    stride: int = 1
    pad_top: int = 0
    pad_row: np.ndarray | None = None
    acc_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """The output of one streamed image and the memory streaming needed.

    `peak_bytes` is the largest total of activation bytes the executor held
    at once (rows in flight, line buffers, queues, accumulators);
    `frame_peak_bytes` is the same count for layer-by-layer full-frame
    execution; `line_buffer_rows` is the largest number of input rows any
    one node kept.
    """

    logits: np.ndarray
    peak_bytes: int
    frame_peak_bytes: int
    line_buffer_rows: int


class _Ledger:
    """The activation bytes held at each moment and their peak; an array held twice counts once."""

    def __init__(self) -> None:
        self._held: dict[int, list] = {}
        self.bytes = 0
        self.peak = 0

    def hold(self, array: np.ndarray) -> None:
        entry = self._held.get(id(array))
        if entry is not None:
            entry[1] += 1
            return
        self._held[id(array)] = [array, 1]
        self.bytes += array.nbytes
        self.peak = max(self.peak, self.bytes)

    def release(self, array: np.ndarray) -> None:
        entry = self._held[id(array)]
        entry[1] -= 1
        if not entry[1]:
            del self._held[id(array)]
            self.bytes -= array.nbytes


class _RowWalk:
    """One image pushed row by row through the nodes, depth-first.

    Work is a stack rather than recursion (a ResNet-50 is ~200 nodes deep):
    a "deliver" item hands one row to one consumer; a "resume" item lets a
    node that has several output rows ready (the bottom padding of a line
    buffer) emit the next one only after the previous one has travelled all
    the way down, so every edge sees its rows in order.
    """

    def __init__(self, nodes: Sequence[LiteRTNode]) -> None:
        self.nodes = nodes
        self.consumers: dict[int, list[tuple[int, int]]] = {IMAGE: []}
        for index, node in enumerate(nodes):
            self.consumers[index] = []
            for slot, producer in enumerate(node.inputs):
                self.consumers[producer].append((index, slot))
        self.ledger = _Ledger()
        self.kept: dict[int, dict[int, np.ndarray]] = {i: {} for i in range(len(nodes))}
        self.queues: dict[int, list[list[np.ndarray]]] = {i: [[] for _ in s.inputs] for i, s in enumerate(nodes)}
        self.next_row = [0] * len(nodes)
        self.sums: dict[int, np.ndarray] = {}
        self.work: list[tuple] = []
        self.max_kept = 0
        self.outputs: list[np.ndarray] = []

    def image(self, rows: np.ndarray) -> np.ndarray:
        for index, row in enumerate(rows):
            self._emit(IMAGE, index, np.array(row))
            while self.work:
                item = self.work.pop()
                if item[0] == "resume":
                    self._advance(item[1], item[2])
                else:
                    _, consumer, slot, row_index, delivered = item
                    self._deliver(consumer, slot, row_index, delivered)
                    self.ledger.release(delivered)
        if len(self.outputs) != 1:
            raise StreamingError(f"The streamed graph produced {len(self.outputs)} outputs instead of one logits row.")
        return self.outputs[0]

    def _emit(self, index: int, row_index: int, row: np.ndarray) -> None:
        if index == len(self.nodes) - 1:
            self.outputs.append(row)
        for consumer, slot in reversed(self.consumers[index]):
            self.ledger.hold(row)
            self.work.append(("deliver", consumer, slot, row_index, row))

    def _finish(self, index: int, row_index: int, output: np.ndarray, used: list[np.ndarray]) -> None:
        """Release the inputs an output no longer needs (after it exists: both were held together) and emit it."""
        self.ledger.hold(output)
        for array in used:
            self.ledger.release(array)
        self._emit(index, row_index, output)
        self.ledger.release(output)

    def _deliver(self, index: int, slot: int, row_index: int, row: np.ndarray) -> None:
        node = self.nodes[index]
        if node.kind == MEAN:
            self._mean(index, node, row)
        elif node.kind == COLLECT:
            self._collect(index, node, row_index, row)
        elif len(node.inputs) > 1:
            self._join(index, node, slot, row)
        else:
            self._keep(index, node, row_index, row)
            self._advance(index, row_index)

    def _keep(self, index: int, node: LiteRTNode, row_index: int, row: np.ndarray) -> None:
        """Store an input row if a future output row reads it (a stride-2 layer never stores odd rows)."""
        first = max(self.next_row[index], -(-(row_index + node.pad_top - node.window + 1) // node.stride))
        last = min(node.out_height - 1, (row_index + node.pad_top) // node.stride)
        if first <= last:
            self.kept[index][row_index] = row
            self.ledger.hold(row)
            self.max_kept = max(self.max_kept, len(self.kept[index]))

    def _advance(self, index: int, newest: int) -> None:
        """Emit the next output row of a window node if input rows up to `newest` complete it."""
        node, kept = self.nodes[index], self.kept[index]
        out_row = self.next_row[index]
        start = out_row * node.stride - node.pad_top
        if out_row >= node.out_height or min(start + node.window - 1, node.in_height - 1) > newest:
            return
        rows = range(start, start + node.window)
        if node.pad_row is None:
            rows = range(max(start, 0), min(rows.stop, node.in_height))
        strip = [kept[j] if 0 <= j < node.in_height else node.pad_row for j in rows]
        output = node.compute(strip)
        self.next_row[index] += 1
        stale = [kept.pop(j) for j in sorted(kept) if j < start + node.stride]
        self.work.append(("resume", index, newest))
        self._finish(index, out_row, output, stale)

    def _join(self, index: int, node: LiteRTNode, slot: int, row: np.ndarray) -> None:
        queues = self.queues[index]
        queues[slot].append(row)
        self.ledger.hold(row)
        if all(queues):
            rows = [queue.pop(0) for queue in queues]
            out_row = self.next_row[index]
            self.next_row[index] += 1
            self._finish(index, out_row, node.compute(rows), rows)

    def _mean(self, index: int, node: LiteRTNode, row: np.ndarray) -> None:
        if index not in self.sums:
            self.sums[index] = np.zeros(row.shape[-1], node.acc_dtype)
            self.ledger.hold(self.sums[index])
        total = self.sums[index]
        for pixel in row.reshape(-1, row.shape[-1]):  # one at a time, in the reference kernel's summation order
            total += pixel
        self.next_row[index] += 1
        if self.next_row[index] == node.in_height:
            self._finish(index, 0, node.compute([total]), [self.sums.pop(index)])

    def _collect(self, index: int, node: LiteRTNode, row_index: int, row: np.ndarray) -> None:
        kept = self.kept[index]
        kept[row_index] = row
        self.ledger.hold(row)
        self.max_kept = max(self.max_kept, len(kept))
        if len(kept) == node.in_height:
            rows = [kept.pop(j) for j in sorted(kept)]
            self._finish(index, 0, node.compute([np.stack(rows)]), rows)


def frame_peak_bytes(nodes: Sequence[LiteRTNode], image_bytes: int) -> int:
    """Peak activation bytes of running the nodes one whole tensor at a time, in order.

    The same rule as the streaming count: a tensor lives from its producer
    until its last consumer has run, and a node's inputs and output are
    alive together.
    """
    last_use = {}
    for index, node in enumerate(nodes):
        for producer in node.inputs:
            last_use[producer] = index
    live = {IMAGE: image_bytes}
    peak = 0
    for index, node in enumerate(nodes):
        peak = max(peak, sum(live.values()) + node.frame_bytes)
        live[index] = node.frame_bytes
        for producer in set(node.inputs):
            if last_use[producer] == index:
                del live[producer]
    return peak


def stream(nodes: Sequence[LiteRTNode], image: np.ndarray) -> StreamResult:
    """Feed `image` (H, W, C) one row at a time through `nodes`; return the logits and the memory held."""
    walk = _RowWalk(nodes)
    logits = walk.image(image)
    return StreamResult(
        logits=logits,
        peak_bytes=walk.ledger.peak,
        frame_peak_bytes=frame_peak_bytes(nodes, image.nbytes),
        line_buffer_rows=walk.max_kept,
    )


ELEMENTWISE_OPS = {
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
    "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH", "SQUARED_DIFFERENCE",
}
CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D"}
POOL_OPS = {"MAX_POOL_2D", "AVERAGE_POOL_2D"}
FLATTEN_OPS = {"RESHAPE", "SQUEEZE"}

class _OneOp:
    """One op of the int8 model cut out as its own `.tflite`, with chosen activation shapes, run by LiteRT."""

    def __init__(self, model, op, shapes: dict[int, list[int]], options=None) -> None:
        graph = model.subgraphs[0]
        tensors, buffers, remap = [], [schema.BufferT()], {}
        for index in [*op.inputs, *op.outputs]:
            if index < 0 or index in remap:
                continue
            tensor = copy.deepcopy(graph.tensors[index])
            constant = model.buffers[tensor.buffer]
            tensor.buffer = 0
            if index in shapes:
                tensor.shape, tensor.shapeSignature = list(shapes[index]), None
            elif constant.data is not None and len(constant.data):
                buffers.append(copy.deepcopy(constant))
                tensor.buffer = len(buffers) - 1
            remap[index] = len(tensors)
            tensors.append(tensor)
        one = copy.deepcopy(op)
        one.opcodeIndex = 0
        one.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        one.outputs = [remap[i] for i in op.outputs]
        if options is not None:
            one.builtinOptions = options
        subgraph = schema.SubGraphT()
        subgraph.tensors, subgraph.operators = tensors, [one]
        subgraph.inputs = [remap[i] for i in op.inputs if i in shapes]
        subgraph.outputs = [remap[i] for i in op.outputs]
        sub = schema.ModelT()
        sub.version, sub.description = model.version, "one op of a row-streamed model"
        sub.operatorCodes = [copy.deepcopy(model.operatorCodes[op.opcodeIndex])]
        sub.subgraphs, sub.buffers = [subgraph], buffers
        content = bytes(flatbuffer_utils.convert_object_to_bytearray(sub))
        self.interpreter = litert.Interpreter(
            model_content=content, num_threads=1,
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
        self.interpreter.allocate_tensors()
        self.inputs = [d["index"] for d in self.interpreter.get_input_details()]
        self.output = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, arrays: list[np.ndarray]) -> np.ndarray:
        for index, array in zip(self.inputs, arrays):
            self.interpreter.set_tensor(index, array)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


class TFLiteStreamer:
    """Row-streams images through a float or int8 `.tflite` (built once; call it per image).

    The input is a uint8 camera image (H, W, C); each row becomes the
    model's input as it arrives (quantised with the input scale and zero
    point for int8, float pixels for float). `refusal` ("not an on-the-fly
    model: ...") names the convs after the first with kernel height > 1, or
    is None; such a model raises `StreamingError` unless `line_buffers` is set.
    """

    def __init__(self, tflite_model: bytes, line_buffers: bool = False) -> None:
        model = flatbuffer_utils.read_model_from_bytearray(tflite_model)
        if len(model.subgraphs) != 1:
            raise StreamingError(f"The model has {len(model.subgraphs)} subgraphs; only single-graph models stream.")
        self._model = model
        graph = model.subgraphs[0]
        if len(graph.inputs) != 1:
            raise StreamingError(f"The model has {len(graph.inputs)} inputs; only one-image models stream.")
        image = self._tensor(graph.inputs[0])
        if image.type not in (schema.TensorType.INT8, schema.TensorType.FLOAT32):
            raise StreamingError("Only int8 or float32 models stream; export with pmkd_tf.export.")
        self.input = TensorSpec(tuple(image.shape), np.dtype(DTYPES[image.type]).name,
                                *(quantisation(image) or UNQUANTISED))
        self._producer = {graph.inputs[0]: IMAGE}
        self._spatial = {graph.inputs[0]}
        self._convs: list[tuple[int, int]] = []  # (op index, kernel height) of every conv, in order
        self.nodes: list[LiteRTNode] = []
        for op in graph.operators:
            if len(op.outputs) != 1:
                raise StreamingError(f"Op {op_name(self._model, op)} has {len(op.outputs)} outputs; only one-output "
                                     "ops stream.")
            node = self._node(op, len(self.nodes))
            self.nodes.append(node)
            self._producer[op.outputs[0]] = len(self.nodes) - 1
            if node.kind == WINDOW and any(i in self._spatial for i in op.inputs):
                self._spatial.add(op.outputs[0])
        if graph.outputs[0] != graph.operators[-1].outputs[0]:
            raise StreamingError("The model's output is not produced by its last op; re-export it.")
        tall = [f"#{index}" for index, height in self._convs[1:] if height > 1]
        self.refusal = None if not tall else (
            f"not an on-the-fly model: {len(tall)} conv(s) after the stem have kernel height > 1 (ops "
            f"{', '.join(tall[:3])}{', ...' if len(tall) > 3 else ''}), so each would need a line buffer; export the "
            "1xN student (or pass line_buffers=True to measure that cost).")
        if self.refusal and not line_buffers:
            raise StreamingError(f"The model is {self.refusal}")

    def _tensor(self, index: int):
        return self._model.subgraphs[0].tensors[index]

    def _node(self, op, index: int) -> LiteRTNode:
        name = op_name(self._model, op)
        activations = [i for i in op.inputs if i in self._producer]
        inputs = tuple(self._producer[i] for i in activations)
        out = self._tensor(op.outputs[0])
        frame = int(np.prod(out.shape[1:])) * np.dtype(DTYPES[out.type]).itemsize
        if not any(i in self._spatial for i in activations):
            one = _OneOp(self._model, op, {i: self._tensor(i).shape for i in activations})
            return LiteRTNode(name, inputs, WINDOW, 1, 1, lambda arrays: one(arrays), frame)
        if not all(i in self._spatial for i in activations):
            raise StreamingError(f"Op {name} mixes row-streamed and whole tensors; it cannot stream.")
        in_tensor = self._tensor(activations[0])
        if name in CONV_OPS:
            return self._window(op, index, name, inputs, in_tensor, out, frame)
        if name in POOL_OPS:
            return self._pool(op, name, inputs, in_tensor, out, frame)
        if name in ELEMENTWISE_OPS:
            return self._elementwise(op, name, inputs, activations, out, frame)
        if name == "MEAN":
            return self._mean(op, name, inputs, in_tensor, out, frame)
        if name in FLATTEN_OPS:
            one = _OneOp(self._model, op, {activations[0]: in_tensor.shape})
            return LiteRTNode(name, inputs, COLLECT, in_tensor.shape[1], 1, lambda frames: one([frames[0][None]]),
                              frame)
        raise StreamingError(f"Op {name} cannot run on row strips; only conv, pool, elementwise and mean ops stream.")

    def _window(self, op, index, name, inputs, in_tensor, out, frame) -> LiteRTNode:
        """A conv: output row r from a strip of kernel-height input rows, "same" padding done here."""
        options = copy.deepcopy(op.builtinOptions)
        if options.dilationHFactor != 1 or options.dilationWFactor != 1:
            raise StreamingError(f"{name}: dilated convolutions do not stream.")
        kh, kw = self._tensor(op.inputs[1]).shape[1:3]
        self._convs.append((index, kh))
        _, height, width, channels = in_tensor.shape
        if options.padding == schema.Padding.SAME:
            _, top, _ = same_padding(height, kh, options.strideH)
            _, left, right = same_padding(width, kw, options.strideW)
        else:
            top = left = right = 0
        options.padding = schema.Padding.VALID
        zero_point = (quantisation(in_tensor) or UNQUANTISED)[1]  # 0 for a float model: padding with 0.0
        one = _OneOp(self._model, op, {op.inputs[0]: [1, kh, width + left + right, channels],
                                       op.outputs[0]: [1, 1, out.shape[2], out.shape[3]]}, options)

        def compute(strip: list[np.ndarray]) -> np.ndarray:
            x = np.pad(np.stack(strip)[None], ((0, 0), (0, 0), (left, right), (0, 0)), constant_values=zero_point)
            return one([x])[0, 0]

        return LiteRTNode(name, inputs, WINDOW, height, out.shape[1], compute, frame, window=kh,
                          stride=options.strideH, pad_top=top,
                          pad_row=np.full((width, channels), zero_point, DTYPES[in_tensor.type]))

    def _pool(self, op, name, inputs, in_tensor, out, frame) -> LiteRTNode:
        """A max or average pool: output row r from the rows of its window that lie inside the input.

        A "same" pool skips its padding (an average divides by the pixels
        inside), so no pad row would do; an edge window is just shorter. Each
        window height that occurs gets its own one-op model whose filter
        height and stride are that height: exactly those rows, no vertical
        padding. The columns are the whole input row under the op's own
        padding rule, which the kernel applies itself.
        """
        options = op.builtinOptions
        _, height, width, channels = in_tensor.shape
        kh, stride = options.filterHeight, options.strideH
        top = same_padding(height, kh, stride)[1] if options.padding == schema.Padding.SAME else 0
        heights = {min(r * stride - top + kh, height) - max(r * stride - top, 0) for r in range(out.shape[1])}
        ones: dict[int, _OneOp] = {}
        for rows in heights:
            strip = copy.deepcopy(options)
            strip.filterHeight = strip.strideH = rows
            ones[rows] = _OneOp(self._model, op, {op.inputs[0]: [1, rows, width, channels],
                                                  op.outputs[0]: [1, 1, out.shape[2], out.shape[3]]}, strip)
        return LiteRTNode(name, inputs, WINDOW, height, out.shape[1],
                          lambda strip: ones[len(strip)]([np.stack(strip)[None]])[0, 0], frame,
                          window=kh, stride=stride, pad_top=top)

    def _elementwise(self, op, name, inputs, activations, out, frame) -> LiteRTNode:
        heights = {self._tensor(i).shape[1] for i in activations}
        for index in op.inputs:
            shape = self._tensor(index).shape if index >= 0 and index not in self._producer else []
            if len(shape) == 4 and shape[1] != 1:
                raise StreamingError(f"{name} takes a constant with {shape[1]} rows; it cannot stream.")
        if len(heights) != 1:
            raise StreamingError(f"{name} combines maps of different heights {sorted(heights)}; it cannot stream.")
        shapes = {i: [1, 1, *self._tensor(i).shape[2:]] for i in activations}
        shapes[op.outputs[0]] = [1, 1, *out.shape[2:]]
        one = _OneOp(self._model, op, shapes)
        return LiteRTNode(name, inputs, WINDOW, heights.pop(), out.shape[1],
                          lambda rows: one([row[None, None] for row in rows])[0, 0], frame)

    def _mean(self, op, name, inputs, in_tensor, out, frame) -> LiteRTNode:
        axes = sorted(int(a) % 4 for a in constant(self._model, op.inputs[1]).reshape(-1))
        if axes != [1, 2]:
            raise StreamingError(f"MEAN over axes {axes}: only the global average pool (axes 1, 2) streams.")
        _, height, width, _ = in_tensor.shape
        input_qp, output_qp = (quantisation(t) or UNQUANTISED for t in (in_tensor, out))
        shape, dtype = out.shape, DTYPES[out.type]
        if not input_qp[0]:
            count = np.float32(height * width)
            return LiteRTNode(name, inputs, MEAN, height, 1, lambda acc: (acc[0] / count).reshape(shape), frame)
        return LiteRTNode(name, inputs, MEAN, height, 1,
                          lambda acc: quantized_mean(acc[0], height * width, input_qp, output_qp, dtype).reshape(shape),
                          frame, acc_dtype="int32")

    def __call__(self, pixels: np.ndarray) -> StreamResult:
        """Stream one uint8 image; the logits are the model's raw output row (int8 or float)."""
        if tuple(pixels.shape) != self.input.shape[1:]:
            raise StreamingError(f"Expected an image of shape {self.input.shape[1:]}, got {tuple(pixels.shape)}.")
        result = stream(self.nodes, quantize_pixels(pixels, self.input))
        return dataclasses.replace(result, logits=result.logits.reshape(-1))
