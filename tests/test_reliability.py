"""Interruption and numerical faults, as a user meets them from the command line."""

import json
import signal
import subprocess

from test_cli import RUN, TINY, _env, _history_epochs, _wait_for_epochs


def test_nan_run_is_recorded_as_failed_and_the_runner_goes_on(data_dir, tmp_path):
    done = subprocess.run([*RUN, *TINY, "--epochs=1", "--rho=1e35", "--methods=fitnet,baseline",
                           f"--out_dir={tmp_path}"], env=_env(data_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "cifar10" / "vgg13"
    runs = json.loads((root / "results.json").read_text())["runs"]
    assert runs["fitnet/seed0"]["status"] == "failed"
    assert "fitnet-seed0: loss became NaN/inf in epoch 1" in runs["fitnet/seed0"]["error"]
    assert runs["baseline/seed0"]["status"] == "ok"
    table = (root / "results.md").read_text()
    assert "| FitNet | failed |" in table and "| Baseline | " in table


def test_ctrl_c_saves_and_exits_cleanly_then_resumes(data_dir, tmp_path):
    args = [*RUN, *TINY, "--epochs=12", "--methods=teacher", f"--out_dir={tmp_path}"]
    proc = subprocess.Popen(args, env=_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(tmp_path, 2)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert 2 <= len(_history_epochs(tmp_path)) < 12
    done = subprocess.run(args, env=_env(data_dir), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _history_epochs(tmp_path) == list(range(12))
