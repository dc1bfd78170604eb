"""Embedded deployment of PMKD students: int8 TFLite, TensorFlow Lite Micro, C arrays, row streaming.

Modules (import the one you need; the package itself imports nothing):

* `tflite`: the deployable model (pixels -> normalisation -> student),
  float and int8 conversion, LiteRT runs, MACs;
* `micro`: TFLite Micro runs, the op list and resolver lines, arena size;
* `carray`: `model_data.cc/.h` and `model_ops.h` for a board project;
* `streaming`: the row-streaming executor (float and int8 `.tflite`, in Python);
* `tflite_arithmetic`: TFLite's integer arithmetic, shared by `streaming` and `cstream`;
* `flatbuffer`: reading a `.tflite` (op names, dtypes, quantisation, constants);
* `cstream`: the row-streaming C engine, generated per model, checked on the host and a Cortex-M4;
* `exporter`: all of the above for one student, with `report.json`;

CLI: `python -m pmkd_tf.export --model=<phase folder>/model.keras --out_dir=...`.
"""
