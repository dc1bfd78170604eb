"""`<out_dir>/c/`: a dependency-free C engine that runs the int8 model row by row, generated from its `.tflite`.

The C is a small fixed engine plus generated tables, not code unrolled per
model. It sits in `c/src/`:

* `pmkd_stream.c`, `pmkd_engine.h` (fixed, copied from `engine/`): the
  scheduler and the int8 kernels (conv, max and average pool, add, mul, mean, collect);
* `pmkd_stream.h` (generated): the API, the input/output macros and the
  complete `pmkd_stream` struct, so `sizeof(pmkd_stream)` is the model's RAM;
* `pmkd_model.c` (generated): one `const` table entry per node, with its
  weights, folded biases, per-channel multipliers and shifts, the rows it
  computes and where its rows live in the arena (`layout.py`).

`c/` itself is a library a board project adds in one line, from that one
copy of the sources: `CMakeLists.txt` defines the static library target
`pmkd_stream` (`add_subdirectory(c)`), and `library.properties` with `src/`
is the Arduino library layout (Arduino compiles `src/` only).

The directory is written under a temporary name and renamed into place, so a
model the engine cannot run (`StreamingError`) leaves no `c/` behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pmkd_tf.export.cstream import graph as graph_module
from pmkd_tf.export.cstream.graph import (ADD, AVERAGE_POOL, COLLECT, CONV, INPUT, MAX_POOL, MEAN, MUL, WINDOW_KINDS,
                                          EngineNode, Graph)
from pmkd_tf.export.cstream.layout import Layout, lay_out

ENGINE_DIR = Path(__file__).resolve().parent / "engine"
ENGINE_FILES = ("pmkd_stream.c", "pmkd_engine.h")
HEADER, MODEL = "pmkd_stream.h", "pmkd_model.c"
SOURCE_DIR = "src"
CMAKE_LISTS, ARDUINO_PROPERTIES = "CMakeLists.txt", "library.properties"
# Every file of c/, as a path relative to it.
FILES = (CMAKE_LISTS, ARDUINO_PROPERTIES, *(f"{SOURCE_DIR}/{name}" for name in (HEADER, *ENGINE_FILES, MODEL)))
LIBRARY = "pmkd_stream"  # the CMake target and the Arduino library's name
# The Arduino library's version (Arduino wants semver): that of the engine's API in pmkd_stream.h, which a
# board's code depends on; the model inside is named in the library's sentence.
LIBRARY_VERSION = "1.0.0"
_KIND_ENUM = {INPUT: "PMKD_INPUT", CONV: "PMKD_CONV", MAX_POOL: "PMKD_MAX_POOL", AVERAGE_POOL: "PMKD_AVERAGE_POOL",
              ADD: "PMKD_ADD", MUL: "PMKD_MUL", MEAN: "PMKD_MEAN", COLLECT: "PMKD_COLLECT"}


def source_dir(c_dir: str | Path) -> Path:
    """The folder of an exported `c/` that holds the C sources: what a compiler is given with `-I`, and compiles."""
    return Path(c_dir) / SOURCE_DIR


@dataclasses.dataclass(frozen=True)
class CSources:
    """What `write_c_sources` wrote and what the layout says about it (the measured sizes come from compiling)."""

    directory: Path
    files: tuple[str, ...]
    input_shape: tuple[int, int, int]
    classes: int
    nodes: int
    arena_bytes: int
    macs: int
    macs_executed: int
    input_rows_read: int

    def layout_summary(self) -> dict:
        """The report's view of the layout (its "plan" section)."""
        return {"nodes": self.nodes, "arena_bytes": self.arena_bytes, "macs": self.macs,
                "macs_executed": self.macs_executed, "input_rows_read": self.input_rows_read,
                "input_rows": self.input_shape[0]}


def _array(ctype: str, name: str, values, per_line: int, form: str = "d") -> str:
    """A `static const` C array, `per_line` values a line."""
    values = [int(v) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(f"{v:{form}}" for v in values[i:i + per_line]) for i in range(0, len(values), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(values)}] = {{\n    {body}\n}};\n"


def _bitmap(rows: np.ndarray) -> list[int]:
    """The live rows as bytes, row r in bit r % 8 of byte r / 8."""
    return [int(b) for b in np.packbits(rows.astype(np.uint8), bitorder="little")]


def _float(value: float) -> str:
    """A float32 as a C float literal that reads back as the same float (9 significant digits)."""
    text = f"{float(np.float32(value)):.9g}"
    return f"{text}{'' if any(c in text for c in '.e') else '.0'}f"


def _shape(shape: tuple[int, int, int]) -> str:
    return "x".join(str(d) for d in shape)


def _describe(index: int, node: EngineNode, layout: Layout) -> str:
    """The comment above a node's tables: what it is, what it computes, where its rows live."""
    live = layout.live[index]
    rows = f"{int(live.sum())} of {len(live)} rows" if not live.all() else f"all {len(live)} rows"
    if layout.ring[index]:
        where = f"ring of {layout.ring[index]} row(s) at arena byte {layout.offset[index]}"
        if layout.ring_owner[index] != index:
            where += f", in place over node {layout.ring_owner[index]}"
    else:
        where = "read in place from the caller's row"
    inputs = f" <- node {', '.join(str(i) for i in node.inputs)}" if node.inputs else ""
    shapes = f"{_shape(node.in_shape)} -> {_shape(node.out_shape)}" if node.inputs else _shape(node.out_shape)
    return f"/* node {index}: {node.label}{inputs}, {shapes}; {rows}; {where} */"


def _params(index: int, node: EngineNode, layout: Layout) -> tuple[str, str]:
    """(C definitions of the node's constant arrays and parameter struct, the initializer of `.params`)."""
    p, name = node.params, f"node{index}"
    if node.kind == CONV:
        code = (_array("int8_t", f"{name}_weights", p["weights"], 24)
                + _array("int32_t", f"{name}_bias", p["bias"], 8)
                + _array("int32_t", f"{name}_multiplier", p["multiplier"], 8)
                + _array("int8_t", f"{name}_shift", p["shift"], 24)
                + f"static const pmkd_conv {name}_params = {{\n"
                  f"    .weights = {name}_weights, .bias = {name}_bias, .multiplier = {name}_multiplier,\n"
                  f"    .shift = {name}_shift, .input_zero_point = {p['input_zero_point']}, "
                  f".output_zero_point = {p['output_zero_point']}}};\n")
        return code, f"&{name}_params"
    if node.kind in (ADD, MUL):
        code = ""
        constant = "NULL"
        if p["constant"] is not None:
            code += _array("int8_t", f"{name}_constant", p["constant"], 24)
            constant = f"{name}_constant"
        multiplier = p.get("multiplier", [0, 0])
        shift = p.get("shift", [0, 0])
        code += (f"static const pmkd_elementwise {name}_params = {{\n"
                 f"    .constant = {constant}, .constant_slot = {max(p['constant_slot'], 0)},\n"
                 f"    .offset = {{{p['offset'][0]}, {p['offset'][1]}}}, "
                 f".multiplier = {{{multiplier[0]}, {multiplier[1]}}}, .shift = {{{shift[0]}, {shift[1]}}},\n"
                 f"    .output_multiplier = {p['output_multiplier']}, .output_shift = {p['output_shift']}, "
                 f".output_zero_point = {p['output_zero_point']}}};\n")
        return code, f"&{name}_params"
    if node.kind == MEAN:
        code = (f"static const pmkd_mean {name}_params = {{\n"
                f"    .sums = {layout.accumulator[index]}, .multiplier = {p['multiplier']}, .shift = {p['shift']},\n"
                f"    .input_sum_offset = {p['input_sum_offset']}, .output_zero_point = {p['output_zero_point']}}};\n")
        return code, f"&{name}_params"
    return "", "NULL"


def _node_entry(index: int, node: EngineNode, layout: Layout, params: str) -> str:
    inputs = list(node.inputs) + [0] * (2 - len(node.inputs))
    (in_h, in_w, in_c), (out_h, out_w, out_c) = node.in_shape, node.out_shape
    return (f"    {{.kind = {_KIND_ENUM[node.kind]}, .inputs = {len(node.inputs)}, .in = {{{inputs[0]}, {inputs[1]}}},"
            f" .live = node{index}_live, .params = {params},\n"
            f"     .in_h = {in_h}, .in_w = {in_w}, .in_c = {in_c}, .out_h = {out_h}, .out_w = {out_w}, "
            f".out_c = {out_c},\n"
            f"     .kh = {node.window}, .kw = {node.kernel_w}, .sh = {node.stride}, .sw = {node.stride_w}, "
            f".pad_top = {node.pad_top}, .pad_left = {node.pad_left},\n"
            f"     .ring = {layout.ring[index]}, .offset = {layout.offset[index]}, "
            f".act_min = {node.act[0]}, .act_max = {node.act[1]}}},\n")


def model_source(layout: Layout, origin: str) -> str:
    """pmkd_model.c: the node table and every constant it points to."""
    parts = [f"/* pmkd_model.c: the tables of {origin} for the row-streaming engine (pmkd_stream.c).\n"
             " * Generated by pmkd_tf.export.cstream; do not edit. All of it is const (flash). */\n"
             "#include <stddef.h>\n\n#include \"pmkd_engine.h\"\n"]
    entries = []
    for index, node in enumerate(layout.graph.nodes):
        code, params = _params(index, node, layout)
        parts.append("\n" + _describe(index, node, layout) + "\n" + code
                     + _array("uint8_t", f"node{index}_live", _bitmap(layout.live[index]), 16, "#04x"))
        entries.append(f"    /* {index}: {node.label} */\n" + _node_entry(index, node, layout, params))
    parts.append("\nconst pmkd_node pmkd_nodes[PMKD_NODE_COUNT] = {\n" + "".join(entries) + "};\n")
    return "".join(parts)


def header_source(layout: Layout, origin: str) -> str:
    """pmkd_stream.h: the API, the model's macros and the complete state struct."""
    graph = layout.graph
    height, width, channels = graph.input_shape
    max_window = max((node.window for node in graph.nodes if node.kind in WINDOW_KINDS), default=1)
    row_type = "uint8_t" if max(node.out_shape[0] for node in graph.nodes) < 255 and \
        max(node.in_shape[0] for node in graph.nodes) < 255 else "uint16_t"
    return f"""/* pmkd_stream.h: {origin} as a row-streaming C engine. Generated by pmkd_tf.export.cstream; do not edit.
 *
 *     static pmkd_stream s;            all mutable state: sizeof(pmkd_stream) is the RAM, besides the stack
 *     pmkd_stream_reset(&s);           before each image (a static stream starts out reset)
 *     for (int r = 0; r < PMKD_INPUT_HEIGHT; ++r)
 *         status = pmkd_stream_push_row(&s, row);     PMKD_OK, ..., PMKD_OK, then PMKD_IMAGE_COMPLETE
 *     const int8_t *logits = pmkd_stream_logits(&s);   NULL until the last row is in
 *
 * A row is PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS int8, channels interleaved, rows top to bottom,
 * quantised as model_int8.tflite's input: int8 = round(pixel / PMKD_INPUT_SCALE) + PMKD_INPUT_ZERO_POINT
 * (with scale 1 and zero point -128: pixel - 128). The caller's row need only stay valid during the call.
 * The PMKD_NUM_CLASSES int8 logits equal model_int8.tflite's output bit for bit (LiteRT's reference
 * kernels, TFLite Micro); logit = (int8 - PMKD_OUTPUT_ZERO_POINT) * PMKD_OUTPUT_SCALE.
 * The logits depend on {layout.input_rows_read} of the {height} input rows; the engine skips the others (and
 * every row no later layer reads), but every row must still be pushed: an image is complete after its last.
 *
 * Every misuse the calls can see is reported or harmless, as each says below. What they cannot see is the
 * caller's to avoid: a row shorter than stated, a stream neither zeroed nor reset, and one stream used by
 * two threads (or a thread and an interrupt) at once.
 */
#ifndef PMKD_STREAM_H
#define PMKD_STREAM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{ /* C linkage for C++ callers, such as an Arduino sketch */
#endif

#define PMKD_INPUT_HEIGHT {height}
#define PMKD_INPUT_WIDTH {width}
#define PMKD_INPUT_CHANNELS {channels}
#define PMKD_NUM_CLASSES {graph.classes}
#define PMKD_INPUT_SCALE {_float(graph.input_scale)}
#define PMKD_INPUT_ZERO_POINT ({graph.input_zero_point})
#define PMKD_OUTPUT_SCALE {_float(graph.output_scale)}
#define PMKD_OUTPUT_ZERO_POINT ({graph.output_zero_point})

/* The engine's sizes for this model. */
#define PMKD_NODE_COUNT {len(graph.nodes)}
#define PMKD_ARENA_BYTES {layout.arena_bytes}
#define PMKD_MAX_WINDOW {max_window}
typedef {row_type} pmkd_row;

/* The next row of every node; and the rows in flight, line buffers, shortcut queues and the MEAN sums,
 * at offsets planned offline. `next` comes first so that its address, and so the scheduler's code, does
 * not depend on the arena's size. */
typedef struct pmkd_stream {{
    pmkd_row next[PMKD_NODE_COUNT];
    int32_t arena[(PMKD_ARENA_BYTES + 3) / 4];
}} pmkd_stream;

/* What pmkd_stream_push_row did with a row. The errors are negative and leave the stream as it was;
 * after PMKD_ERROR_PAST_END, pmkd_stream_reset starts the next image. */
typedef enum {{
    PMKD_OK = 0,             /* row accepted; the image needs more rows */
    PMKD_IMAGE_COMPLETE = 1, /* row accepted, and it was the image's last: the logits are ready */
    PMKD_ERROR_NULL = -1,    /* s or row is NULL: nothing done */
    PMKD_ERROR_PAST_END = -2 /* the image already has all its rows: row ignored, logits unchanged */
}} pmkd_status;

/* Starts a new image: forgets every row pushed so far (of a complete image or a partial one), so the
 * next row pushed is row 0 and pmkd_stream_logits returns NULL until that image's last row. A stream
 * whose bytes are all zero (a static one, or one cleared with memset) is already reset; any other must
 * be reset before its first row. With s NULL it does nothing. */
void pmkd_stream_reset(pmkd_stream *s);

/* Pushes the next row of the current image and runs every layer as far as the rows so far allow.
 * Returns PMKD_OK for rows 0 to PMKD_INPUT_HEIGHT - 2 and PMKD_IMAGE_COMPLETE for the last row; after
 * that, PMKD_ERROR_PAST_END for every row until pmkd_stream_reset (the row is ignored). PMKD_ERROR_NULL
 * if s or row is NULL, at any point. An error changes nothing: the same image goes on, or stays complete. */
pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row);

/* The current image's PMKD_NUM_CLASSES logits, inside *s, from the push that returned
 * PMKD_IMAGE_COMPLETE until the next pmkd_stream_reset; rows pushed past the end do not change them.
 * NULL before the first row, mid-image, after a reset, and with s NULL. */
const int8_t *pmkd_stream_logits(const pmkd_stream *s);

#ifdef __cplusplus
}}
#endif

#endif /* PMKD_STREAM_H */
"""


def cmake_source(origin: str) -> str:
    """CMakeLists.txt: the static library target `pmkd_stream`, C99, its header directory public."""
    sources = " ".join(name for name in FILES if name.endswith(".c"))
    return f"""# {origin}'s C engine as the static library {LIBRARY}. Generated by pmkd_tf.export.cstream; do not edit.
#
# With this folder copied into a board project as c/, the project's CMakeLists.txt adds
#
#     add_subdirectory(c)
#     target_link_libraries(app PRIVATE {LIBRARY})
#
# and the application includes "{HEADER}" (its comment shows the calls). The engine is plain C99 with no
# dependencies, so it builds with the project's own toolchain and flags (-mcpu=..., -O2).
cmake_minimum_required(VERSION 3.13)
project({LIBRARY} LANGUAGES C)

add_library({LIBRARY} STATIC {sources})
target_include_directories({LIBRARY} PUBLIC {SOURCE_DIR})
set_target_properties({LIBRARY} PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
"""


def arduino_properties(layout: Layout, origin: str) -> str:
    """library.properties: the Arduino library's metadata, every field the library specification (1.5) lists.

    One line per field (the backslashes below only wrap this source): Arduino's parser has no continuation lines.
    """
    height, width, channels = layout.graph.input_shape
    return f"""# {origin}'s C engine as an Arduino library. Generated by pmkd_tf.export.cstream; do not edit.
# Copy this folder to Arduino/libraries/{LIBRARY}/, or zip it and use Sketch > Include Library > Add .ZIP Library.
name={LIBRARY}
version={LIBRARY_VERSION}
author=pmkd_tf (generated code)
maintainer=pmkd_tf
sentence={origin} as a row-streaming int8 C engine: {height}x{width}x{channels} image rows in, \
{layout.graph.classes} logits out.
paragraph=Bit-exact with the .tflite (LiteRT's reference kernels, TFLite Micro), and no image is held: the RAM is \
one pmkd_stream ({layout.arena_bytes} B of row arena and a row counter per node) plus the stack. Plain C99, no \
malloc, no float; the weights are const, so pick a 32-bit board (e.g. Arm Cortex-M), where they stay in flash. \
{HEADER} shows the calls.
category=Data Processing
url=https://arxiv.org/abs/2003.03944
architectures=*
includes={HEADER}
"""


def generate(int8_model: bytes, origin: str = "model_int8.tflite",
             skip_dead_rows: bool = True) -> tuple[dict[str, str], Layout]:
    """The files of `c/` (path relative to it -> text) and the layout behind them; raises `StreamingError` if the
    engine cannot run the model."""
    graph: Graph = graph_module.parse(int8_model)
    layout = lay_out(graph, skip_dead_rows)
    sources = {HEADER: header_source(layout, origin), MODEL: model_source(layout, origin),
               **{name: (ENGINE_DIR / name).read_text() for name in ENGINE_FILES}}
    texts = {CMAKE_LISTS: cmake_source(origin), ARDUINO_PROPERTIES: arduino_properties(layout, origin),
             **{f"{SOURCE_DIR}/{name}": text for name, text in sources.items()}}
    return texts, layout


def write_c_sources(int8_model: bytes, c_dir: str | Path, origin: str = "model_int8.tflite",
                    skip_dead_rows: bool = True) -> CSources:
    """Generate the C engine of an int8 model into `c_dir` (replacing it whole); see the module docstring.

    `skip_dead_rows=False` makes the engine compute every row, as a
    full-frame runtime does (same logits, more work), for comparisons.
    """
    texts, layout = generate(int8_model, origin, skip_dead_rows)
    c_dir = Path(c_dir).expanduser()
    c_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{c_dir.name}.new.", dir=c_dir.parent))
    try:
        source_dir(staging).mkdir()
        for name in FILES:
            (staging / name).write_text(texts[name])
        if c_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{c_dir.name}.old.", dir=c_dir.parent))
            os.replace(c_dir, old / c_dir.name)
            os.replace(staging, c_dir)
            shutil.rmtree(old)
        else:
            os.replace(staging, c_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    graph = layout.graph
    return CSources(directory=c_dir, files=FILES, input_shape=graph.input_shape, classes=graph.classes,
                    nodes=len(graph.nodes), arena_bytes=layout.arena_bytes, macs=layout.macs,
                    macs_executed=layout.macs_executed, input_rows_read=layout.input_rows_read)
