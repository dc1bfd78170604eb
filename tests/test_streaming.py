"""Row-streaming inference: equal to the full frame (float and int8), less memory, teachers refused."""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from pmkd_tf import data, models
from pmkd_tf.export import streaming, tflite
from pmkd_tf.export.errors import StreamingError

TINY = 1 / 16
DATA_DIR = os.environ.get(data.ENV_DATA_DIR) or str(Path(__file__).resolve().parents[2] / "shared" / "data")


def _randomise_batch_norm(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization non-trivial statistics, so streaming it wrongly would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.3, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0.0, 0.3, channels))
    return model


def _full_frame(model: keras.Model, image: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(image[None], training=False)["logits"])[0]


def _assert_same_logits(streamed: np.ndarray, full: np.ndarray) -> None:
    """Equal to float32 rounding: max |difference| <= 1e-5 of the logits' scale (at least 1)."""
    assert np.max(np.abs(streamed - full)) <= 1e-5 * max(1.0, float(np.max(np.abs(full))))


@pytest.fixture(scope="module")
def cifar():
    if not Path(DATA_DIR).is_dir():
        pytest.skip(f"CIFAR-10 image folder not found at {DATA_DIR} (set {data.ENV_DATA_DIR}).")
    return data.load("cifar10", DATA_DIR, train_examples=100, test_examples=24, seed=1)


@pytest.mark.parametrize("net", ["vgg16", "resnet18", "resnet50", "wrn_16_8"])  # every family: the other nets
def test_float_streaming_equals_the_full_frame_for_every_family(net):  # differ only in depth and width
    model = _randomise_batch_norm(models.get_model(net, "1xN", 10, TINY))
    image = np.random.default_rng(2).normal(size=(32, 32, 3)).astype(np.float32)
    result = streaming.stream_keras(model, image)
    _assert_same_logits(result.logits, _full_frame(model, image))
    assert result.line_buffer_rows == 3  # the 3x3 stem's line buffer (VGG's 2x2 pools need only 2)
    assert result.peak_bytes * 8 < result.frame_peak_bytes


def test_streaming_memory_does_not_grow_with_image_height():
    """No frame buffer: a 4x taller image needs the same streaming memory but 4x the full-frame memory."""
    results = {}
    for height in (16, 64):
        model = models.get_model("wrn_10_10", "1xN", 10, TINY, input_shape=(height, 16, 3))
        image = np.random.default_rng(3).normal(size=(height, 16, 3)).astype(np.float32)
        results[height] = streaming.stream_keras(model, image)
        _assert_same_logits(results[height].logits, _full_frame(model, image))
    assert results[64].peak_bytes == results[16].peak_bytes
    assert results[64].frame_peak_bytes == 4 * results[16].frame_peak_bytes


def test_a_one_row_stem_needs_no_line_buffer():
    model = _randomise_batch_norm(models.get_model("wrn_10_10", "1xN", 10, TINY, stem="body"))
    image = np.random.default_rng(4).normal(size=(32, 32, 3)).astype(np.float32)
    result = streaming.stream_keras(model, image)
    _assert_same_logits(result.logits, _full_frame(model, image))
    assert result.line_buffer_rows == 1


@pytest.mark.parametrize("shape", ["NxN", "Nx1"])
def test_a_model_with_tall_kernels_is_refused_with_a_clear_message(shape):
    model = models.get_model("resnet18", shape, 10, TINY)
    with pytest.raises(StreamingError, match=r"not an on-the-fly model: 16 conv\(s\) after the stem .*stage1_block1"):
        streaming.stream_keras(model, np.zeros((32, 32, 3), np.float32))


def test_a_line_buffered_teacher_streams_exactly_but_needs_more_memory():
    teacher = _randomise_batch_norm(models.get_model("vgg13", "NxN", 10, TINY))
    student = _randomise_batch_norm(models.get_model("vgg13", "1xN", 10, TINY))
    image = np.random.default_rng(5).normal(size=(32, 32, 3)).astype(np.float32)
    buffered = streaming.stream_keras(teacher, image, line_buffers=True)
    _assert_same_logits(buffered.logits, _full_frame(teacher, image))
    assert buffered.line_buffer_rows == 3
    assert buffered.peak_bytes > 2 * streaming.stream_keras(student, image).peak_bytes


def test_a_nested_model_is_refused():
    deploy = tflite.deployable(models.get_model("resnet18", "1xN", 10, TINY), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(StreamingError, match="nests model"):
        streaming.keras_stages(deploy)


def test_same_padding_puts_the_extra_pixel_after():
    assert streaming.same_padding(32, 3, 1) == (32, 1, 1)
    assert streaming.same_padding(32, 3, 2) == (16, 0, 1)
    assert streaming.same_padding(32, 1, 2) == (16, 0, 0)
    assert streaming.same_padding(7, 3, 2) == (4, 1, 1)


def _int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    return tflite.convert_int8(tflite.deployable(model, *data.STATS["cifar10"]), calibration)


@pytest.mark.parametrize("net", ["vgg13", "resnet18", "wrn_10_10"])
def test_int8_streaming_is_bit_exact_with_the_full_frame_int8_model(cifar, net):
    model = _randomise_batch_norm(models.get_model(net, "1xN", 10, TINY), seed=6)
    int8_model = _int8(model, cifar.train_images)
    expected = tflite.LiteRT(int8_model, "reference").outputs(cifar.test_images)
    streamer = streaming.Int8Streamer(int8_model)
    results = [streamer(image) for image in cifar.test_images]
    np.testing.assert_array_equal(np.stack([r.logits for r in results]), expected)
    assert results[0].peak_bytes * 8 < results[0].frame_peak_bytes
    assert results[0].line_buffer_rows == 3


def test_int8_streaming_refuses_a_teacher_and_streams_it_with_line_buffers(cifar):
    teacher = _randomise_batch_norm(models.get_model("vgg13", "NxN", 10, TINY), seed=7)
    int8_model = _int8(teacher, cifar.train_images[:20])
    with pytest.raises(StreamingError, match="not on-the-fly: conv #2 .* kernel height 3"):
        streaming.Int8Streamer(int8_model)
    expected = tflite.LiteRT(int8_model, "reference").outputs(cifar.test_images[:4])
    buffered = streaming.Int8Streamer(int8_model, line_buffers=True)
    np.testing.assert_array_equal(np.stack([buffered(image).logits for image in cifar.test_images[:4]]), expected)
