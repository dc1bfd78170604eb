"""The C engine on an emulated Cortex-M4: cross-compiled, run under qemu-system-arm, bit-exact and measured.

Needs Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm
(and a host cc for the instruction-count plugin). Under CI=true a missing tool
fails these tests; elsewhere they skip, naming the package to install.
"""

import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import HANG_SECONDS, randomise_batch_norm, require

from pmkd_tf import models
from pmkd_tf.export import tflite
from pmkd_tf.export.cstream import codegen, cortex_m4
from pmkd_tf.errors import ExportError

IMAGES = 100
AVERAGE_IMAGES = 20
ROWS = 4  # height of the hand-written engines below
STREAM_MAIN = Path(__file__).resolve().parents[1] / "tflite" / "stream_main.c"


@pytest.fixture(scope="module")
def tools():
    """The cross toolchain and QEMU, or a skip (a failure under CI=true) naming what to install."""
    require(cortex_m4.tools_missing(), "Cortex-M4 check")




def _student(cifar, c_dir: Path, downsampling: str, images: int) -> tuple:
    """A resnet18 1xN student at width 1/16, int8: its generated c/, real test images as int8 inputs, their
    reference logits, the MACs the engine executes and the images' pixels."""
    keras.utils.set_random_seed(0)
    model = randomise_batch_norm(models.get_model("resnet18", "1xN", 10, 1 / 16, downsampling=downsampling))
    int8 = tflite.convert_int8(tflite.deployable(model, cifar.mean, cifar.std), cifar.train_images[:100])
    sources = codegen.write_c_sources(int8, c_dir)
    reference = tflite.LiteRT(int8, "reference")
    inputs = tflite.quantize_pixels(cifar.test_images[:images], reference.input)
    expected = np.stack([reference.invoke(x) for x in inputs])
    return c_dir, inputs, expected, sources.macs_executed, cifar.test_images[:images]


@pytest.fixture(scope="module")
def student(cifar, tmp_path_factory):
    """The resnet18 student (stride down-sampling) on 100 images."""
    return _student(cifar, tmp_path_factory.mktemp("student") / "c", "stride", IMAGES)


def test_student_is_bit_exact_on_the_cortex_m4_and_measured(tools, student):
    c_dir, inputs, expected, macs_executed, _ = student
    assert len(np.unique(expected, axis=0)) > 10  # the logits vary, so equality means something
    result = cortex_m4.run_engine(c_dir, inputs, expected)
    assert result["images"] == IMAGES and result["mismatched"] == 0, result
    assert result["text"] > 0 and result["rodata"] > 0 and result["bss"] >= result["state_bytes"] > 0
    assert result["flash_bytes"] > result["engine_code_bytes"] + result["engine_const_bytes"]
    assert result["engine_code_bytes"] > 0 and result["engine_const_bytes"] > 0
    assert 0 < result["peak_stack_bytes"] <= result["program_stack_bytes"] < result["stack_bytes"]
    # An M4 does at most two multiply-accumulates per instruction (SMLAD).
    assert result["instructions_per_inference"] >= macs_executed / 2
    assert "cortex-m4" in result["compiler"] and "mps2-an386" in result["qemu"]


def test_a_student_that_averages_row_pairs_is_bit_exact_on_the_cortex_m4(tools, cifar, tmp_path):
    """`--downsampling=average`: the engine's AVERAGE_POOL (a rounded division) as the target's compiler builds it."""
    c_dir, inputs, expected, macs_executed, _ = _student(cifar, tmp_path / "c", "average", AVERAGE_IMAGES)
    assert len(np.unique(expected, axis=0)) > AVERAGE_IMAGES // 2
    result = cortex_m4.run_engine(c_dir, inputs, expected)
    assert result["images"] == AVERAGE_IMAGES and result["mismatched"] == 0, result
    assert result["instructions_per_inference"] >= macs_executed / 2


def test_a_wrong_logit_is_a_mismatch(tools, student):
    c_dir, inputs, expected, _, _ = student
    wrong = expected[:5].copy()
    wrong[3, 7] ^= 1
    result = cortex_m4.run_engine(c_dir, inputs[:5], wrong)
    assert (result["images"], result["mismatched"], result["mismatched_values"]) == (5, 1, 1)


# Hand-written engines with a known cost, to check the measurements themselves. They keep the API's
# contract as far as the harness checks it: PMKD_OK for every row but the last, then PMKD_IMAGE_COMPLETE.
_HEADER = f"""#ifndef PMKD_STREAM_H
#define PMKD_STREAM_H
#include <stdint.h>
#define PMKD_INPUT_HEIGHT {ROWS}
#define PMKD_INPUT_WIDTH 2
#define PMKD_INPUT_CHANNELS 3
#define PMKD_NUM_CLASSES 2
typedef struct {{ int8_t logits[PMKD_NUM_CLASSES]; uint8_t rows; }} pmkd_stream;
typedef enum {{ PMKD_OK = 0, PMKD_IMAGE_COMPLETE = 1, PMKD_ERROR_NULL = -1, PMKD_ERROR_PAST_END = -2 }} pmkd_status;
void pmkd_stream_reset(pmkd_stream *s);
pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row);
const int8_t *pmkd_stream_logits(const pmkd_stream *s);
#endif
"""
_COMMON = """#include "pmkd_stream.h"
void pmkd_stream_reset(pmkd_stream *s) { s->logits[0] = 0; s->logits[1] = 0; s->rows = 0; }
const int8_t *pmkd_stream_logits(const pmkd_stream *s) { return s->logits; }
static pmkd_status counted(pmkd_stream *s) { return ++s->rows == PMKD_INPUT_HEIGHT ? PMKD_IMAGE_COMPLETE : PMKD_OK; }
"""
# push_row: 1 + 2 * 1000 instructions (movw, 1000 x subs/bne), a handful to count the row, bx lr; logits = (0, 0).
_LOOP = _COMMON + """pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row) {
    (void)row;
    __asm__ volatile("movw r0, #1000\\n1: subs r0, r0, #1\\nbne 1b\\n" ::: "r0", "cc");
    return counted(s);
}
"""
# push_row: touches a 1 KiB array on its stack; logits = (first byte of the last row, 0).
_STACK = _COMMON + """pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row) {
    volatile int8_t scratch[1024];
    for (int i = 0; i < 1024; ++i) scratch[i] = row[0];
    s->logits[0] = scratch[1023];
    return counted(s);
}
"""
# push_row: counts the rows but never says the image is complete.
_NEVER_COMPLETE = _COMMON + """pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row) {
    (void)row;
    (void)counted(s);
    return PMKD_OK;
}
"""
# push_row: an undefined instruction.
_FAULT = _COMMON + """pmkd_status pmkd_stream_push_row(pmkd_stream *s, const int8_t *row) {
    (void)row;
    __asm__ volatile("udf #0");
    return counted(s);
}
"""


def _engine(directory: Path, body: str) -> Path:
    """A c/ folder holding a hand-written engine where the export puts its sources."""
    src = codegen.source_dir(directory)
    src.mkdir(parents=True)
    (src / "pmkd_stream.h").write_text(_HEADER)
    (src / "pmkd_stream.c").write_text(body)
    return directory


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(-128, 128, (count, ROWS, 2, 3), dtype=np.int8)


def test_instructions_are_counted_inside_the_engine_calls_only(tools, tmp_path):
    inputs = _images(3)
    result = cortex_m4.run_engine(_engine(tmp_path / "c", _LOOP), inputs, np.zeros((3, 2), np.int8))
    assert result["mismatched"] == 0
    # The engine's 2,002 per row plus counting the row and the harness's calls around it (a dozen or so);
    # startup (painting a 16 KiB stack) or the semihosting reads would add thousands.
    assert ROWS * 2002 <= result["instructions_per_inference"] <= ROWS * (2002 + 30)


def test_stack_high_water_mark_sees_the_engines_stack(tools, tmp_path):
    inputs = _images(2)
    expected = np.stack([inputs[:, -1, 0, 0], np.zeros(2, np.int8)], axis=1)
    result = cortex_m4.run_engine(_engine(tmp_path / "c", _STACK), inputs, expected)
    assert result["mismatched"] == 0
    assert 1024 <= result["peak_stack_bytes"] <= 1024 + 64


def test_a_fault_on_the_target_is_a_clear_error(tools, tmp_path):
    with pytest.raises(ExportError, match=r"exited with 3 \(CPU fault\).*FAULT: exception 0x00000003 at pc"):
        cortex_m4.run_engine(_engine(tmp_path / "c", _FAULT), _images(1), np.zeros((1, 2), np.int8))


def test_an_unexpected_push_status_is_a_clear_error(tools, tmp_path):
    with pytest.raises(ExportError, match=r"exited with 5 \(unexpected pmkd_stream_push_row status\)"):
        cortex_m4.run_engine(_engine(tmp_path / "c", _NEVER_COMPLETE), _images(1), np.zeros((1, 2), np.int8))


def test_a_missing_tool_is_reported_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "arm-none-eabi-gcc not found: apt-get install gcc-arm-none-eabi" in cortex_m4.tools_missing()
    result = cortex_m4.run_engine(tmp_path, _images(1), np.zeros((1, 2), np.int8))
    assert set(result) == {"skipped"} and "qemu-system-arm not found: apt-get install qemu-system-arm" in \
        result["skipped"]


# A host "board" for tflite/stream_main.c: the camera delivers the rows of pixels.bin, then fails.
_BOARD = """#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "pmkd_stream.h"
static FILE *pixels;
bool CameraReadRow(int y, uint8_t *row) {
    (void)y;
    if (pixels == NULL) pixels = fopen("pixels.bin", "rb");
    const size_t bytes = PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS;
    return pixels != NULL && fread(row, 1, bytes, pixels) == bytes;
}
void BoardDelayMs(uint32_t ms) { printf("delay %u\\n", (unsigned)ms); }
void BoardLogWrite(const char *text) { fputs(text, stdout); }
"""


def _compile(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]


def test_stream_main_classifies_camera_rows_and_stops_on_a_dead_sensor(tools, student, tmp_path):
    c_dir, _, expected, _, pixels = student
    src = codegen.source_dir(c_dir)
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{src}"]
    _compile(["arm-none-eabi-gcc", *cortex_m4.CFLAGS, "-pedantic", f"-I{src}", "-c", str(STREAM_MAIN),
              "-o", str(tmp_path / "stream_main.o")])
    (tmp_path / "board.c").write_text(_BOARD)
    app = tmp_path / "app"
    _compile(["cc", *flags, str(STREAM_MAIN), str(tmp_path / "board.c"), *map(str, sorted(src.glob("*.c"))),
              "-o", str(app)])
    (tmp_path / "pixels.bin").write_bytes(pixels.tobytes())
    run = subprocess.run([str(app)], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert run.returncode == 1  # the camera ran out of images: five failed frames, then it stops
    lines = run.stdout.splitlines()
    classes = [int(line.split()[1]) for line in lines if line.startswith("class ")]
    assert classes == list(np.argmax(expected, axis=1))
    assert [line for line in lines if line.startswith("delay")] == ["delay 10", "delay 20", "delay 40", "delay 80"]
    assert "stopping" in lines[-1]
