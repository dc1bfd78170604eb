"""The row-streaming C engine on the host and on an emulated Cortex-M4: RAM, stack, flash, instructions.

    python -m benchmarks.c_engine --out=benchmarks/results/c_engine

For the ResNet18 x0.125 student (1xN) and teacher (NxN) and the 1xN students
of VGG16 and WRN-16-8 at x0.125, all on 32x32x3 CIFAR-10: export int8
(calibrated on real training images), generate the C engine
(`pmkd_tf.export.cstream.codegen`), and run it on real test images on the
host (`cstream.host`) and on QEMU's Cortex-M4 (`cstream.cortex_m4`), every
logit compared with LiteRT's reference kernels; and measure the TensorFlow
Lite Micro arena of the same int8 model, as the export does
(`micro.measure_arena`). `--downsampling=average|max` builds the students
with a 2x1 pool before each stride (`models.NetConfig.downsampling`); the
teacher is the same either way. A model trained by
`pmkd_tf.experiments.run` is used when `--results/<net>/*/model.keras` has a
`config.json` of the same net, shape, width, N, dataset and (for a student)
down-sampling; otherwise the
model is freshly initialised (seeded): state, stack, flash and instruction
counts depend on the architecture, not on the weights. Which one was used is
recorded per model.

Beside the measurements stand the TensorFlow Lite Micro figures of issue 15,
measured earlier on the same ResNet18 x0.125 models on an emulated Cortex-M4,
and the issue's targets.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from absl import flags, logging

from benchmarks import cli, common
from pmkd_tf import data, models
from pmkd_tf.errors import UserError
from pmkd_tf.export import micro, tflite
from pmkd_tf.export.cstream import codegen, cortex_m4, host

FLAGS = flags.FLAGS
NAME = "c_engine"
WIDTH = 0.125
N = 3
DATASET = "cifar10"
# name -> (net, shape); the ResNet18 student and teacher first: the targets compare them.
MODELS = {
    "resnet18_1xN": ("resnet18", "1xN"),
    "resnet18_NxN": ("resnet18", "NxN"),
    "vgg16_1xN": ("vgg16", "1xN"),
    "wrn_16_8_1xN": ("wrn_16_8", "1xN"),
}
STUDENT, TEACHER = "resnet18_1xN", "resnet18_NxN"

# TensorFlow Lite Micro on the same ResNet18 x0.125 models on an emulated Cortex-M4 (issue 15).
TFLM = {
    "arena_bytes": 42_692,
    "cmsis_nn_instructions": {STUDENT: 14.4e6, TEACHER: 26.0e6},
    "reference_instructions": {STUDENT: 223e6, TEACHER: 560e6},
}
# Issue 15's targets: student state + peak stack <= 1/16 of the TFLM arena; student instructions
# <= 2x TFLM + CMSIS-NN; student <= 0.45x the teacher in the same engine.
TARGET_RAM_BYTES = 2_700
TARGET_INSTRUCTIONS = 29e6
TARGET_TEACHER_RATIO = 0.45

cli.define_flags(NAME, tiny=False)
flags.DEFINE_string("results", f"experiments/results/{DATASET}", "Where trained models are looked for "
                    "(<results>/<net>/<run>/model.keras with its config.json).")
flags.DEFINE_integer("images", 100, "Real test images run through each engine, on the host and on the Cortex-M4.",
                     lower_bound=1)
flags.DEFINE_integer("calibration_examples", 100, "Real training images for int8 calibration.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of freshly initialised models and of the data subsets.")
flags.DEFINE_enum("downsampling", "stride", list(models.DOWNSAMPLINGS), "How the 1xN students halve their height "
                  "(models.NetConfig.downsampling); the NxN teacher ignores it.")


def trained_model(net: str, shape: str) -> Path | None:
    """The first (by folder name) trained model of exactly this net, shape, width, N, dataset and down-sampling."""
    for config_file in sorted(Path(FLAGS.results).expanduser().glob(f"{net}/*/config.json")):
        config = json.loads(config_file.read_text())
        model_file = config_file.with_name("model.keras")
        if model_file.is_file() and config.get("net") == net and config.get("student") == shape \
                and config.get("width_multiplier") == WIDTH and config.get("n") == N \
                and config.get("dataset") == DATASET \
                and (shape == "NxN" or config.get("downsampling", "stride") == FLAGS.downsampling):
            return model_file
    return None


def model_to_measure(net: str, shape: str) -> tuple[keras.Model, str]:
    """The model to measure and where it came from."""
    path = trained_model(net, shape)
    if path is not None:
        return tflite.read_student(path), f"trained: {path}"
    keras.utils.set_random_seed(FLAGS.seed)
    return (models.get_model(net, shape, 10, WIDTH, n=N, downsampling=FLAGS.downsampling),
            f"freshly initialised (seed {FLAGS.seed})")


def measure(name: str, net: str, shape: str, splits: data.Splits, work: Path) -> dict:
    """Export one model to int8 and C, run both checks, and collect what the tables need."""
    model, origin = model_to_measure(net, shape)
    logging.info("%s: %s", name, origin)
    int8 = tflite.convert_int8(tflite.deployable(model, splits.mean, splits.std), splits.train_images)
    sources = codegen.write_c_sources(int8, work / name / "c")
    reference = tflite.LiteRT(int8, "reference")
    inputs = tflite.quantize_pixels(splits.test_images, reference.input)
    expected = np.stack([reference.invoke(x) for x in inputs])
    result = {
        "net": net, "shape": shape, "width_multiplier": WIDTH, "model": origin,
        "parameters": int(model.count_params()), "macs": tflite.count_macs(model),
        "plan": sources.layout_summary(), "int8_flash_bytes": len(int8),
        "tflm_arena_bytes": micro.measure_arena(int8).minimum,
        "host": host.run_engine(sources.directory, inputs, expected),
        "cortex_m4": cortex_m4.run_engine(sources.directory, inputs, expected),
    }
    if sources.macs_executed < sources.macs:
        # The engine skips rows no later layer reads; computing every row, as a whole-frame runtime such
        # as TFLite Micro does, shows what the skipping saves and makes the TFLM comparison like for like.
        every_row = codegen.write_c_sources(int8, work / name / "c_every_row", skip_dead_rows=False)
        result["cortex_m4_every_row"] = cortex_m4.run_engine(every_row.directory, inputs, expected)
    return result


def _target(value: float | None, limit: float) -> dict:
    return {"value": value, "limit": limit, "met": None if value is None else bool(value <= limit)}


def targets(results: dict) -> dict:
    """Issue 15's three targets, from the Cortex-M4 measurements (None where the check was skipped)."""
    student, teacher = results[STUDENT]["cortex_m4"], results[TEACHER]["cortex_m4"]
    measured = "skipped" not in student and "skipped" not in teacher
    ram = student["state_bytes"] + student["peak_stack_bytes"] if "skipped" not in student else None
    instructions = student.get("instructions_per_inference")
    ratio = instructions / teacher["instructions_per_inference"] if measured else None
    return {
        "student_state_plus_stack_bytes": _target(ram, TARGET_RAM_BYTES),
        "student_instructions_per_inference": _target(instructions, TARGET_INSTRUCTIONS),
        "student_over_teacher_instructions": _target(ratio, TARGET_TEACHER_RATIO),
    }


def _mismatches(section: dict) -> str:
    return section["skipped"] if "skipped" in section else f"{section['mismatched']}/{section['images']}"


def markdown(result: dict) -> str:
    lines = common.header_markdown("C engine: the int8 models row by row, on the host and on a Cortex-M4", result)
    measured = [r["cortex_m4"] for r in result["models"].values() if "skipped" not in r["cortex_m4"]]
    if measured:
        rest = [c["flash_bytes"] - c["engine_code_bytes"] - c["engine_const_bytes"] for c in measured]
        lines += [f"Cortex-M4: {measured[0]['compiler']}; {measured[0]['qemu']}, semihosting. Instructions counted "
                  "by the project's QEMU TCG plugin (`target/insn_count.c`) inside the engine calls only. Flash is "
                  "the whole test program (`.text + .rodata + .data`); the engine's share is its own objects' "
                  f"code + constants, the rest ({min(rest):,}-{max(rest):,} B) is the test harness, startup code "
                  "and newlib's memcpy/memset. RAM is `sizeof(pmkd_stream)` (all mutable state) plus the engine's "
                  "peak stack below `main`, measured by stack painting.", ""]
    lines += ["| Model | Weights | MACs (executed) | Input rows read | State (B) | Peak stack (B) | "
              "State + stack (B) | TFLM arena (B) | Flash (B) | Engine code + const (B) | Instructions / inference | "
              "Same, every row computed | Host mismatched | M4 mismatched |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, r in result["models"].items():
        c, weights = r["cortex_m4"], "trained" if r["model"].startswith("trained") else "fresh"
        macs = f"{r['macs']:,} ({r['plan']['macs_executed']:,})"
        rows = f"{r['plan']['input_rows_read']} of {r['plan']['input_rows']}"
        if "skipped" in c:
            lines.append(f"| {name} | {weights} | {macs} | {rows} | | | | {r['tflm_arena_bytes']:,} | | | | | "
                         f"{_mismatches(r['host'])} | {c['skipped']} |")
            continue
        ram = c["state_bytes"] + c["peak_stack_bytes"]
        every = r.get("cortex_m4_every_row", c)
        every_row = f"{every['instructions_per_inference']:,} ({_mismatches(every)})" if every is not c else "same"
        lines.append(
            f"| {name} | {weights} | {macs} | {rows} | {c['state_bytes']:,} | {c['peak_stack_bytes']:,} | "
            f"{ram:,} (1/{r['tflm_arena_bytes'] / ram:.0f}) | {r['tflm_arena_bytes']:,} | {c['flash_bytes']:,} | "
            f"{c['engine_code_bytes']:,} + {c['engine_const_bytes']:,} | {c['instructions_per_inference']:,} | "
            f"{every_row} | {_mismatches(r['host'])} | {_mismatches(c)} |")
    lines += ["", "TFLM arena: the smallest TensorFlow Lite Micro arena that runs the same int8 model (bisection, "
              "as `python -m pmkd_tf.export` reports it); in brackets, state + stack as a fraction of it.",
              "", "MACs: all of the model's (Keras count) and, in brackets, those the engine executes: a 1xN "
              "network's vertically strided layers read only every other row, so the rows before them that feed "
              "nothing are skipped (the logits do not change). 'Every row computed' is the same model built with "
              "`skip_dead_rows=False`, as a whole-frame runtime computes it (its mismatches in brackets)."]
    tflm = result["tflite_micro"]
    lines += ["", "TensorFlow Lite Micro on the same ResNet18 x0.125 models on an emulated Cortex-M4 (issue 15, "
              "quoted, not re-measured here): arena "
              f"{tflm['arena_bytes']:,} B for student and teacher alike; CMSIS-NN kernels "
              f"{tflm['cmsis_nn_instructions'][STUDENT] / 1e6:.1f} M (student) and "
              f"{tflm['cmsis_nn_instructions'][TEACHER] / 1e6:.1f} M (teacher) instructions per inference; "
              f"reference kernels {tflm['reference_instructions'][STUDENT] / 1e6:.0f} M and "
              f"{tflm['reference_instructions'][TEACHER] / 1e6:.0f} M.", "",
              "| Target (issue 15) | Measured | Limit | Met |", "|---|---:|---:|---|"]
    labels = {"student_state_plus_stack_bytes": ("ResNet18 student state + peak stack (B)", "{:,.0f}"),
              "student_instructions_per_inference": ("ResNet18 student instructions / inference", "{:,.0f}"),
              "student_over_teacher_instructions": ("student / teacher instructions, same engine", "{:.3f}")}
    for key, target in result["targets"].items():
        label, form = labels[key]
        value = "not measured" if target["value"] is None else form.format(target["value"])
        met = "n/a" if target["met"] is None else ("yes" if target["met"] else "**no**")
        lines.append(f"| {label} | {value} | {form.format(target['limit'])} | {met} |")
    lines += ["", "Models:", ""] + [f"- `{n}`: {r['model']}" for n, r in result["models"].items()] + [""]
    return "\n".join(lines)


def body() -> None:
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()
    splits = data.load(DATASET, FLAGS.data_dir or data.default_data_dir(), train_examples=FLAGS.calibration_examples,
                       test_examples=FLAGS.images, seed=FLAGS.seed)
    if len(splits.test_labels) < FLAGS.images:
        raise UserError(f"--images {FLAGS.images}: only {len(splits.test_labels)} test images found.")
    with tempfile.TemporaryDirectory(prefix="pmkd_c_engine_") as directory:
        results = {name: measure(name, net, shape, splits, Path(directory)) for name, (net, shape) in MODELS.items()}
    result = {
        "benchmark": NAME,
        "command": common.command_line(f"benchmarks.{NAME}"),
        "machine": machine,
        "settings": {"dataset": DATASET, "width_multiplier": WIDTH, "n": N, "downsampling": FLAGS.downsampling,
                     "images": FLAGS.images,
                     "calibration_examples": FLAGS.calibration_examples, "seed": FLAGS.seed,
                     "results": FLAGS.results},
        "tools_missing": {"host": host.tools_missing(), "cortex_m4": cortex_m4.tools_missing()},
        "tflite_micro": TFLM,
        "models": results,
        "targets": targets(results),
    }
    common.finish(FLAGS.out, result, started, contention, markdown)


if __name__ == "__main__":
    cli.run_benchmark(body)
