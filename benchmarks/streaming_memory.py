"""Activation memory of row-streamed int8 inference: each 1xN student against its line-buffered NxN teacher.

    python -m benchmarks.streaming_memory --out=benchmarks/results/streaming_memory

For every net and width: build the 1xN student and the NxN teacher, convert
both to int8 (calibrated on real CIFAR-10 training images), stream real test
images through `pmkd_tf.export.streaming.TFLiteStreamer` (the teacher with an
N-row line buffer in front of every NxN conv) and check each streamed output
against the full-frame int8 model on LiteRT's reference kernels, bit for bit.
Reported per model: the streaming peak, the full-frame peak (same executor,
whole tensors), the TFLite Micro arena (bisection) and the int8 flash.

The weights are untrained (seeded): activation memory depends on tensor
shapes and dtypes only, and the graph a converter emits does not change with
weight values, so a trained model has the same numbers.
Nothing here is timed; a busy machine changes only the wall time.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from absl import flags, logging

from benchmarks import cli, common
from pmkd_tf import data, models
from pmkd_tf.export import micro, streaming, tflite

FLAGS = flags.FLAGS
NAME = "streaming_memory"
ROLES = {"student": "1xN", "teacher": "NxN"}

cli.define_flags(NAME)
flags.DEFINE_list("nets", ["vgg16", "resnet18", "wrn_16_8", "resnet50"], f"Nets: {', '.join(models.NETS)}.")
cli.validate("nets", lambda _, net: models.validate_net(net), each=True)
flags.DEFINE_list("widths", ["1", "1/16"], "Width multipliers (1/16 allowed).")
cli.validate("widths", cli.POSITIVE_NUMBER, each=True)
flags.DEFINE_integer("calibration_examples", 50, "Real training images for int8 calibration.", lower_bound=1)
flags.DEFINE_integer("stream_examples", 3, "Real test images streamed through every model and checked bit for bit "
                     "(the peak is the same for every image).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the (untrained) weights and of the image subset.")

TINY = {"nets": ["vgg13"], "widths": ["1/16"], "calibration_examples": 8, "stream_examples": 1}


def measure(net: str, shape: str, width: float, splits: data.Splits) -> dict:
    """One model: int8 conversion, row streaming checked against the full frame, TFLM arena."""
    keras.utils.set_random_seed(FLAGS.seed)
    model = models.get_model(net, shape, splits.num_classes, width)
    int8 = tflite.convert_int8(tflite.deployable(model, splits.mean, splits.std), splits.train_images)
    streamer = streaming.TFLiteStreamer(int8, line_buffers=True)
    results = [streamer(image) for image in splits.test_images]
    expected = tflite.LiteRT(int8, "reference").outputs(splits.test_images)
    exact = int(np.sum(np.all(np.stack([r.logits for r in results]) == expected, axis=1)))
    peaks = {(r.peak_bytes, r.frame_peak_bytes, r.line_buffer_rows) for r in results}
    if len(peaks) != 1:
        raise RuntimeError(f"{net} {shape}: the streaming peak differs between images: {sorted(peaks)}.")
    return {
        "parameters": int(model.count_params()),
        "on_the_fly": streamer.refusal is None,
        "peak_bytes": results[0].peak_bytes,
        "frame_peak_bytes": results[0].frame_peak_bytes,
        "line_buffer_rows": results[0].line_buffer_rows,
        "tflm_arena_bytes": micro.measure_arena(int8).minimum,
        "flash_int8_bytes": len(int8),
        "bit_exact_images": exact,
        "images": len(results),
    }


def markdown(result: dict) -> str:
    lines = common.header_markdown("Row-streaming memory: 1xN student against line-buffered NxN teacher", result)
    lines += [("Peak int8 activation bytes of one image fed row by row (`TFLiteStreamer`; the teacher with an "
               "N-row line buffer per NxN conv), against the same executor on whole tensors (full frame) and the "
               "measured TFLite Micro arena of the same int8 model. Untrained weights: memory depends on shapes "
               f"only. Inputs {result['settings']['input_shape']}."), "",
              ("| Net | Width | 1xN student streamed | NxN teacher line-buffered | Full frame | TFLM arena | "
               "Teacher / student | Full frame / student | Bit-exact (student, teacher) |"),
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for cell in result["cells"]:
        s, t = cell["student"], cell["teacher"]
        lines.append(
            f"| {cell['net']} | {cell['width']} | {s['peak_bytes']:,} | {t['peak_bytes']:,} | "
            f"{s['frame_peak_bytes']:,} | {s['tflm_arena_bytes']:,} | {t['peak_bytes'] / s['peak_bytes']:.1f}x | "
            f"{s['frame_peak_bytes'] / s['peak_bytes']:.1f}x | {s['bit_exact_images']}/{s['images']}, "
            f"{t['bit_exact_images']}/{t['images']} |")
    same = all(c["teacher"][k] == c["student"][k] for c in result["cells"] for k in ("frame_peak_bytes",
                                                                                     "tflm_arena_bytes"))
    lines += ["", "Full frame and arena are the student's; the teacher's are "
              + ("equal on every row (same tensor shapes)." if same else "**different on some rows** (see JSON)."),
              ""]
    return "\n".join(lines)


def body() -> None:
    widths = [cli.number(width) for width in FLAGS.widths]
    started, contention = time.time(), common.ContentionMonitor()
    machine = common.machine()
    splits = data.load("cifar10", FLAGS.data_dir or data.default_data_dir(), train_examples=FLAGS.calibration_examples,
                       test_examples=FLAGS.stream_examples, seed=FLAGS.seed)
    cells = []
    for net in FLAGS.nets:
        for width, label in zip(widths, FLAGS.widths):
            cell = {"net": net, "width": label}
            for role, shape in ROLES.items():
                logging.info("Measuring %s %s at width %s.", net, shape, label)
                cell[role] = measure(net, shape, width, splits)
            cells.append(cell)
    result = {
        "benchmark": NAME,
        "command": common.command_line(f"benchmarks.{NAME}"),
        "machine": machine,
        "settings": {"nets": FLAGS.nets, "widths": FLAGS.widths, "calibration_examples": FLAGS.calibration_examples,
                     "stream_examples": FLAGS.stream_examples, "seed": FLAGS.seed,
                     "input_shape": list(splits.test_images.shape[1:]), "tiny": FLAGS.tiny},
        "cells": cells,
    }
    common.finish(FLAGS.out, result, started, contention, markdown)


if __name__ == "__main__":
    cli.run_benchmark(body, TINY)
