"""The exporter: a trained student in; verified `.tflite`s, board sources, the C engine and a report out.

Every claim in the report is measured on this machine: int8 accuracy
against the float Keras model on the test set, TFLite Micro against
LiteRT's reference kernels bit for bit, the TFLM arena by bisection,
LiteRT latency on one thread, and the row-streaming executor against the
full-frame models.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
from absl import logging

from pmkd_tf import data
from pmkd_tf.export import carray, micro, streaming, tflite
from pmkd_tf.export.cstream import export as cstream
from pmkd_tf.errors import ExportError

FILES = ("model_float.tflite", "model_int8.tflite", "model_data.cc", "model_data.h", "model_ops.h",
         "report.json", "summary.txt")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How much of each check to run (the CLI's flags; defaults suit a full CIFAR test set).

    micro_examples: test images run through TFLite Micro and compared with LiteRT.
    float_stream_examples: test images streamed through the float `.tflite`.
    int8_stream_examples: test images streamed through the int8 model (0 = all).
    latency_runs: timed LiteRT invokes per model (the median is reported).
    c_engine: "auto", "on" or "off": the C engine in c/ and its checks (see cstream.export).
    c_stream_examples: test images run through the C engine on the host (0 = all).
    cortex_m4_examples: of those, the images run on the emulated Cortex-M4.
    """

    micro_examples: int = 32
    float_stream_examples: int = 4
    int8_stream_examples: int = 1000
    c_engine: str = "auto"
    c_stream_examples: int = 1000
    cortex_m4_examples: int = 100
    latency_runs: int = 200
    verbose: bool = True


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def _io(spec: tflite.TensorSpec) -> dict:
    return {"shape": list(spec.shape), "dtype": spec.dtype, "scale": spec.scale, "zero_point": spec.zero_point}


def feed_instructions(spec: tflite.TensorSpec) -> str:
    """How a board turns a uint8 camera pixel into the model's int8 input, in one line."""
    if spec.scale == 1.0 and spec.zero_point == -128:
        return "int8 = pixel - 128 (equivalently (int8_t)(pixel ^ 0x80)); rows top to bottom, RGB interleaved"
    return (f"int8 = clamp(round(pixel / {spec.scale:.9g}) + {spec.zero_point}, -128, 127); "
            "rows top to bottom, RGB interleaved")


def _verify_micro(int8_model: bytes, pixels: np.ndarray, expected: np.ndarray, default: tflite.LiteRT) -> dict:
    """TFLite Micro's outputs against LiteRT's reference kernels (`expected`) and its default kernels."""
    inputs = tflite.quantize_pixels(pixels, default.input)
    tflm = micro.run_micro(int8_model, inputs)
    optimised = np.stack([default.invoke(x) for x in inputs])
    return {
        "examples": len(inputs),
        "bit_exact_with_litert_reference": bool(np.array_equal(tflm, expected)),
        "differing_values": int(np.sum(tflm != expected)),
        "differing_values_litert_default_kernels": int(np.sum(tflm != optimised)),
    }


def _stream(streamer: streaming.TFLiteStreamer, pixels: np.ndarray, expected: np.ndarray, verbose: bool) -> dict:
    """Stream images through one `.tflite` and compare with its full-frame outputs (`expected`, same kernels)."""
    progress = keras.utils.Progbar(len(pixels), unit_name="image") if verbose else None
    results = []
    for index, image in enumerate(pixels):
        results.append(streamer(image))
        if progress:
            progress.update(index + 1)
    logits = np.stack([r.logits for r in results])
    return {
        "images": len(results),
        "bit_exact_images": int(np.sum(np.all(logits == expected, axis=1))),
        "max_abs_logit_diff": float(np.max(np.abs(logits.astype(np.float64) - expected))),  # raw output units
        "prediction_agreement": float(np.mean(np.argmax(logits, 1) == np.argmax(expected, 1))),
        "peak_bytes": results[0].peak_bytes,
        "frame_peak_bytes": results[0].frame_peak_bytes,
        "line_buffer_rows": results[0].line_buffer_rows,
    }


def _streaming(name: str, converted: dict[str, bytes], pixels: np.ndarray, int8_out: np.ndarray,
               options: ExportOptions) -> dict:
    """Row-stream test images through the float and int8 `.tflite`; a teacher gets line buffers, marked refused."""
    streamers = {kind: streaming.TFLiteStreamer(model, line_buffers=True) for kind, model in converted.items()}
    refusal = streamers["int8"].refusal
    section: dict = {"on_the_fly": refusal is None}
    if refusal:
        section["refused"] = f"{name} is {refusal}"
        logging.warning("%s is not on-the-fly; measuring it with N-row line buffers instead.", name)
    floats = pixels[:options.float_stream_examples]
    expected = tflite.LiteRT(converted["float"], "reference").outputs(floats)
    section["float"] = _stream(streamers["float"], floats, expected, options.verbose)
    count = min(options.int8_stream_examples or len(pixels), len(pixels))
    logging.info("Streaming %d test images row by row through the int8 model.", count)
    section["int8"] = _stream(streamers["int8"], pixels[:count], int8_out[:count], options.verbose)
    return section


def export_student(student: keras.Model, splits: data.Splits, out_dir: str | Path, calibration_pixels: np.ndarray,
                   model_path: str = "", options: ExportOptions = ExportOptions()) -> dict:
    """Convert, verify and package one PMKD model; write everything into `out_dir` and return the report.

    `calibration_pixels` are uint8 training images for int8 calibration;
    `splits.test_images` are used only for measuring.
    """
    tflite.validate_pmkd(student)
    if not len(splits.test_images):
        raise ExportError("No test images to verify the export on: pass --test_examples > 0.")
    image_shape, classes = tuple(student.inputs[0].shape[1:]), student.output["logits"].shape[-1]
    if tuple(splits.test_images.shape[1:]) != image_shape or classes != splits.num_classes:
        raise ExportError(f"{student.name} takes {image_shape} images into {classes} classes, but {splits.name} has "
                          f"{tuple(splits.test_images.shape[1:])} images of {splits.num_classes} classes; pass the "
                          "--dataset the student was trained on.")
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    deploy = tflite.deployable(student, splits.mean, splits.std)
    logging.info("Converting %s to float and int8 TFLite (%d calibration images).", student.name,
                 len(calibration_pixels))
    float_model = tflite.convert_float(deploy)
    int8_model = tflite.convert_int8(deploy, calibration_pixels)
    ops = micro.check_micro_ops(int8_model)
    (out_dir / "model_float.tflite").write_bytes(float_model)
    (out_dir / "model_int8.tflite").write_bytes(int8_model)

    logging.info("Evaluating Keras float, TFLite float and TFLite int8 on %d test images.", len(splits.test_images))
    images, labels = splits.test_images, splits.test_labels
    keras_out = tflite.keras_logits(student, images, splits.mean, splits.std)
    float_out = tflite.LiteRT(float_model).outputs(images, options.verbose)
    default = tflite.LiteRT(int8_model)
    int8_out = tflite.LiteRT(int8_model, "reference").outputs(images, options.verbose)
    keras_accuracy, int8_accuracy = _accuracy(keras_out, labels), _accuracy(int8_out, labels)
    int8_logits = (int8_out.astype(np.float32) - default.output.zero_point) * default.output.scale

    logging.info("Running TFLite Micro and measuring its arena.")
    micro_check = _verify_micro(int8_model, images[:options.micro_examples], int8_out[:options.micro_examples],
                                default)
    arena = micro.measure_arena(int8_model)
    report = {
        "model": model_path or student.name,
        "name": student.name,
        "dataset": splits.name,
        "parameters": int(student.count_params()),
        "macs": tflite.count_macs(student),
        "flash_bytes": {"int8": len(int8_model), "float": len(float_model)},
        "arena_bytes": {"measured": arena.minimum, "recorded_by_tflm": arena.recorded, "board": arena.board},
        "accuracy": {
            "test_examples": int(len(labels)),
            "keras_float": keras_accuracy,
            "tflite_float": _accuracy(float_out, labels),
            "tflite_int8": int8_accuracy,
            "int8_drop_points": 100.0 * (keras_accuracy - int8_accuracy),
            "int8_float_agreement": float(np.mean(np.argmax(int8_out, 1) == np.argmax(keras_out, 1))),
            "int8_logit_mean_abs_error": float(np.mean(np.abs(int8_logits - keras_out))),
            "float_logit_std": float(np.std(keras_out)),
            "int8_kernels": "LiteRT reference kernels (the arithmetic TFLite Micro runs, checked bit-exact)",
        },
        "micro": micro_check,
        "ops": list(ops),
        "op_resolver": micro.resolver_lines(ops),
        "input": {**_io(default.input), "feed": feed_instructions(default.input)},
        "output": _io(default.output),
        "latency_ms": {
            "int8": default.latency_ms(options.latency_runs),
            "float": tflite.LiteRT(float_model).latency_ms(options.latency_runs),
            "runs": options.latency_runs, "threads": 1, "kernels": "LiteRT default (XNNPACK)",
        },
    }
    report["streaming"] = _streaming(student.name, {"float": float_model, "int8": int8_model}, images, int8_out,
                                     options)
    report["streaming"]["tflm_arena_bytes"] = arena.minimum
    board = carray.BoardInfo(
        origin=Path(model_path).name if model_path else student.name, input_shape=tuple(default.input.shape[1:]),
        input_scale=default.input.scale, input_zero_point=default.input.zero_point,
        output_scale=default.output.scale, output_zero_point=default.output.zero_point,
        class_names=tuple(splits.class_names), arena_bytes=arena.board, measured_arena_bytes=arena.minimum)
    carray.write_board_files(out_dir, int8_model, board, ops)
    count = options.c_stream_examples or len(images)
    c_inputs = tflite.quantize_pixels(images[:count], default.input)
    report["c_stream"] = cstream.export_c(int8_model, out_dir / "c", c_inputs, int8_out[:count], options.c_engine,
                                          options.cortex_m4_examples)
    report["files"] = [str(out_dir / name) for name in FILES] + report["c_stream"].get("files", [])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "summary.txt").write_text(summary(report))
    if options.c_engine == "on" and cstream.failure(report["c_stream"]):
        raise ExportError(cstream.failure(report["c_stream"]))
    return report


def board_figures(report: dict) -> dict:
    """What a board user weighs, from one report of `export_student`: accuracy, the C engine's RAM (state + peak
    stack), flash (its code + constants) and instructions per inference on the Cortex-M4, TFLite Micro's arena.

    An ExportError if the report has no Cortex-M4 run to take them from (the engine refused the model, or a
    tool was missing).
    """
    c_stream = report["c_stream"]
    m4 = c_stream.get("cortex_m4", {})
    if "instructions_per_inference" not in m4:
        reason = cstream.failure(c_stream) or "no Cortex-M4 run"
        raise ExportError(f"{report['model']}: no C engine figures on the Cortex-M4 ({reason}).")
    host, plan = c_stream["host"], c_stream["plan"]
    return {
        "test_images": report["accuracy"]["test_examples"], "int8_top1": report["accuracy"]["tflite_int8"],
        "float_top1": report["accuracy"]["keras_float"], "state_bytes": m4["state_bytes"],
        "peak_stack_bytes": m4["peak_stack_bytes"], "flash_bytes": m4["engine_code_bytes"] + m4["engine_const_bytes"],
        "instructions": m4["instructions_per_inference"], "tflm_arena_bytes": report["arena_bytes"]["measured"],
        "input_rows_read": f"{plan['input_rows_read']}/{plan['input_rows']}",
        "bit_exact": f"host {host['images'] - host['mismatched']}/{host['images']}, "
                     f"Cortex-M4 {m4['images'] - m4['mismatched']}/{m4['images']}",
    }


def _kib(value: int) -> str:
    return f"{value:,} B ({value / 1024:.1f} KiB)"


def summary(report: dict) -> str:
    """The report as a short human-readable text (also written as summary.txt)."""
    acc, mic, lat, st = report["accuracy"], report["micro"], report["latency_ms"], report["streaming"]
    io = report["input"]
    lines = [
        f"PMKD export of {report['model']} ({report['name']}, {report['dataset']})",
        f"  parameters        {report['parameters']:,}",
        f"  MACs / image      {report['macs']:,}",
        f"  flash (int8)      {_kib(report['flash_bytes']['int8'])}   float: {_kib(report['flash_bytes']['float'])}",
        f"  TFLM arena        {_kib(report['arena_bytes']['measured'])} measured; "
        f"kTensorArenaSize = {report['arena_bytes']['board']}",
        f"  accuracy          Keras float {100 * acc['keras_float']:.2f}%  "
        f"TFLite float {100 * acc['tflite_float']:.2f}%  int8 {100 * acc['tflite_int8']:.2f}% (TFLM arithmetic) "
        f"on {acc['test_examples']} test images",
        f"  int8 vs float     drop {acc['int8_drop_points']:+.2f} points, "
        f"{100 * acc['int8_float_agreement']:.1f}% same top-1, mean |logit error| "
        f"{acc['int8_logit_mean_abs_error']:.3f} (float logit std {acc['float_logit_std']:.3f})",
        f"  TFLM vs LiteRT    {'bit-exact' if mic['bit_exact_with_litert_reference'] else 'DIFFERENT'} on "
        f"{mic['examples']} images (reference kernels; {mic['differing_values_litert_default_kernels']} values "
        "differ from LiteRT's optimised kernels)",
        f"  latency (LiteRT)  int8 {lat['int8']:.3f} ms  float {lat['float']:.3f} ms  "
        f"(1 thread, median of {lat['runs']})",
        f"  input             {io['dtype']} {io['shape']}, scale {io['scale']:.9g}, zero point {io['zero_point']}: "
        f"{io['feed']}",
        f"  TFLM ops          {', '.join(report['ops'])}",
    ]
    if not st["on_the_fly"]:
        lines.append(f"  streaming         refused: {st.get('refused', 'not on-the-fly')}")
    mode = "row streaming" if st["on_the_fly"] else "line-buffered streaming"
    fl, i8 = st["float"], st["int8"]
    lines += [
        f"  {mode:<17} float: {fl['bit_exact_images']}/{fl['images']} images bit-exact (max |logit diff| "
        f"{fl['max_abs_logit_diff']:.2e}); int8: {i8['bit_exact_images']}/{i8['images']} images bit-exact, "
        f"{100 * i8['prediction_agreement']:.2f}% same prediction",
        f"  activation memory int8 {mode} {_kib(i8['peak_bytes'])} vs full frame {_kib(i8['frame_peak_bytes'])} "
        f"vs TFLM arena {_kib(st['tflm_arena_bytes'])}; line buffer {i8['line_buffer_rows']} rows",
    ]
    lines += cstream.summary_lines(report["c_stream"])
    return "\n".join(lines) + "\n"
