"""The C engine's part of `python -m pmkd_tf.export`: write `<out_dir>/c/`, check it on the host and a Cortex-M4.

`--c_engine` chooses how much a problem weighs (the TFLite Micro files never
depend on the C engine, so they are exported in every case):

* "auto" (default): generate the engine and run every check whose tools are
  installed; a model the engine cannot run, a missing tool or a failed check
  is recorded in `report.json` and logged, and the export goes on;
* "on": the same, but any of those makes the export exit 2 with its one-line
  reason, after the rest of the export has been written;
* "off": no C engine.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import logging

from pmkd_tf.export.cstream import codegen, cortex_m4, host
from pmkd_tf.errors import ExportError, StreamingError

MODES = ("auto", "on", "off")
TARGETS = {"host": "host", "cortex_m4": "Cortex-M4"}


def validate_mode(mode: str) -> None:
    if mode not in MODES:
        raise ExportError(f"--c_engine={mode!r}: choose one of {', '.join(MODES)}.")


def _run_on(target: str, run_engine: Callable[..., dict], c_dir: Path, inputs: np.ndarray,
            expected: np.ndarray) -> dict:
    """One target's section; a failing tool run becomes {"error": ...}, and anything short of a pass is logged."""
    logging.info("Running the C engine on %d test images (%s).", len(inputs), TARGETS[target])
    try:
        result = run_engine(c_dir, inputs, expected)
    except ExportError as error:
        result = {"error": str(error)}
    problem = problem_of(target, result)
    if problem:
        logging.warning("%s", problem)
    return result


def problem_of(target: str, result: dict) -> str | None:
    """Why one check did not pass, in one line, or None if every logit matched."""
    name = TARGETS[target]
    if "skipped" in result:
        return f"C engine {name} check skipped: {result['skipped']}"
    if "error" in result:
        return f"C engine {name} check failed: {result['error']}"
    if result["mismatched"]:
        return (f"C engine {name} check: {result['mismatched']} of {result['images']} images have logits that differ "
                "from LiteRT's reference kernels.")
    return None


def export_c(int8_model: bytes, c_dir: str | Path, inputs: np.ndarray, expected: np.ndarray, mode: str,
             cortex_m4_examples: int) -> dict:
    """Generate `c_dir` from the int8 model and check it; returns the report's "c_stream" section.

    inputs: int8 test images (N, H, W, C) as the model's input; expected:
    their int8 logits from LiteRT's reference kernels. The host runs all N,
    the Cortex-M4 the first `cortex_m4_examples`.
    """
    validate_mode(mode)
    if mode == "off":
        return {"skipped": "turned off (--c_engine=off)"}
    c_dir = Path(c_dir)
    try:
        sources = codegen.write_c_sources(int8_model, c_dir)
    except StreamingError as error:
        shutil.rmtree(c_dir, ignore_errors=True)  # a c/ of an earlier export would not match this model
        logging.warning("C engine refused the model: %s", error)
        return {"refused": str(error)}
    section: dict = {"files": [str(c_dir / name) for name in sources.files], "plan": sources.layout_summary()}
    section["host"] = _run_on("host", host.run_engine, c_dir, inputs, expected)
    section["cortex_m4"] = _run_on("cortex_m4", cortex_m4.run_engine, c_dir, inputs[:cortex_m4_examples],
                                   expected[:cortex_m4_examples])
    measured = [section[t]["state_bytes"] for t in TARGETS if "state_bytes" in section[t]]
    if measured:
        section["state_bytes"] = measured[0]
    return section


def failure(section: dict) -> str | None:
    """The one-line reason the C part did not pass (what `--c_engine=on` exits with), or None."""
    if "skipped" in section:
        return None
    if "refused" in section:
        return f"C engine: {section['refused']}"
    return next((p for p in (problem_of(t, section[t]) for t in TARGETS) if p), None)


def _line(target: str, result: dict) -> str:
    if "skipped" in result or "error" in result:
        return problem_of(target, result) or ""
    exact = "bit-exact" if not result["mismatched"] else f"{result['mismatched']} DIFFERENT"
    text = (f"{TARGETS[target]}: {result['images'] - result['mismatched']}/{result['images']} images {exact}; state "
            f"{result['state_bytes']:,} B + peak stack {result['peak_stack_bytes']:,} B")
    if target == "host":
        return text + f"; code {result['code_bytes']:,} B + const {result['const_bytes']:,} B"
    return (text + f"; engine flash {result['engine_code_bytes'] + result['engine_const_bytes']:,} B; "
            f"{result['instructions_per_inference'] / 1e6:.2f} M instructions / inference")


def summary_lines(section: dict) -> list[str]:
    """The C engine's lines of summary.txt."""
    if "skipped" in section:
        return [f"  C engine          {section['skipped']}"]
    if "refused" in section:
        return [f"  C engine          refused: {section['refused']}"]
    layout = section["plan"]
    lines = [f"  C engine          c/: {layout['nodes']} nodes, {layout['arena_bytes']:,} B arena; reads "
             f"{layout['input_rows_read']} of {layout['input_rows']} input rows, {layout['macs_executed']:,} of "
             f"{layout['macs']:,} MACs (rows no layer reads are skipped)"]
    return lines + [f"                    {_line(target, section[target])}" for target in TARGETS]
