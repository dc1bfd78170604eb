"""Interruption and numerical faults, as a user meets them from the command line."""

import json
import signal
import subprocess

import keras
import numpy as np
import pytest
from helpers import HANG_SECONDS
from test_cli import RUN, TINY, _env, _history_epochs, _wait_for_epochs

from pmkd_tf import pipeline
from pmkd_tf.experiments import run
from pmkd_tf.recipe import Recipe


def test_nan_run_is_recorded_as_failed_and_the_runner_goes_on(data_dir, tmp_path):
    done = subprocess.run([*RUN, *TINY, "--epochs=1", "--rho=1e35", "--methods=fitnet,baseline",
                           f"--out_dir={tmp_path}"], env=_env(data_dir), capture_output=True, text=True,
                          timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "cifar10" / "vgg13"
    runs = json.loads((root / "results.json").read_text())["runs"]
    assert runs["fitnet/seed0"]["status"] == "failed"
    assert "fitnet-seed0: loss became NaN/inf in epoch 1" in runs["fitnet/seed0"]["error"]
    assert runs["baseline/seed0"]["status"] == "ok"
    table = (root / "results.md").read_text()
    assert "| FitNet | failed |" in table and "| Baseline | " in table


class _CtrlCAfter(keras.callbacks.Callback):
    """Presses Ctrl-C (raises KeyboardInterrupt) at the end of a given epoch, as a user would mid-phase."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_ctrl_c_mid_phase_keeps_finished_epochs_and_the_rerun_resumes(data_dir, tmp_path):
    exp = pipeline.Experiment(dataset="cifar10", net="vgg13", recipe=Recipe(epochs=6, batch_size=64),
                              width_multiplier=1 / 16, train_examples=128, test_examples=64)
    with pytest.raises(KeyboardInterrupt):
        run.train_table(exp, [0], ["teacher"], data_dir, str(tmp_path), callbacks=[_CtrlCAfter(3)])
    assert _history_epochs(tmp_path) == [0, 1, 2]
    [state] = tmp_path.glob("cifar10/vgg13/teacher-*/checkpoint/state.json")
    before = json.loads(state.read_text())
    assert before["epoch"] == 3 and before["seconds"] > 0
    assert sorted(f.name for f in state.parent.iterdir()) == sorted(["state.json", before["weights"]])  # the last
    cpu = pipeline.cpu_model()
    assert before["cpu_seconds"] == {cpu: before["seconds"]}
    # The next sitting resumes a checkpoint written before CPUs were recorded (as older versions wrote it).
    state.write_text(json.dumps({key: before[key] for key in ("epoch", "weights", "seconds")}))
    run.train_table(exp, [0], ["teacher"], data_dir, str(tmp_path))
    assert _history_epochs(tmp_path) == list(range(6))  # resumed after epoch 3: nothing redone, nothing lost
    [result] = tmp_path.glob("cifar10/vgg13/teacher-*/result.json")
    result = json.loads(result.read_text())
    assert result["wall_seconds"] > before["seconds"]  # both sittings are counted
    assert result["cpu"] == cpu and set(result["cpu_seconds"]) == {"unrecorded", cpu}
    assert result["cpu_seconds"]["unrecorded"] == round(before["seconds"], 1)
    # The resumed phase saw the batches an uninterrupted one sees, so it ends with the very same weights.
    run.train_table(exp, [0], ["teacher"], data_dir, str(tmp_path / "uninterrupted"))
    [resumed, uninterrupted] = (keras.saving.load_model(next(root.glob("cifar10/vgg13/teacher-*/model.keras")))
                                for root in (tmp_path, tmp_path / "uninterrupted"))
    for a, b in zip(resumed.weights, uninterrupted.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_ctrl_c_on_the_command_line_exits_130_and_says_how_to_resume(data_dir, tmp_path):
    # Far more epochs than can finish before the signal lands, wherever it lands.
    args = [*RUN, *TINY, "--epochs=100000", "--methods=teacher", f"--out_dir={tmp_path}"]
    # A shell starts background jobs with SIGINT ignored, and the ignoring is inherited: the runner would never
    # see the Ctrl-C. Give it the terminal's default, as a user's foreground command has.
    proc = subprocess.Popen(args, env=_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_epochs(tmp_path, 1)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=HANG_SECONDS)[1]
    assert proc.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stderr and "re-run the same command to resume" in stderr and "Traceback" not in stderr
