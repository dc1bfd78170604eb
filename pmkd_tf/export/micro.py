"""TensorFlow Lite Micro on the host: which ops to register, how much arena, and running it.

A board project links only the kernels it registers in a
`tflite::MicroMutableOpResolver<N>`, and hands TFLM one static arena. Both
are read off the exported model here, with the same TFLM build the
`tflite-micro` PyPI package ships (reference kernels), so the board gets
numbers that were measured, not guessed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator

import numpy as np
from ai_edge_litert.tools import flatbuffer_utils
from tflite_micro.python.tflite_micro import runtime

from pmkd_tf.errors import ExportError, UnsupportedOpError
from pmkd_tf.export.flatbuffer import op_name

# Builtin op -> the `MicroMutableOpResolver` method that registers its kernel
# (tensorflow/lite/micro/micro_mutable_op_resolver.h). An op missing here has
# no TFLM kernel, so a model that uses it cannot run on a board.
RESOLVER_METHODS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv", "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean", "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "ROUND": "AddRound", "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack", "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}
ARENA_ALIGNMENT = 16


@dataclasses.dataclass(frozen=True)
class ArenaSize:
    """TFLM tensor-arena bytes of one model on this (64-bit) host.

    `minimum` is the smallest arena with which TFLM allocates and invokes the
    model (found by bisection); `recorded` is the total TFLM's recording
    allocator prints. A 32-bit MCU needs at most `minimum` with reference
    kernels (its bookkeeping structs are smaller); optimised kernels such as
    CMSIS-NN may ask for extra scratch, which `arena_used_bytes()` on the
    board shows.
    """

    minimum: int
    recorded: int

    @property
    def board(self) -> int:
        """The arena to declare on the board: `minimum` rounded up to whole KiB."""
        return -(-self.minimum // 1024) * 1024


def model_ops(tflite_model: bytes) -> tuple[str, ...]:
    """The builtin ops the model's graph uses, in order of first use (customs as `CUSTOM:<name>`)."""
    model = flatbuffer_utils.convert_bytearray_to_object(tflite_model)
    names = [op_name(model, operator) for subgraph in model.subgraphs for operator in subgraph.operators]
    return tuple(dict.fromkeys(names))


def check_micro_ops(tflite_model: bytes) -> tuple[str, ...]:
    """The model's ops if TFLM has a kernel for every one; else raise `UnsupportedOpError` naming the rest."""
    ops = model_ops(tflite_model)
    missing = [op for op in ops if op not in RESOLVER_METHODS]
    if missing:
        raise UnsupportedOpError(
            f"The model uses op(s) TensorFlow Lite Micro has no kernel for: {', '.join(missing)}; "
            "replace the layer that produces them with Conv2D/Dense/pooling/elementwise layers."
        )
    return ops


def resolver_lines(ops: tuple[str, ...], name: str = "resolver") -> list[str]:
    """The C++ lines that declare and fill a `MicroMutableOpResolver` for exactly these ops."""
    lines = [f"tflite::MicroMutableOpResolver<{len(ops)}> {name};"]
    lines += [f"{name}.{RESOLVER_METHODS[op]}();" for op in ops]
    return lines


@contextlib.contextmanager
def _c_stderr() -> Iterator[list[str]]:
    """Capture what C++ code writes to file descriptor 2 (TFLM reports there, not to `sys.stderr`).

    Yields a list that holds the captured text once the block exits.
    """
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _interpreter(tflite_model: bytes, arena_size: int | None) -> runtime.Interpreter:
    """A TFLM interpreter (all TFLM kernels registered); `arena_size` None is TFLM's 10x-model-size default."""
    return runtime.Interpreter.from_bytes(tflite_model, arena_size=arena_size)


def _runs_with(tflite_model: bytes, arena_size: int, example: np.ndarray) -> bool:
    """Whether TFLM can allocate and invoke the model in `arena_size` bytes (the bisection's test)."""
    try:
        interpreter = _interpreter(tflite_model, arena_size)
        interpreter.set_input(example, 0)
        interpreter.invoke()
    except RuntimeError:
        return False
    return True


def run_micro(tflite_model: bytes, inputs: np.ndarray, arena_size: int | None = None) -> np.ndarray:
    """Run each input (already in the model's input dtype, without batch axis) through TFLM; stack the outputs."""
    try:
        with _c_stderr() as log:
            interpreter = _interpreter(tflite_model, arena_size)
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in log[0].splitlines() if line.strip())[:300]
        raise ExportError(f"TensorFlow Lite Micro cannot load the model ({error}): {detail}") from error
    outputs = []
    for example in inputs:
        interpreter.set_input(example[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0))[0])
    return np.stack(outputs)


def recorded_arena(tflite_model: bytes, example: np.ndarray) -> int:
    """The arena total TFLM's RecordingMicroAllocator prints after one invoke (parsed from C stderr)."""
    interpreter = _interpreter(tflite_model, None)
    interpreter.set_input(example, 0)
    interpreter.invoke()
    with _c_stderr() as log:
        interpreter.print_allocations()
    for line in log[0].splitlines():
        if "Arena allocation total" in line:
            return int(line.split("total")[1].split()[0])
    raise ExportError(f"TFLM did not report its arena allocation; its output was: {log[0][:200]!r}")


def measure_arena(tflite_model: bytes) -> ArenaSize:
    """The smallest arena that runs the model (bisection), and TFLM's own recorded total."""
    details = _interpreter(tflite_model, None).get_input_details(0)
    example = np.zeros(details["shape"], details["dtype"])
    recorded = recorded_arena(tflite_model, example)
    low, high = 0, max(recorded, ARENA_ALIGNMENT)
    with _c_stderr():
        while not _runs_with(tflite_model, high, example):
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if _runs_with(tflite_model, middle, example):
                high = middle
            else:
                low = middle
    return ArenaSize(minimum=high, recorded=recorded)
