"""The generated C engine on this machine: compiled with the system compiler, run on images, compared, measured.

`run_engine` compiles `c/src/` with `cc -std=c99 -O2 -Wall -Wextra -Werror` (any
warning fails the run) together with `harness/host_main.c`, runs it on the
given int8 images and compares every logit with the expected ones (LiteRT's
reference kernels). It reports `sizeof(pmkd_stream)` and the peak stack as
the harness measured them, and the engine's code and constant bytes from
`size -A` of its own objects (the harness excluded).

A missing tool is not an error: `run_engine` returns `{"skipped": ...}`
naming the Debian package, and `tools_missing()` lists what is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pmkd_tf.export.cstream.codegen import source_dir
from pmkd_tf.export.cstream.toolchain import Toolchain, read_stats

HARNESS = Path(__file__).resolve().parent / "harness" / "host_main.c"
# The API's contract under misuse (NULL arguments, rows past the end, resets), checked by the tests.
API_CHECK = Path(__file__).resolve().parent / "harness" / "api_check.c"
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
TOOLCHAIN = Toolchain("Host C check", {"cc": "gcc", "size": "binutils"})


def tools_missing() -> list[str]:
    """The tools the host run needs and cannot find, each as "<tool> not found: apt-get install <package>"."""
    return TOOLCHAIN.missing()


def object_sizes(objects: list[Path]) -> dict[str, int]:
    """Code and constant bytes of compiled objects (`size -A`): .text*, and .rodata* with .data.rel.ro*
    (constant tables holding pointers land there in position-independent code)."""
    sizes = {"code_bytes": 0, "const_bytes": 0, "data_bytes": 0, "bss_bytes": 0}
    for name, size in TOOLCHAIN.sections("size", objects):
        if name.startswith(".text"):
            sizes["code_bytes"] += size
        elif name.startswith((".rodata", ".data.rel.ro")):
            sizes["const_bytes"] += size
        elif name.startswith(".data"):
            sizes["data_bytes"] += size
        elif name.startswith(".bss"):
            sizes["bss_bytes"] += size
    return sizes


def compile_program(c_dir: Path, work: Path, harness: Path = HARNESS) -> tuple[Path, list[Path]]:
    """Compile the engine's sources (each to its own object) and link them with `harness`."""
    include = f"-I{source_dir(c_dir)}"
    objects = TOOLCHAIN.compile_each(["cc", *CFLAGS, include], TOOLCHAIN.engine_sources(c_dir), work)
    program = work / Path(harness).stem
    TOOLCHAIN.run_tool(["cc", *CFLAGS, "-pthread", include, str(harness), *map(str, objects), "-o",
                        str(program)], f"compiling and linking {Path(harness).name}")
    return program, objects


def run_engine(c_dir: Path, inputs: np.ndarray, expected: np.ndarray) -> dict:
    """Run the C engine in `c_dir` on every input on this machine; compare with `expected`; measure.

    inputs: int8 (N, H, W, C), quantised as model_int8.tflite's input.
    expected: int8 (N, classes), the logits of LiteRT's reference kernels.
    Returns the report's "host" section, or {"skipped": ...} if a tool is missing.
    """

    def execute(work: Path, images: int) -> tuple[dict[str, int], dict]:
        program, objects = compile_program(Path(c_dir), work)
        output = TOOLCHAIN.run_tool([str(program), str(work / "images.bin"), str(work / "logits.bin")],
                                    f"running {images} images", TOOLCHAIN.timeout_s + 0.05 * images)
        compiler = f"{TOOLCHAIN.version('cc')} {' '.join(CFLAGS)}"
        return read_stats(output), {**object_sizes(objects), "compiler": compiler}

    return TOOLCHAIN.run_engine(inputs, expected, execute)
