"""The runner as a user runs it: a real subprocess, resume after SIGKILL, bad input."""

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import HANG_SECONDS

RUN = [sys.executable, "-m", "pmkd_tf.experiments.run"]
TINY = ["--net=vgg13", "--width_multiplier=0.0625", "--batch_size=64", "--train_examples=320",
        "--test_examples=160", "--seeds=1"]


def _env(data_dir):
    return {**os.environ, "PMKD_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_runner_writes_the_table(data_dir, tmp_path):
    done = subprocess.run([*RUN, *TINY, "--epochs=1", "--methods=teacher,baseline,kd", f"--out_dir={tmp_path}"],
                          env=_env(data_dir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "cifar10" / "vgg13" / "results.md").read_text()
    assert "| Teacher |" in table and "| Baseline |" in table and "| KD |" in table
    assert "| KD |" in done.stdout


def test_attention_transfer_methods_train_at_the_smoke_preset(data_dir, tmp_path):
    """AT and PM + AT: one term file and two method lines, trained end to end; the log has the AT column."""
    done = subprocess.run([*RUN, "--preset=smoke", "--methods=at,pm_at", f"--out_dir={tmp_path}"],
                          env=_env(data_dir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "cifar10" / "resnet18"
    table = json.loads((root / "results.json").read_text())
    assert {run["status"] for run in table["runs"].values()} == {"ok"} and set(table["runs"]) == {"at/seed0",
                                                                                                   "pm_at/seed0"}
    assert "| AT |" in done.stdout and "| PM + AT |" in done.stdout
    assert len(table["runs"]["pm_at/seed0"]["phases"]) == 4  # teacher, pacemaker, phase 2, phase 3
    [pacemaker] = root.glob("pacemaker-at-ensemble-seed0-*")
    with open(pacemaker / "history.csv") as f:
        columns = set(next(csv.reader(f)))
    assert {"at", "ce", "loss"} <= columns and not {"kd", "feature"} & columns  # each of its terms, and only those
    weights = json.loads((pacemaker / "config.json").read_text())["weights"]
    assert (weights["beta"], weights["at_p"], weights["rho"], weights["alpha"]) == (1000.0, 2.0, 0.0, 0.0)


def test_other_settings_need_a_table_of_their_own(data_dir, tmp_path):
    """A changed setting cannot overwrite the main table's rows; under --table it shares finished phases."""
    args = [*RUN, *TINY, "--epochs=1", "--methods=baseline", f"--out_dir={tmp_path}"]
    first = subprocess.run(args, env=_env(data_dir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "cifar10" / "vgg13"
    main_table = (root / "results.json").read_text()
    refused = subprocess.run([*args, "--rho=2"], env=_env(data_dir), capture_output=True, text=True,
                             timeout=HANG_SECONDS)
    assert refused.returncode == 2, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "rho=1.0 (now 2.0)" in last and "--table=<name>" in last
    assert (root / "results.json").read_text() == main_table
    own = subprocess.run([*args, "--rho=2", "--table=rho2"], env=_env(data_dir), capture_output=True, text=True,
                         timeout=HANG_SECONDS)
    assert own.returncode == 0, own.stderr[-3000:]
    assert (root / "results.json").read_text() == main_table
    rho2 = json.loads((root / "rho2.json").read_text())
    # The cross-entropy baseline does not depend on rho: its finished phase is reused, not retrained.
    assert rho2["runs"]["baseline/seed0"] == json.loads(main_table)["runs"]["baseline/seed0"]
    assert (root / "rho2.md").exists() and len(list(root.glob("baseline-*"))) == 1


def _history_epochs(root):
    [history] = list(root.glob("cifar10/vgg13/teacher-*/history.csv"))
    with open(history) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _wait_for_epochs(root, count, timeout=HANG_SECONDS):
    """Poll the running teacher's history until `count` epochs are logged."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(_history_epochs(root)) >= count:
                return
        except ValueError:  # no history.csv yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"no {count} epochs logged within {timeout} s")


# The Experiment the runner's flags resolve to (its recipe's fields beside the others), as JSON on stdout's last line.
_RESOLVED = """
import json, sys
from absl import flags
from pmkd_tf.experiments import cli, experiment_flags, run
cli.parse(sys.argv)
exp = experiment_flags.experiment(flags.FLAGS.epochs)
print(json.dumps({**vars(exp), **vars(exp.recipe), "recipe": None}))
"""


def _resolve(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _RESOLVED, *args], capture_output=True, text=True,
                          timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_mcu_preset_decides_its_recipe_and_explicit_flags_still_win():
    mcu = _resolve("--preset=mcu")
    assert (mcu["net"], mcu["width_multiplier"], mcu["downsampling"]) == ("resnet8", 2.0, "average")
    assert (mcu["lr_schedule"], mcu["weight_decay"], mcu["weight_decay_kind"]) == ("cosine", 5e-4, "coupled")
    assert mcu["train_examples"] is None and mcu["test_examples"] is None  # the full data set
    own = _resolve("--preset=mcu", "--net=resnet18", "--lr_schedule=step", "--weight_decay=1e-4", "--epochs=3")
    assert (own["net"], own["lr_schedule"], own["weight_decay"], own["epochs"]) == ("resnet18", "step", 1e-4, 3)
    assert own["downsampling"] == "average"  # what the command does not say stays the preset's
    cpu = _resolve()  # the default preset decides none of them
    assert (cpu["net"], cpu["downsampling"], cpu["lr_schedule"], cpu["weight_decay"]) == (
        "resnet18", "stride", "step", 1e-5)


# The runner as the CLI resolves it, killed by SIGKILL in the middle of epoch 4 (after epoch 3 is
# committed): a fixed point, so the test does not race the signal against the machine's speed.
_KILLED_MID_EPOCH_4 = """
import os, signal, sys
import keras
from absl import flags
from pmkd_tf.experiments import cli, experiment_flags, run

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 3:
            os.kill(os.getpid(), signal.SIGKILL)

cli.parse(sys.argv)
run.train_table(experiment_flags.experiment(flags.FLAGS.epochs), [0], ["teacher"], experiment_flags.data_dir(),
                flags.FLAGS.out_dir, callbacks=[Kill()])
"""


def test_sigkill_mid_phase_then_rerun_resumes_without_redoing_epochs(data_dir, tmp_path):
    args = [*RUN, *TINY, "--epochs=12", "--methods=teacher", f"--out_dir={tmp_path}"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_EPOCH_4, *args[3:]], env=_env(data_dir),
                            capture_output=True, text=True, timeout=HANG_SECONDS)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    killed_at = len(_history_epochs(tmp_path))
    assert killed_at == 3
    assert 2 <= killed_at < 12, "the kill must land mid-phase"
    done = subprocess.run(args, env=_env(data_dir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _history_epochs(tmp_path) == list(range(12))


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--net=resnet19", "Unknown net 'resnet19'"),
        ("--methods=kd,pmkdd", "Unknown method 'pmkdd'"),
        ("--preset=huge", "--preset=huge: value should be one of <paper|cpu|converged|mcu|smoke>"),
        ("--strategy=tpu", "--strategy=tpu: value should be one of <default|mirrored|multiworker>"),
        ("--epochs=0", "--epochs=0: 0 is not a positive integer"),
        ("--batch_size=-1", "--batch_size=-1"),
        ("--alpha=1.5", "alpha must be in [0, 1]"),
        ("--temperature=0", "temperature must be > 0"),
        ("--rho=-1", "rho must be >= 0"),
        ("--width_multiplier=0", "width_multiplier must be > 0"),
        ("--data_dir=/nonexistent/data", "does not exist"),
        ("--pacemaker_kind=diagonal", "--pacemaker_kind=diagonal: value should be one of <ensemble|column|row>"),
        ("--precision=fp8", "--precision=fp8: value should be one of"),
        ("--table=../elsewhere", "must be a plain file name"),
        ("--downsampling=skip", "--downsampling=skip: value should be one of <stride|average|max>"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(data_dir, tmp_path, flag, message):
    done = subprocess.run([*RUN, *TINY, "--epochs=1", flag, f"--out_dir={tmp_path}"], env=_env(data_dir),
                          capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("*.json"))


def test_second_runner_on_the_same_out_dir_is_refused(data_dir, tmp_path):
    root = tmp_path / "cifar10" / "vgg13"
    root.mkdir(parents=True)
    with open(root / ".lock", "a") as other:  # another live runner holds the lock
        fcntl.flock(other, fcntl.LOCK_EX)
        done = subprocess.run([*RUN, *TINY, "--epochs=1", "--methods=baseline", f"--out_dir={tmp_path}"],
                              env=_env(data_dir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 2 and "in use by another runner" in done.stderr
    # A lock file left by a killed runner holds no flock: the next runner goes ahead.
    done = subprocess.run([*RUN, *TINY, "--epochs=1", "--methods=baseline", f"--out_dir={tmp_path}"],
                          env=_env(data_dir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]


def test_convergence_ladder_stops_at_convergence_and_keeps_one_ladder_per_training_size(data_dir, tmp_path):
    tiny = [flag for flag in TINY if not flag.startswith(("--seeds", "--train_examples"))]
    # Any doubling gains less than 100 points, so each ladder stops after its second rung.
    # A study script, not a module of the package: run by its path, as a user runs it.
    args = [sys.executable, str(Path(__file__).parents[1] / "experiments" / "convergence.py"), *tiny,
            "--epochs_list=1,2,4", "--stop_below=100", "--downsampling=average", f"--out_dir={tmp_path}"]
    done = subprocess.run([*args, "--train_examples=320"], env=_env(data_dir), capture_output=True, text=True,
                          timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Converged: 2 epochs gain" in done.stderr
    root = tmp_path / "cifar10" / "vgg13"
    ladder = json.loads((root / "convergence.json").read_text())["ladders"]["320"]
    assert ladder["command"].startswith("python experiments/convergence.py ")  # the command that reproduces it
    rows = ladder["rows"]
    assert [row["epochs"] for row in rows] == [1, 2]
    assert all(json.loads(path.read_text())["downsampling"] == "average"  # the flag reaches every rung
               for path in (tmp_path / "cifar10" / "vgg13").glob("*/config.json"))
    gain = 100 * (rows[1]["test_accuracy"] - rows[0]["test_accuracy"])
    assert f"| 2 | {100 * rows[1]['test_accuracy']:.2f} | {gain:+.2f} |" in (root / "convergence.md").read_text()
    # A second training-set size is a second ladder of the same table, plotted beside the first.
    done = subprocess.run([*args, "--train_examples=192"], env=_env(data_dir), capture_output=True, text=True,
                          timeout=HANG_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((root / "convergence.json").read_text())
    assert list(table["ladders"]) == ["192", "320"] and table["ladders"]["320"]["rows"] == rows
    assert "## 192 training images" in (root / "convergence.md").read_text()
    assert (root / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    # Each rung is an ordinary phase: a re-run trains nothing and gives the same ladder.
    again = subprocess.run([*args, "--train_examples=320"], env=_env(data_dir), capture_output=True, text=True,
                           timeout=HANG_SECONDS)
    assert again.returncode == 0 and json.loads((root / "convergence.json").read_text())["ladders"] == table["ladders"]
    # Other settings are refused rather than mixed into the table.
    other = subprocess.run([*args, "--train_examples=320", "--learning_rate=0.05"], env=_env(data_dir),
                           capture_output=True, text=True, timeout=HANG_SECONDS)
    assert other.returncode == 2 and "holds ladders of other settings" in other.stderr.strip().splitlines()[-1]
    bad = subprocess.run([*args[:-3], "--epochs_list=4,2", f"--out_dir={tmp_path}"], env=_env(data_dir),
                         capture_output=True, text=True, timeout=HANG_SECONDS)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: flag --epochs_list=")
