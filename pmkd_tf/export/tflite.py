"""A trained PMKD student as float and full-integer int8 `.tflite`, and running those with LiteRT.

The exported model takes camera pixels, not normalised floats: it is
`pixels (0..255, float) -> per-channel normalisation -> student -> logits`,
with the normalisation of `pmkd_tf.data.normalize` folded into one
multiply-add. Calibrated on raw training images, the int8 input then has
scale 1 and zero point -128, so a board feeds `int8 = pixel - 128` and no
float ever touches the image.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert
from ai_edge_litert.tools import flatbuffer_utils

from pmkd_tf import data
from pmkd_tf.errors import ExportError, NotPMKDModelError
from pmkd_tf.models.filters import STEM_CONV

# Which LiteRT kernels run a model. TFLite Micro runs the reference
# kernels' arithmetic, so "reference" is what a board computes; "default"
# (optimised kernels + XNNPACK) is what a CPU application gets and is not
# bit-exact with it (on the tiny test student about half of the int8 logits
# differ, by up to 4 steps, and ~95% of top-1 predictions agree).
KERNELS = {
    "reference": litert.OpResolverType.BUILTIN_REF,
    "default": litert.OpResolverType.AUTO,
}


def read_student(path: str | Path) -> keras.Model:
    """Load a `.keras` model saved by the training pipeline and check it is a PMKD model."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"--model {path} does not exist; pass the .keras file the training run saved.")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a file that is not a Keras model.
        raise ExportError(f"--model {path} is not a loadable .keras model ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}).") from error
    validate_pmkd(model)
    return model


def validate_pmkd(model: keras.Model) -> None:
    """Raise `NotPMKDModelError` unless `model` looks like a model of the zoo.

    A zoo model takes (H, W, C) images, returns `{"logits", "features"}` and
    has a conv named `stem_conv`; anything else would export, but not as
    the student the rest of the pipeline (normalisation, streaming) assumes.
    """
    output = model.output
    if not isinstance(output, dict) or set(output) != {"logits", "features"}:
        raise NotPMKDModelError(f"{model.name} is not a PMKD model: its output must be a dict with 'logits' "
                                "and 'features' (save the model that pmkd_tf.models.get_model built).")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise NotPMKDModelError(f"{model.name} nests model(s) {', '.join(nested)} (a pacemaker ensemble?); export "
                                "one student, e.g. pmkd_tf.models.pacemaker_member(pacemaker, '1xN').")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise NotPMKDModelError(f"{model.name} is not a PMKD model: it must take one (H, W, C) image input.")
    if not any(layer.name == STEM_CONV for layer in model.layers):
        raise NotPMKDModelError(f"{model.name} is not a PMKD model: it has no '{STEM_CONV}' layer.")


def logits_model(model: keras.Model) -> keras.Model:
    """The same layers with only the logits as output (the feature taps are for distillation, not deployment)."""
    return keras.Model(model.inputs[0], model.output["logits"], name=f"{model.name}_logits")


def _classifier_as_conv(features: keras.KerasTensor, dense: keras.layers.Dense) -> keras.KerasTensor:
    """`dense(features)` computed as a 1x1 convolution with the same weights.

    The int8 FULLY_CONNECTED kernels of LiteRT (one rounding) and TFLite
    Micro (two roundings) differ by one int8 step on some logits; their
    CONV_2D kernels are specified identically, so a 1x1 conv classifier
    makes the exported model bit-exact in both runtimes.
    """
    channels = features.shape[-1]
    conv = keras.layers.Conv2D(dense.units, 1, activation=dense.activation, use_bias=dense.use_bias,
                               name=f"{dense.name}_1x1")
    x = conv(keras.layers.Reshape((1, 1, channels), name=f"{dense.name}_to_map")(features))
    kernel = keras.ops.convert_to_numpy(dense.kernel).reshape(1, 1, channels, dense.units)
    conv.set_weights([kernel, keras.ops.convert_to_numpy(dense.bias)] if dense.use_bias else [kernel])
    return keras.layers.Reshape((dense.units,), name=f"{dense.name}_logits")(x)


def deployable(student: keras.Model, mean, std) -> keras.Model:
    """pixels 0..255 (float) -> `data.normalize` as one per-channel multiply-add -> student -> logits.

    A final Dense on a vector (every zoo model's classifier) runs as a 1x1
    conv; see `_classifier_as_conv`.
    """
    validate_pmkd(student)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    pixels = keras.Input(tuple(student.inputs[0].shape[1:]), name="pixels")
    normalised = keras.layers.Rescaling((1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32),
                                        name="normalize")(pixels)
    logits = student.output["logits"]
    last = next((layer for layer in student.layers if layer.output is logits), None)
    if isinstance(last, keras.layers.Dense) and len(last.input.shape) == 2:
        body = keras.Model(student.inputs[0], last.input, name=f"{student.name}_body")
        outputs = _classifier_as_conv(body(normalised), last)
    else:
        outputs = student(normalised)["logits"]
    return keras.Model(pixels, outputs, name=f"{student.name}_deploy")


def _converter(model: keras.Model, directory: str) -> tf.lite.TFLiteConverter:
    """The TF 2.21 converter on a SavedModel of `model` with a fixed batch of 1 (TFLM needs static shapes)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                         input_signature=[keras.InputSpec(shape=(1, *model.inputs[0].shape[1:]), dtype="float32")])
    archive.write_out(directory, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(directory)


def convert_float(model: keras.Model) -> bytes:
    """A float32 `.tflite` of `model` (the reference the int8 model is compared with on a CPU)."""
    with tempfile.TemporaryDirectory() as directory:
        return bytes(_converter(model, directory).convert())


def convert_int8(model: keras.Model, calibration_pixels: np.ndarray) -> bytes:
    """A full-integer `.tflite`: int8 input and output, TFLITE_BUILTINS_INT8 ops only, names stripped.

    `calibration_pixels` are raw uint8 training images (never test images);
    they set every activation range, so a few hundred suffice.
    """
    if not len(calibration_pixels):
        raise ExportError("No calibration images: pass --calibration_examples > 0 training images.")

    def representative() -> Iterator[list[np.ndarray]]:
        for image in calibration_pixels:
            yield [image[None].astype(np.float32)]

    with tempfile.TemporaryDirectory() as directory:
        converter = _converter(model, directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return strip_names(converter.convert())


def strip_names(tflite_model: bytes) -> bytes:
    """The model without tensor names, description and signatures: a third of a small model's flash.

    Neither TFLite Micro nor LiteRT's interpreter needs them.
    """
    model = flatbuffer_utils.read_model_from_bytearray(tflite_model)
    flatbuffer_utils.strip_strings(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and (scale, zero point) of a model input or output; scale 0 means float."""

    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int


def quantize_pixels(pixels: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Camera pixels as the model's input: round(pixel / scale) + zero point, saturated (floats pass through).

    Rounds half away from zero, as TFLite's quantiser does; with scale 1 and
    zero point -128 this is exactly `pixel - 128`.
    """
    if not spec.scale:
        return np.asarray(pixels, spec.dtype)
    scaled = np.asarray(pixels, np.float64) / spec.scale
    info = np.iinfo(spec.dtype)
    values = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + spec.zero_point
    return np.clip(values, info.min, info.max).astype(spec.dtype)


class LiteRT:
    """One `.tflite` in a LiteRT interpreter on one thread, fed camera pixels image by image."""

    def __init__(self, tflite_model: bytes, kernels: str = "default") -> None:
        if kernels not in KERNELS:
            raise ExportError(f"Unknown kernels {kernels!r}; valid: {', '.join(KERNELS)}.")
        self.interpreter = litert.Interpreter(model_content=tflite_model, num_threads=1,
                                              experimental_op_resolver_type=KERNELS[kernels])
        self.interpreter.allocate_tensors()
        self.input = self._spec(self.interpreter.get_input_details()[0])
        self.output = self._spec(self.interpreter.get_output_details()[0])
        self._input_index = self.interpreter.get_input_details()[0]["index"]
        self._output_index = self.interpreter.get_output_details()[0]["index"]

    @staticmethod
    def _spec(details: dict) -> TensorSpec:
        scale, zero_point = details["quantization"]
        return TensorSpec(tuple(int(d) for d in details["shape"]), np.dtype(details["dtype"]).name,
                          float(scale), int(zero_point))

    def invoke(self, model_input: np.ndarray) -> np.ndarray:
        """Run one input already in the model's dtype (no batch axis); the raw output row."""
        self.interpreter.set_tensor(self._input_index, model_input[None])
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output_index)[0].copy()

    def outputs(self, pixels: np.ndarray, verbose: bool = False) -> np.ndarray:
        """Raw outputs (int8 or float logits) for a batch of uint8 images."""
        inputs = quantize_pixels(pixels, self.input)
        progress = keras.utils.Progbar(len(inputs), unit_name="image") if verbose else None
        rows = []
        for index, model_input in enumerate(inputs):
            rows.append(self.invoke(model_input))
            if progress:
                progress.update(index + 1)
        return np.stack(rows)

    def latency_ms(self, runs: int, warmup: int = 10, example: np.ndarray | None = None) -> float:
        """Median wall time of one inference in milliseconds, over `runs` invokes after `warmup`.

        `example` is one input in the model's dtype (default: zeros).
        """
        if example is None:
            example = np.zeros(self.input.shape[1:], self.input.dtype)
        for _ in range(warmup):
            self.invoke(example)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.invoke(example)
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one inference: every Conv2D and Dense (batch norm folds into the convs)."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            macs += count_macs(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1] // layer.groups
            macs += int(np.prod(layer.output.shape[1:])) * kh * kw * in_channels
        elif isinstance(layer, keras.layers.Dense):
            macs += int(layer.input.shape[-1]) * layer.units
    return macs


def keras_logits(model: keras.Model, pixels: np.ndarray, mean, std, batch_size: int = 256) -> np.ndarray:
    """Float logits of a PMKD model on uint8 images, normalised exactly as in training."""
    outputs = []
    for start in range(0, len(pixels), batch_size):
        batch = data.normalize(pixels[start:start + batch_size], mean, std)
        outputs.append(keras.ops.convert_to_numpy(model(batch, training=False)["logits"]))
    return np.concatenate(outputs)
