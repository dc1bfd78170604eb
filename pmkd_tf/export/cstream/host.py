"""The generated C engine on this machine: compiled with the system compiler, run on images, compared, measured.

`check` compiles `c/` with `cc -std=c99 -O2 -Wall -Wextra -Werror` (any
warning fails the check) together with `harness/host_main.c`, runs it on the
given int8 images and compares every logit with the expected ones (LiteRT's
reference kernels). It reports `sizeof(pmkd_stream)` and the peak stack as
the harness measured them, and the engine's code and constant bytes from
`size -A` of its own objects (the harness excluded).

A missing tool is not an error: `check` returns `{"skipped": ...}` naming
the Debian package, and `tools_missing()` lists what is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pmkd_tf.errors import ExportError

HARNESS = Path(__file__).resolve().parent / "harness" / "host_main.c"
# The API's contract under misuse (NULL arguments, rows past the end, resets), checked by the tests.
API_CHECK = Path(__file__).resolve().parent / "harness" / "api_check.c"
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
TOOLS = {"cc": "gcc", "size": "binutils"}
TIMEOUT_S = 300.0


def tools_missing() -> list[str]:
    """The tools the host check needs and cannot find, each as "<tool> not found: apt-get install <package>"."""
    return [f"{tool} not found: apt-get install {package}" for tool, package in TOOLS.items()
            if shutil.which(tool) is None]


def _run(command: list[str], what: str, timeout_s: float = TIMEOUT_S) -> str:
    """Run a tool; a failure or timeout becomes an ExportError naming the step, in one line."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as error:
        raise ExportError(f"Host C check: {what} did not finish within {timeout_s:.0f} s.") from error
    if result.returncode != 0:
        output = " ".join((result.stderr + " " + result.stdout).split())[:400]
        raise ExportError(f"Host C check: {what} failed (exit {result.returncode}): {output}")
    return result.stdout


def object_sizes(objects: list[Path]) -> dict[str, int]:
    """Code and constant bytes of compiled objects (`size -A`): .text*, and .rodata* with .data.rel.ro*
    (constant tables holding pointers land there in position-independent code)."""
    sizes = {"code_bytes": 0, "const_bytes": 0, "data_bytes": 0, "bss_bytes": 0}
    for line in _run(["size", "-A", *map(str, objects)], "size -A").splitlines():
        fields = line.split()
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        name, size = fields[0], int(fields[1])
        if name.startswith(".text"):
            sizes["code_bytes"] += size
        elif name.startswith((".rodata", ".data.rel.ro")):
            sizes["const_bytes"] += size
        elif name.startswith(".data"):
            sizes["data_bytes"] += size
        elif name.startswith(".bss"):
            sizes["bss_bytes"] += size
    return sizes


def build(c_dir: Path, work: Path, harness: Path = HARNESS) -> tuple[Path, list[Path]]:
    """Compile the engine's sources (each to its own object) and link them with `harness`."""
    sources = sorted(Path(c_dir).glob("*.c"))
    if not sources:
        raise ExportError(f"Host C check: no .c files in {c_dir}; export the C engine first.")
    objects = []
    for source in sources:
        obj = work / f"{source.stem}.o"
        _run(["cc", *CFLAGS, f"-I{c_dir}", "-c", str(source), "-o", str(obj)], f"compiling {source.name}")
        objects.append(obj)
    program = work / Path(harness).stem
    _run(["cc", *CFLAGS, "-pthread", f"-I{c_dir}", str(harness), *map(str, objects), "-o", str(program)],
         f"compiling and linking {Path(harness).name}")
    return program, objects


def _compiler() -> str:
    version = subprocess.run(["cc", "--version"], capture_output=True, text=True, check=False).stdout
    return f"{version.splitlines()[0].strip() if version else 'cc'} {' '.join(CFLAGS)}"


def check_arrays(inputs: np.ndarray, expected: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The two arrays a C check compares, as arrays, or an ExportError saying what they must be."""
    inputs, expected = np.asarray(inputs), np.asarray(expected)
    if inputs.dtype != np.int8 or inputs.ndim != 4 or expected.dtype != np.int8 or expected.ndim != 2 \
            or len(inputs) != len(expected) or not len(inputs):
        raise ExportError(f"{what}: need int8 inputs (N, H, W, C) and int8 expected logits (N, classes) for the "
                          f"same N > 0, got {inputs.dtype} {inputs.shape} and {expected.dtype} {expected.shape}.")
    return inputs, expected


def check(c_dir: Path, inputs: np.ndarray, expected: np.ndarray) -> dict:
    """Run the C engine in `c_dir` on every input on this machine; compare with `expected`; measure.

    inputs: int8 (N, H, W, C), quantised as model_int8.tflite's input.
    expected: int8 (N, classes), the logits of LiteRT's reference kernels.
    Returns the report's "host" section, or {"skipped": ...} if a tool is missing.
    """
    missing = tools_missing()
    if missing:
        return {"skipped": "; ".join(missing)}
    inputs, expected = check_arrays(inputs, expected, "Host C check")
    with tempfile.TemporaryDirectory(prefix="pmkd_host_c_") as directory:
        work = Path(directory)
        program, objects = build(Path(c_dir), work)
        sizes = object_sizes(objects)
        (work / "images.bin").write_bytes(np.ascontiguousarray(inputs).tobytes())
        output = _run([str(program), str(work / "images.bin"), str(work / "logits.bin")],
                      f"running {len(inputs)} images", TIMEOUT_S + 0.05 * len(inputs))
        stats = {name: int(value) for name, value in (line.split() for line in output.splitlines() if line.strip())}
        logits = np.fromfile(work / "logits.bin", np.int8)
    if logits.size != expected.size or stats.get("images") != len(inputs):
        raise ExportError(f"Host C check: the engine returned {logits.size} logits for {stats.get('images')} images; "
                          f"expected {expected.size} for {len(inputs)} (does c/ match the model?).")
    logits = logits.reshape(expected.shape)
    return {
        "images": int(len(inputs)),
        "mismatched": int(np.any(logits != expected, axis=1).sum()),
        "mismatched_values": int(np.sum(logits != expected)),
        "state_bytes": stats["state_bytes"],
        "peak_stack_bytes": stats["peak_stack_bytes"],
        **sizes,
        "compiler": _compiler(),
    }
