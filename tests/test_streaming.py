"""Row-streaming inference of float and int8 `.tflite`s: equal to the full frame, less memory, teachers refused."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import randomise_batch_norm, reshape_images

from pmkd_tf import data, models
from pmkd_tf.export import streaming, tflite, tflite_arithmetic
from pmkd_tf.errors import NotPMKDModelError, StreamingError

TINY = 1 / 16
DATA_DIR = os.environ.get(data.ENV_DATA_DIR) or str(Path(__file__).resolve().parents[2] / "shared" / "data")




def _float(model: keras.Model) -> bytes:
    return tflite.convert_float(tflite.deployable(model, *data.STATS["cifar10"]))


def _int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    return tflite.convert_int8(tflite.deployable(model, *data.STATS["cifar10"]), calibration)


def _stream(tflite_model: bytes, pixels: np.ndarray, line_buffers: bool = False) -> list[streaming.StreamResult]:
    """Stream every image; the logits must equal the full-frame model's on the same (reference) kernels, exactly."""
    streamer = streaming.TFLiteStreamer(tflite_model, line_buffers)
    results = [streamer(image) for image in pixels]
    expected = tflite.LiteRT(tflite_model, "reference").outputs(pixels)
    np.testing.assert_array_equal(np.stack([r.logits for r in results]), expected)
    return results


@pytest.fixture(scope="module")
def cifar():
    if not Path(DATA_DIR).is_dir():
        pytest.skip(f"CIFAR-10 image folder not found at {DATA_DIR} (set {data.ENV_DATA_DIR}).")
    return data.load("cifar10", DATA_DIR, train_examples=100, test_examples=8, seed=1)


@pytest.mark.parametrize("net", ["vgg16", "resnet18", "resnet50", "wrn_16_8"])  # every family: the other nets
def test_float_and_int8_streaming_equal_the_full_frame_for_every_family(cifar, net):  # differ in depth, width
    model = randomise_batch_norm(models.get_model(net, "1xN", 10, TINY))
    float_results = _stream(_float(model), cifar.test_images[:2])
    int8_results = _stream(_int8(model, cifar.train_images), cifar.test_images)
    for result in (float_results[0], int8_results[0]):
        assert result.line_buffer_rows == 3  # the 3x3 stem's line buffer (VGG's 2x2 pools need only 2)
        assert result.peak_bytes * 8 < result.frame_peak_bytes


# Every family with `--downsampling=average`, VGG with max too: "same" 2x1 pools meet odd row counts (19, 17) and a
# one-row strip, where a pool's window ends at the last row (its padding is skipped, not read).
POOLED = {
    "vgg13_average_19x33": ("vgg13", "average", (19, 33, 3)),
    "vgg13_max": ("vgg13", "max", (32, 32, 3)),
    "resnet18_average_17x33": ("resnet18", "average", (17, 33, 3)),
    "resnet50_average": ("resnet50", "average", (32, 32, 3)),
    "wrn_10_10_average_1x12": ("wrn_10_10", "average", (1, 12, 3)),
}


@pytest.mark.parametrize("name", POOLED)
def test_students_that_pool_before_each_stride_stream_exactly(cifar, name):
    net, downsampling, input_shape = POOLED[name]
    model = models.get_model(net, "1xN", 10, TINY, input_shape=input_shape, downsampling=downsampling)
    model = randomise_batch_norm(model)
    train, test = (reshape_images(images, input_shape) for images in (cifar.train_images, cifar.test_images))
    for result in (_stream(_float(model), test[:2])[0], _stream(_int8(model, train), test)[0]):
        assert result.line_buffer_rows == min(3, input_shape[0])  # the 3x3 stem's; a 2x1 pool holds 2 rows


def test_streaming_memory_does_not_grow_with_image_height():
    """No frame buffer: a 4x taller image needs the same streaming memory but 4x the full-frame memory."""
    results = {}
    for height in (16, 64):
        model = models.get_model("wrn_10_10", "1xN", 10, TINY, input_shape=(height, 16, 3))
        pixels = np.random.default_rng(3).integers(0, 256, (1, height, 16, 3), dtype=np.uint8)
        results[height] = _stream(_float(model), pixels)[0]
    assert results[64].peak_bytes == results[16].peak_bytes
    assert results[64].frame_peak_bytes == 4 * results[16].frame_peak_bytes


def test_a_one_row_stem_needs_no_line_buffer():
    model = randomise_batch_norm(models.get_model("wrn_10_10", "1xN", 10, TINY, stem="body"))
    pixels = np.random.default_rng(4).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    assert _stream(_float(model), pixels)[0].line_buffer_rows == 1


@pytest.mark.parametrize("shape", ["NxN", "Nx1"])
def test_a_model_with_tall_kernels_is_refused_with_a_clear_message(shape):
    model = _float(models.get_model("resnet18", shape, 10, TINY))
    with pytest.raises(StreamingError, match=r"not an on-the-fly model: 16 conv\(s\) after the stem .* height > 1"):
        streaming.TFLiteStreamer(model)
    assert "line_buffers=True" in streaming.TFLiteStreamer(model, line_buffers=True).refusal


def test_a_line_buffered_teacher_streams_exactly_but_needs_more_memory(cifar):
    teacher = randomise_batch_norm(models.get_model("vgg13", "NxN", 10, TINY), seed=7)
    student = randomise_batch_norm(models.get_model("vgg13", "1xN", 10, TINY), seed=7)
    buffered = _stream(_int8(teacher, cifar.train_images[:20]), cifar.test_images[:4], line_buffers=True)[0]
    assert buffered.line_buffer_rows == 3
    student_peak = _stream(_int8(student, cifar.train_images[:20]), cifar.test_images[:1])[0].peak_bytes
    assert buffered.peak_bytes > 2 * student_peak


def test_a_nested_model_is_refused_before_conversion():
    """A wrapper around the student (a pacemaker ensemble, say) is refused: export the student itself."""
    student = models.get_model("resnet18", "1xN", 10, TINY)
    pixels = keras.Input((32, 32, 3))
    with pytest.raises(NotPMKDModelError, match="nests model"):
        tflite.deployable(keras.Model(pixels, student(pixels)), *data.STATS["cifar10"])


def test_same_padding_puts_the_extra_pixel_after():
    assert tflite_arithmetic.same_padding(32, 3, 1) == (32, 1, 1)
    assert tflite_arithmetic.same_padding(32, 3, 2) == (16, 0, 1)
    assert tflite_arithmetic.same_padding(32, 1, 2) == (16, 0, 0)
    assert tflite_arithmetic.same_padding(7, 3, 2) == (4, 1, 1)
