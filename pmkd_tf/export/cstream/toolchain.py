"""What the host and the Cortex-M4 runs of the C engine share: their tools, running them, and comparing the logits.

A `Toolchain` names the executables one target needs (each with the Debian
package that provides it) and the check its one-line errors start with.
`Toolchain.run_engine` is the frame both runs fill in: skipped if a tool is
missing; otherwise the int8 images are written to `images.bin` in a
temporary folder, the target compiles and runs the engine there (leaving
`logits.bin`), and every logit is compared with LiteRT's reference kernels.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from pmkd_tf.errors import ExportError
from pmkd_tf.export.cstream.codegen import source_dir

# What a target's part of a run returns: the program's "name value" statistics (at least images,
# state_bytes and peak_stack_bytes) and the target's own measurements for the report.
Execute = Callable[[Path, int], tuple[dict[str, int], dict]]


def read_stats(text: str) -> dict[str, int]:
    """A program's statistics: one "name value" pair a line."""
    return {name: int(value) for name, value in (line.split() for line in text.splitlines() if line.strip())}


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """The tools of one target. `name` starts every error ("Host C check"); `tools`: executable -> package."""

    name: str
    tools: Mapping[str, str]
    timeout_s: float = 300.0

    def missing(self) -> list[str]:
        """The tools this target needs and cannot find, each as "<tool> not found: apt-get install <package>"."""
        return [f"{tool} not found: apt-get install {package}" for tool, package in self.tools.items()
                if shutil.which(tool) is None]

    def run_tool(self, command: list[str], step: str, timeout_s: float | None = None, cwd: Path | None = None,
                 exit_meanings: Mapping[int, str] | None = None) -> str:
        """Run a tool and return its stdout; a failure or timeout becomes an ExportError naming the step, in one line.

        `exit_meanings` explains a failing program's exit codes in the message.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                                    stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as error:
            raise ExportError(f"{self.name}: {step} did not finish within {timeout_s:.0f} s "
                              f"({Path(command[0]).name}); the machine may be overloaded, retry or check fewer "
                              "images.") from error
        if result.returncode != 0:
            output = " ".join((result.stdout + " " + result.stderr).split())[:400]
            if exit_meanings is not None:
                meaning = exit_meanings.get(result.returncode, "unexpected exit")
                raise ExportError(f"{self.name}: {step} exited with {result.returncode} ({meaning}): {output}")
            raise ExportError(f"{self.name}: {step} failed (exit {result.returncode}): {output}")
        return result.stdout

    def version(self, tool: str) -> str:
        """The first line of `tool --version`."""
        lines = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
        return lines[0].strip() if lines else tool

    def engine_sources(self, c_dir: Path) -> list[Path]:
        """The generated engine's `.c` files (in `c_dir/src/`)."""
        sources = sorted(source_dir(c_dir).glob("*.c"))
        if not sources:
            raise ExportError(f"{self.name}: no .c files in {source_dir(c_dir)}; export the C engine first.")
        return sources

    def compile_each(self, compiler: list[str], sources: list[Path], work: Path, prefix: str = "") -> list[Path]:
        """Compile every source to its own object `work/<prefix><stem>.o` (`compiler`: the command before `-c`)."""
        objects = []
        for source in sources:
            obj = work / f"{prefix}{source.stem}.o"
            self.run_tool([*compiler, "-c", str(source), "-o", str(obj)], f"compiling {source.name}")
            objects.append(obj)
        return objects

    def sections(self, size_tool: str, files: list[Path]) -> Iterator[tuple[str, int]]:
        """(section, bytes) of every section `<size_tool> -A` lists in `files`."""
        for line in self.run_tool([size_tool, "-A", *map(str, files)], f"{size_tool} -A").splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0].startswith(".") and fields[1].isdigit():
                yield fields[0], int(fields[1])

    def run_engine(self, inputs: np.ndarray, expected: np.ndarray, execute: Execute) -> dict:
        """Run the engine on every input with `execute(work, images)`; compare its logits with `expected`.

        inputs: int8 (N, H, W, C), quantised as model_int8.tflite's input.
        expected: int8 (N, classes), the logits of LiteRT's reference kernels.
        Returns the report's section of this target, or {"skipped": ...} if a tool is missing.
        """
        missing = self.missing()
        if missing:
            return {"skipped": "; ".join(missing)}
        inputs, expected = np.asarray(inputs), np.asarray(expected)
        if inputs.dtype != np.int8 or inputs.ndim != 4 or expected.dtype != np.int8 or expected.ndim != 2 \
                or len(inputs) != len(expected) or not len(inputs):
            raise ExportError(f"{self.name}: need int8 inputs (N, H, W, C) and int8 expected logits (N, classes) for "
                              f"the same N > 0, got {inputs.dtype} {inputs.shape} and {expected.dtype} "
                              f"{expected.shape}.")
        with tempfile.TemporaryDirectory(prefix="pmkd_c_engine_") as directory:
            work = Path(directory)
            (work / "images.bin").write_bytes(np.ascontiguousarray(inputs).tobytes())
            stats, measured = execute(work, len(inputs))
            logits = np.fromfile(work / "logits.bin", np.int8)
        if logits.size != expected.size or stats.get("images") != len(inputs):
            raise ExportError(f"{self.name}: the engine returned {logits.size} logits for {stats.get('images')} "
                              f"images; expected {expected.size} for {len(inputs)} (does c/ match the model?).")
        wrong = logits.reshape(expected.shape) != expected
        return {"images": len(inputs), "mismatched": int(np.any(wrong, axis=1).sum()),
                "mismatched_values": int(wrong.sum()), "state_bytes": stats["state_bytes"],
                "peak_stack_bytes": stats["peak_stack_bytes"], **measured}
