"""Export of a tiny trained student end to end: int8 vs float, TFLM vs LiteRT, C arrays, clear errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import HANG_SECONDS, reshape_images

from pmkd_tf import data, models
from pmkd_tf.export import carray, exporter, micro, tflite
from pmkd_tf.errors import ExportError, NotPMKDModelError, UnsupportedOpError

DATA_DIR = os.environ.get(data.ENV_DATA_DIR) or str(Path(__file__).resolve().parents[2] / "shared" / "data")
CLI = [sys.executable, "-m", "pmkd_tf.export"]
# Bounds for int8 vs float on the tiny student below (barely trained, so its logits are close
# together and quantisation flips many near-ties). Measured over seeds and widths 1/16, 1/8:
# top-1 agreement 0.84-0.90, accuracy change < 2 points, mean |int8 - float logit| 0.08-0.11
# of the logits' standard deviation. The bounds leave room for other seeds and CPUs.
MIN_TOP1_AGREEMENT = 0.75
MAX_ACCURACY_DROP_POINTS = 5.0
MAX_RELATIVE_LOGIT_ERROR = 0.2


@pytest.fixture(scope="module")
def splits():
    if not Path(DATA_DIR).is_dir():
        pytest.skip(f"CIFAR-10 image folder not found at {DATA_DIR} (set {data.ENV_DATA_DIR}).")
    return data.load("cifar10", DATA_DIR, train_examples=500, test_examples=200, seed=0)


@pytest.fixture(scope="module")
def student_path(splits, tmp_path_factory):
    """A resnet18 1xN student at 1/16 width, trained for 3 epochs on 500 real images, saved as .keras."""
    keras.utils.set_random_seed(0)
    student = models.get_model("resnet18", "1xN", 10, 1 / 16)
    for layer in student.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8  # a few dozen steps must move the inference statistics
    classifier = tflite.logits_model(student)
    classifier.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = keras.ops.convert_to_numpy(data.normalize(splits.train_images, splits.mean, splits.std))
    classifier.fit(images, splits.train_labels, batch_size=32, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("student") / "student.keras"
    student.save(path)
    return path


@pytest.fixture(scope="module")
def exported(student_path, tmp_path_factory):
    """`python -m pmkd_tf.export` on the saved student, as a user runs it; returns (out_dir, report)."""
    out_dir = tmp_path_factory.mktemp("export")
    result = subprocess.run(
        [*CLI, f"--model={student_path}", "--dataset=cifar10", f"--data_dir={DATA_DIR}", f"--out_dir={out_dir}",
         "--calibration_examples=300", "--test_examples=200", "--micro_examples=16", "--float_stream_examples=2",
         "--int8_stream_examples=200", "--latency_runs=30", "--noverbose"],
        capture_output=True, text=True, timeout=HANG_SECONDS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PMKD export of" in result.stdout and "TFLM arena" in result.stdout
    return out_dir, json.loads((out_dir / "report.json").read_text())


def test_export_writes_the_board_bundle_and_a_consistent_report(exported):
    out_dir, report = exported
    for name in exporter.FILES:
        assert (out_dir / name).is_file(), name
    int8_model = (out_dir / "model_int8.tflite").read_bytes()
    assert report["flash_bytes"]["int8"] == len(int8_model)
    assert report["ops"] == list(micro.check_micro_ops(int8_model))
    assert report["op_resolver"][0] == f"tflite::MicroMutableOpResolver<{len(report['ops'])}> resolver;"
    assert report["parameters"] > 0 and report["macs"] > report["parameters"]
    assert report["latency_ms"]["int8"] > 0 and report["latency_ms"]["float"] > 0
    assert (out_dir / "summary.txt").read_text() == exporter.summary(report)


def test_int8_model_is_full_integer_and_takes_camera_pixels(exported):
    out_dir, report = exported
    runner = tflite.LiteRT((out_dir / "model_int8.tflite").read_bytes())
    assert (runner.input.dtype, runner.input.scale, runner.input.zero_point) == ("int8", 1.0, -128)
    assert runner.output.dtype == "int8"
    assert report["input"]["feed"].startswith("int8 = pixel - 128")
    pixels = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(tflite.quantize_pixels(pixels, runner.input), [[[-128, 0, 127]]])
    details = runner.interpreter.get_tensor_details()
    assert {np.dtype(d["dtype"]).name for d in details} <= {"int8", "int32"}
    assert not {"QUANTIZE", "DEQUANTIZE"} & set(report["ops"])


def test_int8_agrees_with_the_float_model_on_real_test_images(exported):
    _, report = exported
    accuracy = report["accuracy"]
    assert accuracy["test_examples"] == 200
    assert accuracy["keras_float"] > 0.15  # trained: well above chance (0.10), so agreement means something
    assert abs(accuracy["tflite_float"] - accuracy["keras_float"]) <= 0.01
    assert accuracy["int8_float_agreement"] >= MIN_TOP1_AGREEMENT
    assert abs(accuracy["int8_drop_points"]) <= MAX_ACCURACY_DROP_POINTS
    assert accuracy["int8_logit_mean_abs_error"] <= MAX_RELATIVE_LOGIT_ERROR * accuracy["float_logit_std"]


def test_float_tflite_computes_the_keras_logits(exported, student_path, splits):
    out_dir, _ = exported
    student = tflite.read_student(student_path)
    expected = tflite.keras_logits(student, splits.test_images[:16], splits.mean, splits.std)
    got = tflite.LiteRT((out_dir / "model_float.tflite").read_bytes()).outputs(splits.test_images[:16])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_tflite_micro_is_bit_exact_with_litert(exported, splits):
    out_dir, report = exported
    assert report["micro"]["bit_exact_with_litert_reference"] and report["micro"]["examples"] == 16
    int8_model = (out_dir / "model_int8.tflite").read_bytes()
    reference = tflite.LiteRT(int8_model, "reference")
    inputs = tflite.quantize_pixels(splits.test_images[:32], reference.input)
    np.testing.assert_array_equal(micro.run_micro(int8_model, inputs), np.stack([reference.invoke(x) for x in inputs]))


def test_arena_is_the_smallest_that_runs(exported, splits):
    out_dir, report = exported
    int8_model = (out_dir / "model_int8.tflite").read_bytes()
    arena = report["arena_bytes"]
    inputs = np.zeros((1, 32, 32, 3), np.int8)
    micro.run_micro(int8_model, inputs, arena_size=arena["measured"])
    with pytest.raises(ExportError, match="cannot load the model"):
        micro.run_micro(int8_model, inputs, arena_size=arena["measured"] - 1)
    assert arena["recorded_by_tflm"] == arena["measured"]
    assert arena["board"] % 1024 == 0 and 0 <= arena["board"] - arena["measured"] < 1024


def test_float_and_int8_streaming_in_the_report_are_bit_exact_and_small(exported):
    _, report = exported
    stream = report["streaming"]
    assert stream["on_the_fly"] and "refused" not in stream
    assert (stream["float"]["images"], stream["int8"]["images"]) == (2, 200)
    for kind in ("float", "int8"):
        assert stream[kind]["bit_exact_images"] == stream[kind]["images"]
        assert stream[kind]["max_abs_logit_diff"] == 0.0 and stream[kind]["prediction_agreement"] == 1.0
    assert stream["int8"]["peak_bytes"] * 8 < stream["int8"]["frame_peak_bytes"] < stream["tflm_arena_bytes"]


@pytest.mark.parametrize("downsampling, op", [("average", "AVERAGE_POOL_2D"), ("max", "MAX_POOL_2D")])
def test_a_student_that_pools_row_pairs_converts_and_runs_on_tflite_micro(splits, downsampling, op):
    """Its "same" 2x1 pools at an odd height (the last window is one row): float TFLite computes the Keras
    logits, and TFLite Micro the int8 logits of LiteRT's reference kernels bit for bit."""
    shape = (17, 33, 3)
    keras.utils.set_random_seed(0)
    student = models.get_model("wrn_10_10", "1xN", 10, 1 / 16, input_shape=shape, downsampling=downsampling)
    images = reshape_images(splits.test_images[:16], shape)
    deploy = tflite.deployable(student, splits.mean, splits.std)
    np.testing.assert_allclose(tflite.LiteRT(tflite.convert_float(deploy)).outputs(images),
                               tflite.keras_logits(student, images, splits.mean, splits.std), atol=1e-4, rtol=1e-4)
    int8_model = tflite.convert_int8(deploy, reshape_images(splits.train_images[:100], shape))
    assert op in micro.check_micro_ops(int8_model)
    reference = tflite.LiteRT(int8_model, "reference")
    inputs = tflite.quantize_pixels(images, reference.input)
    np.testing.assert_array_equal(micro.run_micro(int8_model, inputs), np.stack([reference.invoke(x) for x in inputs]))


def test_model_data_cc_compiles_and_holds_the_exact_model_bytes(exported, splits, tmp_path):
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    out_dir, report = exported
    check = tmp_path / "check.cc"
    check.write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;\n"
        '  std::fprintf(stderr, "%d %d %.9g %d %s\\n", g_model_data_len, kTensorArenaSize, kInputScale,\n'
        "               kInputZeroPoint, kClassNames[kNumClasses - 1]);\n"
        "  return std::fwrite(g_model_data, 1, g_model_data_len, stdout) == g_model_data_len ? 0 : 4;\n"
        "}\n")
    binary = tmp_path / "check"
    subprocess.run([compiler, "-std=c++17", "-Wall", "-Werror", f"-I{out_dir}", str(out_dir / "model_data.cc"),
                    str(check), "-o", str(binary)], check=True, capture_output=True, timeout=HANG_SECONDS)
    result = subprocess.run([str(binary)], capture_output=True, timeout=HANG_SECONDS)
    assert result.returncode == 0
    assert result.stdout == (out_dir / "model_int8.tflite").read_bytes()
    length, arena, scale, zero_point, last_class = result.stderr.decode().split()
    assert (int(length), int(arena), float(scale), int(zero_point)) == (
        report["flash_bytes"]["int8"], report["arena_bytes"]["board"], 1.0, -128)
    assert last_class == splits.class_names[-1]


def test_model_ops_header_registers_exactly_the_models_ops(exported):
    out_dir, report = exported
    header = (out_dir / "model_ops.h").read_text()
    assert f"constexpr int kNumModelOps = {len(report['ops'])};" in header
    registered = [line.split("resolver.")[1].split("(")[0] for line in header.splitlines() if "resolver.Add" in line]
    assert registered == [micro.RESOLVER_METHODS[op] for op in report["ops"]]


def test_model_data_cc_lists_every_byte_and_the_class_names():
    text = carray.model_data_cc(bytes(range(20)), ("cat", "dog"))
    assert "0x00, 0x01" in text and "0x13," in text and "g_model_data_len = 20;" in text
    assert 'kClassNames[kNumClasses] = {"cat", "dog"};' in text


def test_count_macs_on_a_hand_computed_model():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Conv2D(5, (1, 3), strides=2, padding="same", use_bias=False)(x)
    outputs = keras.layers.Dense(7)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    assert tflite.count_macs(model) == 4 * 4 * 3 * 9 * 2 + 2 * 2 * 5 * 3 * 3 + 20 * 7


def _one_line_error(returncode: int, stderr: str, fragment: str) -> None:
    assert returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("pmkd_tf.export: error:")]
    assert len(errors) == 1 and fragment in errors[0], stderr[-2000:]


def test_cli_refuses_a_model_that_is_not_a_pmkd_model(tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs)))
    path = tmp_path / "plain.keras"
    keras.Model(inputs, outputs).save(path)
    result = subprocess.run([*CLI, f"--model={path}", f"--out_dir={tmp_path}", f"--data_dir={DATA_DIR}"],
                            capture_output=True, text=True, timeout=HANG_SECONDS)
    _one_line_error(result.returncode, result.stderr, "not a PMKD model")


@pytest.mark.parametrize("flags, fragment", [
    (["--model={missing}", "--out_dir={tmp}"], "does not exist"),
    (["--out_dir={tmp}"], "--model must have a value"),
    (["--model={missing}", "--out_dir={tmp}", "--calibration_examples=0"], "--calibration_examples=0: 0 is not"),
    (["--model={missing}", "--out_dir={tmp}", "--c_engine=maybe"], "--c_engine=maybe: value should be one of"),
])
def test_cli_user_mistakes_are_one_line_and_exit_code_2(flags, fragment, tmp_path):
    args = [f.format(missing=tmp_path / "nope.keras", tmp=tmp_path) for f in flags]
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=HANG_SECONDS)
    _one_line_error(result.returncode, result.stderr, fragment)


def test_a_model_with_an_op_tflite_micro_lacks_is_refused(splits, tmp_path):
    """A PMKD-shaped model whose int8 graph holds REVERSE_V2 (a horizontal flip): no TFLM kernel."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=2), name="mirror")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, {"logits": keras.layers.Dense(10)(pooled), "features": [x]})
    with pytest.raises(UnsupportedOpError, match="REVERSE_V2"):
        exporter.export_student(model, splits, tmp_path, splits.train_images[:20])


def test_validate_pmkd_names_what_is_missing():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
    with pytest.raises(NotPMKDModelError, match="dict with 'logits' and 'features'"):
        tflite.validate_pmkd(keras.Model(inputs, x))
    y = keras.layers.Conv2D(4, 3, name="first_conv")(inputs)
    no_stem = keras.Model(inputs, {"logits": keras.layers.Flatten()(y), "features": [y]})
    with pytest.raises(NotPMKDModelError, match="no 'stem_conv' layer"):
        tflite.validate_pmkd(no_stem)


def test_a_dataset_that_does_not_fit_the_model_is_refused(splits, tmp_path):
    student = models.get_model("resnet18", "1xN", 100, 1 / 16)
    with pytest.raises(ExportError, match="into 100 classes, but cifar10 has .* of 10 classes"):
        exporter.export_student(student, splits, tmp_path, splits.train_images[:20])
