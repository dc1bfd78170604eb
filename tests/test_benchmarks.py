"""Each benchmark script, run as a user runs it on tiny settings, writes sane results.

These check the scripts, not the speed: tiny, contended timings are noise,
so only structure, consistency and the one exact number (the loss check
between our Distiller and keras.distillation's) are asserted.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import tensorflow as tf

from helpers import HANG_SECONDS, require
from pmkd_tf import models
from pmkd_tf.export import exporter
from pmkd_tf.export.cstream import cortex_m4, host

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, data_dir: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PMKD_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_SECONDS)


def _outputs(module: str, data_dir: str, tmp_path: Path, *flags: str) -> tuple[dict, str]:
    out = tmp_path / "results" / module
    done = _run(module, data_dir, "--tiny", f"--out={out}", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    markdown = out.with_suffix(".md").read_text()
    assert result["benchmark"] == module
    assert result["command"].startswith(f"python -m benchmarks.{module} --tiny")
    machine = result["machine"]
    assert machine["cpu_model"] and machine["logical_cores"] >= 1 and machine["usable_cores"] >= 1
    assert machine["tensorflow"] == tf.__version__ and machine["keras"] == keras.__version__
    assert 0 < result["wall_seconds"] < 3600
    assert result["settings"]["tiny"] is True
    assert result["command"] in markdown and machine["cpu_model"] in markdown
    assert "not results" in markdown
    return result, markdown


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_train_speed(data_dir, tmp_path):
    rows = ["baseline", "kd_fitnet", "keras_kd_fitnet", "teacher_inference"]
    result, markdown = _outputs("train_speed", data_dir, tmp_path, "--variants=fp32", f"--rows={','.join(rows)}")
    batch = result["settings"]["batch_size"]
    fp32 = result["variants"]["fp32"]
    assert list(fp32["rows"]) == rows
    for r in fp32["rows"].values():
        assert len(r["step_ms_per_round"]) == result["settings"]["rounds"]
        assert _positive(r["step_ms"]) and r["images_per_s"] == pytest.approx(1000 * batch / r["step_ms"])
        assert _positive(r["vs_baseline"]["median"])
    assert fp32["rows"]["baseline"]["vs_baseline"]["median"] == pytest.approx(1.0)
    target = fp32["targets"]["kd_fitnet"]
    assert target["parts"] == ["baseline", "teacher_inference"] and _positive(target["ratio"]["median"])
    assert target["ok"] == (target["ratio"]["median"] <= 1.15)
    assert set(fp32["targets"]) == {"kd_fitnet"}  # the others' rows or parts were not timed
    assert _positive(fp32["ours_over_keras"]["median"])
    check = result["checks"]["fp32"]["keras_kd_fitnet_loss"]
    assert _positive(check["ours"]) and check["relative_difference"] < 1e-4  # both compute the same loss
    assert result["speedup_over_fp32"]["kd_fitnet"] == {"fp32": pytest.approx(1.0)}
    assert not any(result["effective_jit_compile"].values())
    assert "| kd_fitnet | baseline + teacher_inference |" in markdown
    assert "Our KD+FitNet step / keras.distillation's" in markdown


def test_input_pipeline(data_dir, tmp_path):
    result, markdown = _outputs("input_pipeline", data_dir, tmp_path)
    assert _positive(result["pipeline_images_per_s"])
    baseline = result["rows"]["baseline"]
    assert _positive(baseline["cached_images_per_s"]) and _positive(baseline["live_images_per_s"])
    headroom = baseline["pipeline_over_training"]["median"]
    assert _positive(headroom) and baseline["ok"] == (headroom >= 10)
    assert set(result["step_ms_per_round"]) == {"pipeline", "baseline/cached", "baseline/live"}
    assert "Pipeline alone:" in markdown and "| baseline |" in markdown


def test_scaling(data_dir, tmp_path):
    result, markdown = _outputs("scaling", data_dir, tmp_path)
    widths = result["width_sweep"]["baseline"]
    assert list(widths["cells"]) == ["0.03125", "0.0625"] and len(widths["exponents"]) == 1
    assert math.isfinite(widths["exponents"][0]["k"]) and "extrapolated_width1" in widths
    batches = result["batch_sweep"]["baseline"]
    assert list(batches["cells"]) == ["8", "16"] and batches["line"] is not None
    for batch, cell in batches["cells"].items():
        assert _positive(cell["step_ms"])
        assert cell["full_epoch_s"] == pytest.approx(cell["step_ms"] / 1000 * math.ceil(50_000 / int(batch)))
        assert cell["paper_phase_h"] == pytest.approx(cell["full_epoch_s"] * 200 / 3600)
    # The width sweep's batch-16 cell at width 1/16 is the batch sweep's: timed once, reported twice.
    assert widths["cells"]["0.0625"]["step_ms"] == batches["cells"]["16"]["step_ms"]
    assert "## Width sweep" in markdown and "## Batch sweep" in markdown


@pytest.mark.parametrize("module, flag, message", [
    ("train_speed", "--variants=fp32,fp16", "--variants: 'fp16' is not one of fp32, bf16"),
    ("input_pipeline", "--batch_size=0", "--batch_size=0: 0 is not a positive integer"),
    ("scaling", "--widths=1/8,1/0", "--widths: '1/0' is not a positive number"),
    ("inference", "--models=kd=missing.keras", "No teacher model"),
    ("streaming_memory", "--nets=vgg13,alexnet", "Unknown net 'alexnet'"),
])
def test_bad_flag_is_one_clear_line_and_exit_2(data_dir, tmp_path, module, flag, message):
    done = _run(module, data_dir, "--tiny", flag, f"--out={tmp_path / 'x'}")
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in done.stderr and not (tmp_path / "x.json").exists()


def test_streaming_memory(data_dir, tmp_path):
    result, markdown = _outputs("streaming_memory", data_dir, tmp_path)
    (cell,) = result["cells"]
    student, teacher = cell["student"], cell["teacher"]
    assert (cell["net"], cell["width"]) == ("vgg13", "1/16")
    assert student["on_the_fly"] and not teacher["on_the_fly"]
    for model in (student, teacher):
        assert model["bit_exact_images"] == model["images"] == 1 and model["line_buffer_rows"] == 3
    # Rows instead of frames: the student holds under an eighth of the full frame, and less than the teacher.
    assert student["peak_bytes"] * 8 < student["frame_peak_bytes"] < student["tflm_arena_bytes"]
    assert student["peak_bytes"] < teacher["peak_bytes"]
    assert f"| vgg13 | 1/16 | {student['peak_bytes']:,} | {teacher['peak_bytes']:,} |" in markdown


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny untrained NxN teacher and 1xN student, saved as the training pipeline saves them."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, shape in (("teacher", "NxN"), ("kd", "1xN")):
        keras.utils.set_random_seed(0)
        model = models.build(models.NetConfig("vgg13", shape, 10, width_multiplier=1 / 16))
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])
    return paths


def test_inference(data_dir, tmp_path, saved_models):
    pairs = ",".join(f"{name}={path}" for name, path in saved_models.items())
    result, markdown = _outputs("inference", data_dir, tmp_path, f"--models={pairs}")
    teacher, student = result["models"]["teacher"], result["models"]["kd"]
    assert teacher["macs_over_teacher"] == 1.0 and teacher["latency_over_teacher"]["median"] == pytest.approx(1.0)
    # Past the NxN stem every 1xN conv has a third of the teacher's multiply-accumulates.
    assert 1 / 3 < student["macs_over_teacher"] < 1
    assert _positive(student["int8_latency_ms"]["median"]) and _positive(student["latency_over_teacher"]["median"])
    assert student["on_the_fly"] and not teacher["on_the_fly"]
    # Row streaming holds less than the full frame, and the 1xN student less than the line-buffered teacher.
    assert student["streaming_peak_bytes"] < student["frame_peak_bytes"]
    assert student["streaming_peak_bytes"] < teacher["streaming_peak_bytes"]
    assert student["micro_bit_exact"] and student["streaming_bit_exact"] == "1/1"
    assert "| kd |" in markdown and "| teacher |" in markdown
    # A rerun reuses both exports instead of converting again.
    out = tmp_path / "results" / "inference"
    again = _run("inference", data_dir, "--tiny", f"--out={out}", f"--models={pairs}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("Reusing the export") == 2


def test_mcu_table_takes_every_models_board_figures_from_its_own_export(data_dir, tmp_path):
    """A tiny trained table (teacher and baseline) becomes two rows whose figures are the exports' report.json's."""
    require(cortex_m4.tools_missing() + host.tools_missing(), "the MCU table's C engine checks")
    runs = tmp_path / "runs"
    env = {**os.environ, "PMKD_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    trained = subprocess.run([sys.executable, "-m", "pmkd_tf.experiments.run", "--preset=smoke", "--net=resnet8",
                              "--methods=teacher,baseline", "--downsampling=average", "--table=mcu",
                              f"--out_dir={runs}"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=HANG_SECONDS)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result, markdown = _outputs("mcu", data_dir, tmp_path, f"--results={runs}", "--tables=resnet8/mcu",
                                f"--exports={tmp_path / 'exports'}")
    table = json.loads((runs / "cifar10" / "resnet8" / "mcu.json").read_text())["runs"]
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"teacher", "baseline"}
    assert (rows["teacher"]["filter_shape"], rows["baseline"]["filter_shape"]) == ("NxN", "1xN")
    assert (rows["teacher"]["downsampling"], rows["baseline"]["downsampling"]) == (None, "average")
    for method, r in rows.items():
        run = table[f"{method}/seed0"]
        report = json.loads((tmp_path / "exports" / "resnet8" / run["folder"] / "report.json").read_text())
        assert {k: r[k] for k in exporter.board_figures(report)} == exporter.board_figures(report)
        assert r["test_images"] == 64 and r["bit_exact"] == "host 16/16, Cortex-M4 2/2"
        assert r["cpu_hours"] == round(run["total_wall_seconds"] / 3600, 3) and r["width_multiplier"] == 1 / 16
        assert r["cpus"] == run["cpus"] == [result["machine"]["cpu_model"]]  # every phase names the CPU it ran on
    # Rows by RAM: the 1xN student holds rows, the NxN teacher 3-row windows, so the student comes first, and the
    # smallest model is always on the frontier.
    assert [r["method"] for r in result["rows"]] == ["baseline", "teacher"] and rows["baseline"]["pareto"]
    assert "| ★ resnet8 1xN average x0.0625 baseline |" in markdown
    assert (tmp_path / "results" / "mcu.png").stat().st_size > 10_000
    # A rerun reuses the export of a training it has seen; a phase trained again in its folder (a new result.json)
    # is exported again, alone.
    teacher_result = runs / "cifar10" / "resnet8" / table["teacher/seed0"]["folder"] / "result.json"
    teacher_result.write_text(json.dumps({**json.loads(teacher_result.read_text()), "wall_seconds": 1.0}))
    again = _run("mcu", data_dir, "--tiny", f"--out={tmp_path / 'again'}", f"--results={runs}",
                 "--tables=resnet8/mcu", f"--exports={tmp_path / 'exports'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Reusing the export of {table['baseline/seed0']['folder']}" in again.stdout
    assert again.stdout.count("Reusing the export of") == 1 and again.stdout.count("-m pmkd_tf.export") == 1
    assert f"--model={teacher_result.parent / 'model.keras'}" in again.stdout
