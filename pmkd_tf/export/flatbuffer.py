"""Reading a `.tflite` flatbuffer: op names, tensor dtypes, quantisation and constants.

The one copy that TFLite Micro's op list (`micro`), the Python row streamer
(`streaming`) and the C engine's planner (`cstream.graph`) read models with.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
TENSOR_TYPE_NAMES = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
DTYPES = {schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32,
          schema.TensorType.FLOAT32: np.float32, schema.TensorType.UINT8: np.uint8,
          schema.TensorType.INT16: np.int16}


def op_name(model, op) -> str:
    """The builtin name of an operator of `model` (a `ModelT`), e.g. "CONV_2D"; a custom op is "CUSTOM:<name>"."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode}"
    return OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def quantisation(tensor) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantised tensor; None for a float or per-channel one."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0]), int(q.zeroPoint[0])


def constant(model, index: int) -> np.ndarray | None:
    """The constant data of tensor `index` of the first subgraph, in its dtype and shape; None for an activation."""
    tensor = model.subgraphs[0].tensors[index]
    data = model.buffers[tensor.buffer].data
    if data is None or not len(data):
        return None
    return np.frombuffer(bytes(np.asarray(data, np.uint8)), DTYPES[tensor.type]).reshape(tensor.shape)
