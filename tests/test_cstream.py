"""The generated C engine on the host: bit-exact with LiteRT's reference kernels for every family, small state.

Needs a C compiler (Debian's gcc) and binutils' `size`; the board-package
tests also need `cmake` and `make`, and gcc-arm-none-eabi with
libnewlib-arm-none-eabi. Under CI=true a missing tool fails these tests;
elsewhere they skip, naming the package to install.
"""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import HANG_SECONDS, randomise_batch_norm, require, reshape_images

from pmkd_tf import models
from pmkd_tf.export import tflite
from pmkd_tf.export.cstream import codegen, export, graph, host, layout
from pmkd_tf.export.cstream.toolchain import Toolchain, read_stats
from pmkd_tf.errors import ExportError, StreamingError

TINY = 1 / 16
CALIBRATION = 100
IMAGES = 160  # all of the cifar fixture's test images


@pytest.fixture(scope="module")
def compiler():
    """The host compiler and `size`, or a skip (a failure under CI=true) naming what to install."""
    require(host.tools_missing(), "host C check")




class Case:
    """One int8 model of the zoo, its generated c/ and its host check on real images."""

    def __init__(self, cifar, tmp_path_factory, net: str, shape: str, input_shape=(32, 32, 3),
                 downsampling: str = "stride", seed: int = 0):
        keras.utils.set_random_seed(seed)
        model = models.get_model(net, shape, 10, TINY, input_shape=input_shape, downsampling=downsampling)
        model = randomise_batch_norm(model, seed)
        channels = input_shape[2]
        mean, std = (cifar.mean, cifar.std) if channels == 3 else ([0.47], [0.25])
        self.int8 = tflite.convert_int8(tflite.deployable(model, mean, std),
                                        reshape_images(cifar.train_images[:CALIBRATION], input_shape))
        reference = tflite.LiteRT(self.int8, "reference")
        self.inputs = tflite.quantize_pixels(reshape_images(cifar.test_images[:IMAGES], input_shape), reference.input)
        self.expected = np.stack([reference.invoke(x) for x in self.inputs])
        self.c_dir = tmp_path_factory.mktemp(f"{net}_{shape}") / "c"
        self.sources = codegen.write_c_sources(self.int8, self.c_dir)
        self.host = host.run_engine(self.c_dir, self.inputs, self.expected)


# Every family in 1xN and a teacher; one non-square input (whose last pool leaves 2 rows to flatten) and one
# grey input ride along, so that each export (the slow part) covers as much as it can. Then every family again with
# `--downsampling=average` (and VGG with max): "same" 2x1 pools that meet an odd row count (17, 19) or a one-row
# strip, whose padding row must be skipped, not read.
CASES = {
    "vgg13_1xN_64x40": ("vgg13", "1xN", (64, 40, 3)),
    "resnet18_1xN": ("resnet18", "1xN"),
    "resnet18_NxN": ("resnet18", "NxN"),
    "resnet50_1xN": ("resnet50", "1xN"),
    "wrn_10_10_1xN_grey": ("wrn_10_10", "1xN", (32, 32, 1)),
    "vgg13_1xN_average_19x33": ("vgg13", "1xN", (19, 33, 3), "average"),
    "vgg13_1xN_max": ("vgg13", "1xN", (32, 32, 3), "max"),
    "resnet18_1xN_average_17x33": ("resnet18", "1xN", (17, 33, 3), "average"),
    "resnet50_1xN_average": ("resnet50", "1xN", (32, 32, 3), "average"),
    "wrn_10_10_1xN_average_1x12": ("wrn_10_10", "1xN", (1, 12, 3), "average"),
}


@pytest.fixture(scope="module")
def cases(compiler, cifar, tmp_path_factory):
    """Every case of CASES, built once (an export and a compile each)."""
    return {name: Case(cifar, tmp_path_factory, *spec, seed=index) for index, (name, spec) in enumerate(CASES.items())}


@pytest.mark.parametrize("name", CASES)
def test_every_logit_equals_litert_reference_kernels(cases, name):
    case = cases[name]
    assert len(np.unique(case.expected, axis=0)) > 20  # the logits vary, so equality means something
    assert case.host["images"] == IMAGES
    assert (case.host["mismatched"], case.host["mismatched_values"]) == (0, 0), case.host
    assert case.host["state_bytes"] >= case.sources.arena_bytes > 0
    assert 0 < case.host["peak_stack_bytes"] < 4096
    assert case.host["code_bytes"] > 0 and case.host["const_bytes"] > 0
    assert case.host["data_bytes"] == case.host["bss_bytes"] == 0  # all mutable state is the caller's pmkd_stream


def test_the_header_describes_the_model(cases):
    case = cases["vgg13_1xN_64x40"]
    header = (codegen.source_dir(case.c_dir) / "pmkd_stream.h").read_text()
    for macro, value in (("HEIGHT", 64), ("WIDTH", 40), ("CHANNELS", 3)):
        assert f"#define PMKD_INPUT_{macro} {value}\n" in header
    assert "#define PMKD_NUM_CLASSES 10\n" in header
    assert "#define PMKD_INPUT_SCALE 1.0f\n#define PMKD_INPUT_ZERO_POINT (-128)\n" in header  # pixel - 128
    grey = codegen.source_dir(cases["wrn_10_10_1xN_grey"].c_dir) / "pmkd_stream.h"
    assert "#define PMKD_INPUT_CHANNELS 1\n" in grey.read_text()
    written = [path.relative_to(case.c_dir).as_posix() for path in case.c_dir.rglob("*") if path.is_file()]
    assert sorted(written) == sorted(codegen.FILES)


def test_the_inference_path_has_no_float_no_heap_and_const_weights(cases):
    case = cases["resnet18_1xN"]
    src = codegen.source_dir(case.c_dir)
    code = "".join((src / name).read_text() for name in ("pmkd_stream.c", "pmkd_engine.h", "pmkd_model.c"))
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)  # the comments may say "no float"
    assert not re.search(r"\b(float|double|malloc|free)\b", code)
    includes = set(re.findall(r"#include <([^>]+)>", code))
    assert includes <= {"stdint.h", "string.h", "stddef.h", "arm_acle.h"}
    arrays = re.findall(r"^(static )?(const )?\w+ \w+\[\w*\] = ", (src / "pmkd_model.c").read_text(), re.M)
    assert arrays and all(const for _, const in arrays)


def test_a_student_needs_a_fraction_of_its_teachers_state(cases):
    student, teacher = cases["resnet18_1xN"].host, cases["resnet18_NxN"].host
    assert student["state_bytes"] * 5 < teacher["state_bytes"]


def test_rows_no_layer_reads_are_skipped_and_computing_them_changes_nothing(cases, tmp_path):
    case = cases["resnet18_1xN"]
    # The 1x1 and 1x3 stride-2 convs read only even rows; before the first one, every layer is row-local, so
    # the logits depend on 11 of the 32 image rows (the stem's 3-row windows around rows 0, 8, 16, 24).
    assert case.sources.input_rows_read == 11
    assert case.sources.macs_executed < 0.6 * case.sources.macs
    every_row = codegen.write_c_sources(case.int8, tmp_path / "c", skip_dead_rows=False)
    assert every_row.macs_executed == every_row.macs == case.sources.macs
    result = host.run_engine(every_row.directory, case.inputs, case.expected)
    assert result["mismatched"] == 0
    assert result["state_bytes"] >= case.host["state_bytes"]
    # A teacher's 3x3 stride-2 convs read every row: nothing to skip but the rows its VALID pools drop.
    assert cases["resnet18_NxN"].sources.macs_executed == cases["resnet18_NxN"].sources.macs


def test_a_pooling_student_reads_every_image_row(cases):
    """Pooling row pairs before each stride leaves no image row dead, at any height (a 1-row strip too)."""
    pooled = {name: spec[2][0] for name, spec in CASES.items() if len(spec) == 4}  # name: image height
    assert len(pooled) == 5
    assert {name: cases[name].sources.input_rows_read for name in pooled} == pooled


def test_the_layout_is_verified_row_by_row(cases):
    """`layout.verify_layout` replays the schedule: packing every ring at offset 0 must be caught, not compiled."""
    good = layout.lay_out(graph.parse(cases["resnet18_1xN"].int8))
    layout.verify_layout(good)
    with pytest.raises(RuntimeError, match="memory layout: row .* was overwritten"):
        layout.verify_layout(dataclasses.replace(good, offset=(0,) * len(good.offset)))


def test_an_image_read_by_a_window_is_copied_into_a_line_buffer(compiler, cifar, tmp_path):
    """With no normalisation ops in front, the first conv's 3-row window reads the image rows themselves."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    logits = keras.layers.Reshape((10,))(keras.layers.Conv2D(10, 1)(x))
    int8 = tflite.convert_int8(keras.Model(inputs, logits), cifar.train_images[:CALIBRATION])
    assert layout.lay_out(graph.parse(int8)).ring[0] == 3  # the caller's row alone would not do
    reference = tflite.LiteRT(int8, "reference")
    inputs = tflite.quantize_pixels(cifar.test_images[:IMAGES], reference.input)
    expected = np.stack([reference.invoke(x) for x in inputs])
    sources = codegen.write_c_sources(int8, tmp_path / "c")
    assert host.run_engine(sources.directory, inputs, expected)["mismatched"] == 0


@pytest.fixture(scope="module")
def tiny_int8(cifar) -> bytes:
    """A tiny untrained int8 model whose logits are ready before the image's last row: its stem, a VALID 3x3
    stride-2 conv, reads rows 0 to 30, so no layer reads row 31. Seeded before its layers create their weights,
    so its logits are the same in every run."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    logits = keras.layers.Reshape((10,))(keras.layers.Conv2D(10, 1)(x))
    return tflite.convert_int8(keras.Model(inputs, logits), cifar.train_images[:20])


@pytest.fixture(scope="module")
def tiny_engine(compiler, tiny_int8, tmp_path_factory) -> codegen.CSources:
    """The C engine of `tiny_int8`."""
    return codegen.write_c_sources(tiny_int8, tmp_path_factory.mktemp("tiny") / "c")


def test_a_model_of_1x1_convs_only_compiles_warning_free(compiler, cifar, tmp_path):
    """PMKD_MAX_WINDOW 1 (e.g. --n=1): the engine still builds under -Werror."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 1, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    logits = keras.layers.Reshape((10,))(keras.layers.Conv2D(10, 1)(x))
    keras.utils.set_random_seed(0)
    sources = codegen.write_c_sources(tflite.convert_int8(keras.Model(inputs, logits), cifar.train_images[:20]),
                                      tmp_path / "c")
    assert "#define PMKD_MAX_WINDOW 1" in (codegen.source_dir(sources.directory) / "pmkd_stream.h").read_text()
    host.compile_program(sources.directory, tmp_path)


API_CHECKS = 46  # the promises harness/api_check.c checks: all must be checked, none may fail


def test_the_api_reports_misuse_as_its_header_says(tiny_engine, tmp_path):
    """harness/api_check.c: NULL arguments, logits before the last row, rows past the end, resets."""
    assert tiny_engine.input_rows_read == 31  # the last row is dead, so "logits NULL mid-image" means something
    program, _ = host.compile_program(tiny_engine.directory, tmp_path, host.API_CHECK)
    run = subprocess.run([str(program)], capture_output=True, text=True, timeout=HANG_SECONDS)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"checks {API_CHECKS} failed 0\n", "")
    header = (codegen.source_dir(tiny_engine.directory) / "pmkd_stream.h").read_text()
    for status in ("PMKD_OK = 0", "PMKD_IMAGE_COMPLETE = 1", "PMKD_ERROR_NULL = -1", "PMKD_ERROR_PAST_END = -2"):
        assert status in header


def test_the_host_harness_fails_on_an_unexpected_status(tiny_engine, tmp_path):
    c_dir = shutil.copytree(tiny_engine.directory, tmp_path / "c")
    engine = codegen.source_dir(c_dir) / "pmkd_stream.c"
    complete = "return r + 1 == image->out_h ? PMKD_IMAGE_COMPLETE : PMKD_OK;"
    assert engine.read_text().count(complete) == 1
    engine.write_text(engine.read_text().replace(complete, "return PMKD_OK; /* never complete */"))
    with pytest.raises(ExportError, match="pmkd_stream_push_row returned status 0, not 1, for row 31 of image 0"):
        host.run_engine(c_dir, np.zeros((1, 32, 32, 3), np.int8), np.zeros((1, 10), np.int8))


BOARD_IMAGES = 8
CMAKE = Toolchain("CMake build", {"cmake": "cmake", "make": "make", "cc": "gcc"})
# A board project that adds c/ in the one line tflite/README.md gives and links the host harness against it.
_BOARD_CMAKE = """cmake_minimum_required(VERSION 3.13)
project(board LANGUAGES C)
add_subdirectory(c)
find_package(Threads REQUIRED)
add_executable(host_main {harness})
target_link_libraries(host_main PRIVATE pmkd_stream Threads::Threads)
"""


def test_c_is_a_cmake_library_a_board_project_adds_in_one_line(tiny_int8, tiny_engine, cifar, tmp_path):
    """`add_subdirectory(c)` builds the static library `pmkd_stream` (C99), and a program linked against it
    classifies real test images with the int8 .tflite's logits, bit for bit."""
    require(CMAKE.missing(), "CMake build")
    reference = tflite.LiteRT(tiny_int8, "reference")
    inputs = tflite.quantize_pixels(cifar.test_images[:BOARD_IMAGES], reference.input)
    expected = np.stack([reference.invoke(x) for x in inputs])
    assert len(np.unique(expected, axis=0)) == BOARD_IMAGES  # the logits vary, so equality means something
    project, build = tmp_path / "board", tmp_path / "build"
    shutil.copytree(tiny_engine.directory, project / "c")
    (project / "CMakeLists.txt").write_text(_BOARD_CMAKE.format(harness=host.HARNESS.as_posix()))

    def execute(work: Path, images: int) -> tuple[dict[str, int], dict]:
        CMAKE.run_tool(["cmake", "-S", str(project), "-B", str(build), "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror",
                        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], "configuring the board project")
        CMAKE.run_tool(["cmake", "--build", str(build), "-j", "1"], "building the board project")
        output = CMAKE.run_tool([str(build / "host_main"), str(work / "images.bin"), str(work / "logits.bin")],
                                f"running {images} images")
        return read_stats(output), {}

    result = CMAKE.run_engine(inputs, expected, execute)
    assert (result["images"], result["mismatched"], result["mismatched_values"]) == (BOARD_IMAGES, 0, 0), result
    assert (build / "c" / "libpmkd_stream.a").is_file()
    commands = json.loads((build / "compile_commands.json").read_text())
    engine = {Path(c["file"]).name: c["command"] for c in commands if "/c/src/" in Path(c["file"]).as_posix()}
    assert set(engine) == {"pmkd_stream.c", "pmkd_model.c"}
    assert all("-std=c99" in command for command in engine.values()), engine


ARDUINO = Toolchain("Arduino library check", {"arm-none-eabi-gcc": "gcc-arm-none-eabi",
                                              "arm-none-eabi-g++": "gcc-arm-none-eabi",
                                              "arm-none-eabi-nm": "binutils-arm-none-eabi"})
# The Arduino library specification (1.5, rev. 2.2): the fields the Library Manager requires, and its categories.
ARDUINO_FIELDS = ("name", "version", "author", "maintainer", "sentence", "paragraph", "category", "url",
                  "architectures")
ARDUINO_CATEGORIES = {"Display", "Communication", "Signal Input/Output", "Sensors", "Device Control", "Timing",
                      "Data Storage", "Data Processing", "Other"}
M4 = ("-mcpu=cortex-m4", "-mthumb", "-Wall", "-Wextra", "-Werror")
# What a sketch does with the library, without the Arduino core. A sketch is C++.
_SKETCH = """#include <pmkd_stream.h>

static pmkd_stream stream;
static int8_t row[PMKD_INPUT_WIDTH * PMKD_INPUT_CHANNELS];

int classify() {
    pmkd_stream_reset(&stream);
    for (int r = 0; r < PMKD_INPUT_HEIGHT; ++r) {
        if (pmkd_stream_push_row(&stream, row) < 0) return -1;
    }
    const int8_t *logits = pmkd_stream_logits(&stream);
    int best = 0;
    for (int c = 1; c < PMKD_NUM_CLASSES; ++c) {
        if (logits[c] > logits[best]) best = c;
    }
    return best;
}
"""


def _symbols(nm_output: str) -> set[str]:
    """The symbol names `nm` lists (the last field of each line)."""
    return {line.split()[-1] for line in nm_output.splitlines() if line.strip()}


def test_c_is_an_arduino_library_that_builds_for_a_cortex_m4(tiny_engine, tmp_path):
    """library.properties with every required field and `src/` holding all the sources, which compile for a
    Cortex-M4; a C++ sketch calls the engine with C linkage. (No Arduino core installs here.)"""
    require(ARDUINO.missing(), "Arduino library check")
    c_dir = tiny_engine.directory
    lines = (c_dir / "library.properties").read_text().splitlines()
    assert all("=" in line or line.startswith("#") for line in lines)  # any other line breaks every Arduino build
    properties = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert all(properties.get(field, "").strip() for field in ARDUINO_FIELDS), properties
    assert properties["name"] == "pmkd_stream" and re.fullmatch(r"\d+\.\d+\.\d+", properties["version"])
    assert properties["category"] in ARDUINO_CATEGORIES and properties["url"].startswith("https://")
    src = codegen.source_dir(c_dir)
    assert src == c_dir / "src" and (src / properties["includes"]).is_file()
    assert not [p.name for p in c_dir.iterdir() if p.suffix in {".c", ".h", ".cpp"}]  # Arduino compiles src/ only
    engine = []
    for source in sorted(src.glob("*.c")):
        engine.append(tmp_path / f"{source.stem}.o")
        ARDUINO.run_tool(["arm-none-eabi-gcc", *M4, "-std=c99", "-c", str(source), "-o", str(engine[-1])],
                         f"compiling {source.name}")
    assert [o.name for o in engine] == ["pmkd_model.o", "pmkd_stream.o"]
    sketch = tmp_path / "sketch.cpp"
    sketch.write_text(_SKETCH)
    ARDUINO.run_tool(["arm-none-eabi-g++", *M4, f"-I{src}", "-c", str(sketch), "-o", str(tmp_path / "sketch.o")],
                     "compiling the sketch")
    calls = {"pmkd_stream_reset", "pmkd_stream_push_row", "pmkd_stream_logits"}
    assert calls <= _symbols(ARDUINO.run_tool(["arm-none-eabi-nm", "--undefined-only", str(tmp_path / "sketch.o")],
                                              "arm-none-eabi-nm"))
    assert calls <= _symbols(ARDUINO.run_tool(["arm-none-eabi-nm", "--defined-only", *map(str, engine)],
                                              "arm-none-eabi-nm"))


@pytest.fixture(scope="module")
def depthwise_student() -> keras.Model:
    """A PMKD-shaped model with a DEPTHWISE_CONV_2D, an op the engine does not have (TFLite Micro has)."""
    inputs = keras.Input((32, 32, 3), name="image")
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.DepthwiseConv2D((1, 3), padding="same")(stem))
    return keras.Model(inputs, {"logits": keras.layers.Dense(10)(x), "features": [stem]})


def test_an_op_the_engine_lacks_is_one_line_and_leaves_no_c_dir(cifar, depthwise_student, tmp_path):
    int8 = tflite.convert_int8(tflite.deployable(depthwise_student, cifar.mean, cifar.std), cifar.train_images[:20])
    c_dir = tmp_path / "c"
    refusal = r"^op \d+ \(DEPTHWISE_CONV_2D\): the C engine has no DEPTHWISE_CONV_2D kernel; it runs CONV_2D, "
    with pytest.raises(StreamingError, match=refusal) as error:
        codegen.write_c_sources(int8, c_dir)
    assert "\n" not in str(error.value)
    assert not c_dir.exists() and not list(tmp_path.iterdir())
    # The export records the refusal and removes a c/ left by an earlier export of another model.
    c_dir.mkdir()
    (c_dir / "pmkd_stream.h").write_text("stale")
    section = export.export_c(int8, c_dir, np.zeros((1, 32, 32, 3), np.int8), np.zeros((1, 10), np.int8), "auto", 1)
    assert set(section) == {"refused"} and "DEPTHWISE_CONV_2D" in section["refused"]
    assert export.failure(section).startswith("C engine: op ") and not c_dir.exists()
    assert export.export_c(int8, c_dir, None, None, "off", 1) == {"skipped": "turned off (--c_engine=off)"}


def test_the_cases_cover_every_kernel(cases):
    nodes = [node for case in cases.values() for node in graph.parse(case.int8).nodes]
    assert {node.kind for node in nodes} == set(graph.NODE_KINDS)
    convs = {(node.window, node.kernel_w, node.stride) for node in nodes if node.kind == graph.CONV}
    assert {(3, 3, 1), (3, 3, 2), (1, 3, 1), (1, 3, 2), (1, 1, 1), (1, 1, 2)} <= convs


def test_c_engine_on_with_an_unstreamable_model_exits_2_but_exports_tflite_micro(depthwise_student, data_dir,
                                                                                 tmp_path):
    model_path = tmp_path / "student.keras"
    depthwise_student.save(model_path)
    out_dir = tmp_path / "export"
    result = subprocess.run(
        [sys.executable, "-m", "pmkd_tf.export", f"--model={model_path}", "--dataset=cifar10",
         f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--calibration_examples=20", "--test_examples=8",
         "--micro_examples=2", "--float_stream_examples=1", "--int8_stream_examples=2", "--latency_runs=2",
         "--c_engine=on", "--noverbose"],
        capture_output=True, text=True, timeout=HANG_SECONDS)
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("pmkd_tf.export: error: C engine: op ") and "DEPTHWISE_CONV_2D" in error
    for name in ("model_int8.tflite", "model_data.cc", "model_data.h", "model_ops.h", "report.json"):
        assert (out_dir / name).is_file(), name
    assert not (out_dir / "c").exists()
    assert "DEPTHWISE_CONV_2D" in json.loads((out_dir / "report.json").read_text())["c_stream"]["refused"]
