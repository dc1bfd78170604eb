"""The on-the-fly runtime in C: a generated, dependency-free int8 engine that runs an exported model row by row.

`codegen` writes `<out_dir>/c/` from `model_int8.tflite` (`graph` reads the
model into row-streaming nodes with TFLite's integer parameters, `layout`
schedules the rows and lays out their memory; the fixed engine is in
`engine/`); `host` compiles and runs it with the system compiler;
`cortex_m4` cross-compiles it and runs and measures it on an emulated
Cortex-M4 (QEMU `mps2-an386`), both through `toolchain`, which compares
every logit with LiteRT's; `export` is the part of `python -m
pmkd_tf.export` that runs all of these.
"""
