"""The keras-tuner search of rho/alpha/tau: a real tiny search, resume, reuse by the runner, distributed mode."""

import fcntl
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import keras_tuner as kt
import pytest
from helpers import HANG_SECONDS
from PIL import Image

from pmkd_tf import pipeline, tuning
from pmkd_tf.errors import UserError
from pmkd_tf.recipe import Recipe

# keras-tuner 1.4.8 still calls threading.currentThread().getName() in every oracle call.
pytestmark = pytest.mark.filterwarnings("ignore:getName\\(\\) is deprecated:DeprecationWarning",
                                      "ignore:currentThread\\(\\) is deprecated:DeprecationWarning")

TUNE = [sys.executable, "-m", "pmkd_tf.experiments.tune"]
RUN = [sys.executable, "-m", "pmkd_tf.experiments.run"]
TINY = {"dataset": "cifar10", "net": "vgg13", "recipe": Recipe(epochs=1, batch_size=64), "width_multiplier": 1 / 16,
        "train_examples": 128, "test_examples": 64, "validation_examples": 64, "downsampling": "average"}
TINY_FLAGS = ["--net=vgg13", "--width_multiplier=0.0625", "--batch_size=64", "--train_examples=128",
              "--test_examples=64", "--validation_examples=64", "--trial_epochs=1", "--tuner=random",
              "--max_trials=2", "--downsampling=average"]


def _env(data_dir, **extra):
    return {**os.environ, "PMKD_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _search(**kw):
    exp = pipeline.Experiment(**{**TINY, **kw.pop("exp", {})})
    return tuning.Search(exp, **{"method": "kd_fitnet", "tuner": "random", "max_trials": 2, **kw})


def _trials(project):
    return {p.name: json.loads((p / "trial.json").read_text()) for p in sorted(project.glob("trial_*"))}


def _phase_dirs(out):
    return sorted(p.name for p in (out / "cifar10" / "vgg13").iterdir() if p.is_dir() and p.name != "tune")


def _history_rows(folder):
    return len((folder / "history.csv").read_text().strip().splitlines()) - 1


@pytest.fixture(scope="module")
def searched(data_dir, tmp_path_factory):
    """A 1-trial kd_fitnet search, then the same search asked for 2 trials: the second call continues it."""
    out = tmp_path_factory.mktemp("tune")
    first = tuning.run_search(_search(max_trials=1), out, data_dir, verbose=0)
    search = _search()
    project = out / "cifar10" / "vgg13" / "tune" / search.project_name()
    assert first == project / "best.json"
    before = {"trial_0": (project / "trial_0" / "trial.json").read_text(), "phases": _phase_dirs(out)}
    best = tuning.run_search(search, out, data_dir, verbose=0)
    return types.SimpleNamespace(out=out, project=project, search=search, best=best, before=before)


def test_two_trial_search_scores_on_validation_and_writes_best_json(searched):
    trials = _trials(searched.project)
    assert sorted(trials) == ["trial_0", "trial_1"]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    best = json.loads(searched.best.read_text())
    assert searched.best == searched.project / "best.json"
    assert 0.01 <= best["hyperparameters"]["rho"] <= 5
    assert best["hyperparameters"]["alpha"] == 0.9 and best["hyperparameters"]["temperature"] == 4.0
    assert best["tuned"] == ["rho"] and best["objective"] == "val_accuracy"
    scores = {t["trial_id"]: t["score"] for t in trials.values()}
    assert best["score"] == max(scores.values()) and scores[best["trial_id"]] == best["score"]
    # The score is the final phase's top-1 on the held-out validation split, not on the test set.
    final = json.loads((searched.out / "cifar10" / "vgg13" / best["phases"]["0"][-1] / "result.json").read_text())
    assert final["val_accuracy"] == best["score"]


def test_second_invocation_continues_the_search_instead_of_restarting(searched, data_dir):
    assert (searched.project / "trial_0" / "trial.json").read_text() == searched.before["trial_0"]
    phases = _phase_dirs(searched.out)
    new = sorted(set(phases) - set(searched.before["phases"]))
    assert len(new) == 1 and new[0].startswith("kd_fitnet-seed0-")  # only trial 1's own phase was trained
    [teacher] = [p for p in phases if p.startswith("teacher-")]
    assert _history_rows(searched.out / "cifar10" / "vgg13" / teacher) == 1  # trained once, shared by both trials
    assert sum(p.startswith("kd_fitnet-") for p in phases) == 2
    again = tuning.run_search(searched.search, searched.out, data_dir, verbose=0)  # finished: nothing new
    assert again == searched.best and sorted(_trials(searched.project)) == ["trial_0", "trial_1"]
    assert _phase_dirs(searched.out) == phases


def test_runner_accepts_best_json_and_reuses_the_best_trials_phases(searched, data_dir):
    """best.json holds the best trial's whole experiment: the runner needs no other setting repeated."""
    best = json.loads(searched.best.read_text())
    assert best["experiment"]["downsampling"] == "average" and best["experiment"]["width_multiplier"] == 1 / 16
    phases = _phase_dirs(searched.out)
    done = subprocess.run([*RUN, f"--hparams_from={searched.best}", "--methods=kd_fitnet",
                           f"--out_dir={searched.out}"], env=_env(data_dir), capture_output=True, text=True,
                          timeout=HANG_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((searched.out / "cifar10" / "vgg13" / "results.json").read_text())
    run = results["runs"]["kd_fitnet/seed0"]
    assert run["phases"] == best["phases"]["0"] and run["val_accuracy"] == best["score"]
    assert _phase_dirs(searched.out) == phases  # nothing trained again


def test_a_search_on_own_images_at_another_size_hands_its_experiment_to_the_runner(cifar, tmp_path):
    """Data settings travel in best.json too: the runner finds the best trial's phases, it trains nothing."""
    for i, (image, label) in enumerate(zip(cifar.train_images[:36], cifar.train_labels[:36])):
        folder = tmp_path / "images" / "parts" / "train" / f"class{label % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    places = [f"--data_dir={tmp_path / 'images'}", f"--out_dir={tmp_path / 'runs'}"]
    # 24 training images, 3 full batches of 8: TF 2.21's oneDNN kernels abort on a last batch of 5 here (BUILD.md).
    tuned = subprocess.run([*TUNE, "--dataset=parts", "--net=resnet18", "--width_multiplier=0.0625", "--batch_size=8",
                            "--image_size=16x24", "--channels=1", "--augment=crop", "--test_fraction=0.25",
                            "--validation_examples=3", "--trial_epochs=1", "--tuner=random", "--max_trials=1",
                            "--method=kd_fitnet", *places], env=_env(""), capture_output=True, text=True,
                           timeout=HANG_SECONDS, check=False)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    root = tmp_path / "runs" / "parts" / "resnet18"
    [best] = root.glob("tune/*/best.json")
    command = f"--hparams_from={best} --methods=kd_fitnet {' '.join(places)}"
    assert command in tuned.stdout  # what the tuner tells the user to run
    phases = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "tune")
    done = subprocess.run([*RUN, *shlex.split(command)], env=_env(""), capture_output=True, text=True,
                          timeout=HANG_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((root / "results.json").read_text())
    settings = {k: table["experiment"][k] for k in ("image_size", "channels", "augment", "test_fraction", "batch_size")}
    assert settings == {"image_size": [16, 24], "channels": 1, "augment": "crop", "test_fraction": 0.25,
                        "batch_size": 8}
    assert table["runs"]["kd_fitnet/seed0"]["phases"] == json.loads(best.read_text())["phases"]["0"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "tune") == phases  # none retrained


def _digests(images):
    return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}


def test_validation_split_is_disjoint_from_test_and_train(data_dir, tmp_path):
    splits = tuning.PipelineTuner(_search(), tmp_path, data_dir).splits()
    val = _digests(splits.val_images)
    assert len(val) == len(splits.val_labels) == TINY["validation_examples"]
    assert not val & _digests(splits.test_images) and not val & _digests(splits.train_images)
    assert len(splits.train_labels) == TINY["train_examples"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_two_workers_on_loopback(data_dir, tmp_path):
    """Three processes as keras-tuner runs them; both workers need the teacher at once and it is trained once."""
    port = str(_free_port())
    args = [*TUNE, *TINY_FLAGS, "--method=kd_fitnet", f"--out_dir={tmp_path}"]
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = _env(data_dir, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=port)
        with open(tmp_path / f"{tuner_id}.out", "w") as out, open(tmp_path / f"{tuner_id}.err", "w") as err:
            procs[tuner_id] = subprocess.Popen(args, env=env, stdout=out, stderr=err)
    try:
        codes = {tuner_id: proc.wait(timeout=HANG_SECONDS) for tuner_id, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    logs = {t: (tmp_path / f"{t}.err").read_text() for t in procs}
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, {t: logs[t][-2000:] for t in procs}
    [project] = [p for p in (tmp_path / "cifar10" / "vgg13" / "tune").iterdir() if p.is_dir()]
    trials = _trials(project)
    assert sorted(trials) == ["trial_0", "trial_1"]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    assert json.loads((project / "best.json").read_text())["score"] == max(t["score"] for t in trials.values())
    assert "Best val_accuracy" in (tmp_path / "chief.out").read_text()
    assert " on tuner0:" in logs["tuner0"] and " on tuner1:" in logs["tuner1"]  # each worker ran a trial
    [teacher] = [p for p in _phase_dirs(tmp_path) if p.startswith("teacher-")]
    assert _history_rows(tmp_path / "cifar10" / "vgg13" / teacher) == 1


def test_phases_a_trial_reruns():
    assert _search(method="pmkd").phases() == (
        ["pacemaker-kd_feature-ensemble-seed0", "pmkd-seed0-phase2", "pmkd-seed0"], ["teacher-seed0"])
    assert _search().phases() == (["kd_fitnet-seed0"], ["teacher-seed0"])
    assert _search(method="pm_kd", tuned=("temperature",)).phases()[1] == ["teacher-seed0"]
    fig2 = _search(method="pmkd", exp={"phase3_init": "pacemaker_row"})
    assert fig2.phases() == (["pacemaker-kd_feature-ensemble-seed0", "pmkd-seed0"], ["teacher-seed0"])


def test_the_committed_search_is_still_found():
    """A setting added since (`downsampling`, at its old behaviour) leaves the committed project's name as it was."""
    [project] = (Path(__file__).parents[1] / "experiments/results/cifar10/resnet18/tune").glob("pmkd-bayesian-*")
    stored = json.loads((project / "search.json").read_text())
    settings = {name: value for name, value in stored["experiment"].items() if value is not None}
    exp = pipeline.Experiment.from_flat(settings)
    search = tuning.Search(exp, method=stored["method"], tuned=tuple(stored["tune"]), tuner=stored["tuner"],
                           ranges={n: tuning.Range(**r) for n, r in stored["ranges"].items()},
                           seeds=stored["seeds"], search_seed=stored["search_seed"])
    assert search.project_name() == project.name


def test_search_space_and_oracles():
    hp = _search(tuned=("rho", "temperature")).hyperparameters()
    space = {p.name: p for p in hp.space}
    assert (space["rho"].min_value, space["rho"].max_value, space["rho"].sampling) == (0.01, 5.0, "log")
    assert space["temperature"].sampling == "log"
    assert isinstance(space["alpha"], kt.engine.hyperparameters.Fixed) and space["alpha"].value == 0.9
    band = _search(tuner="hyperband", max_trials=7, exp={"recipe": Recipe(epochs=9, batch_size=64)}).oracle()
    assert isinstance(band, kt.oracles.HyperbandOracle) and band.max_epochs == 9 and band.max_trials == 7
    assert isinstance(_search().oracle(), kt.oracles.RandomSearchOracle)
    values = {"rho": 0.3, "alpha": 0.9, "temperature": 4.0, "tuner/epochs": 3}
    trial = _search().experiment(values, values["tuner/epochs"])
    assert (trial.hyperparameters["rho"], trial.recipe.epochs, trial.validation_examples) == (0.3, 3, 64)


def test_a_diverged_trial_scores_zero_and_no_best_is_claimed(data_dir, tmp_path):
    search = _search(max_trials=1, ranges={"rho": tuning.Range(1e34, 1e35, log=True)})
    with pytest.raises(UserError, match="finished without diverging; lower --learning_rate"):
        tuning.run_search(search, tmp_path, data_dir, verbose=0)
    [trial] = _trials(tuning.project_path(search, tmp_path)).values()
    assert trial["status"] == "COMPLETED" and trial["score"] == 0.0
    assert trial["metrics"]["metrics"]["diverged"]["observations"][0]["value"] == [1.0]


def test_hyperband_trains_each_trial_at_its_budget(data_dir, tmp_path):
    search = _search(tuner="hyperband", max_trials=3, hyperband_factor=2, exp={"recipe": Recipe(2, batch_size=64)})
    tuning.run_search(search, tmp_path, data_dir, verbose=0)
    root = tmp_path / "cifar10" / "vgg13"
    trials = _trials(tuning.project_path(search, tmp_path)).values()
    budgets = {t["hyperparameters"]["values"]["tuner/epochs"] for t in trials}
    assert budgets and budgets <= {1, 2}
    students = [p for p in root.iterdir() if p.name.startswith("kd_fitnet-")]
    assert {_history_rows(p) for p in students} == budgets  # every phase of a trial trains its budget


def test_a_grid_search_trains_each_grid_point_once_then_stops(data_dir, tmp_path):
    search = _search(tuner="grid", grid_points=2, max_trials=5, ranges={"rho": tuning.Range(0.1, 10.0, log=True)})
    assert search.grid("rho") == [0.1, 10.0] and isinstance(search.oracle(), kt.oracles.GridSearchOracle)
    best = json.loads(tuning.run_search(search, tmp_path, data_dir, verbose=0).read_text())
    trials = _trials(tuning.project_path(search, tmp_path)).values()
    assert sorted(t["hyperparameters"]["values"]["rho"] for t in trials) == [0.1, 10.0]  # not max_trials' 5
    assert best["hyperparameters"]["rho"] in (0.1, 10.0)
    assert "grid_points" not in _search().fingerprint()  # searches of the other tuners keep their names


def test_a_five_point_log_grid_holds_the_paper_rho_exactly():
    """Rounded grid points: rho 1 is 1.0, so a phase trained with the paper's rho is found again."""
    search = _search(tuner="grid", grid_points=5, ranges={"rho": tuning.Range(0.1, 10.0, log=True)})
    grid = [0.1, 0.316228, 1.0, 3.16228, 10.0]
    assert search.grid("rho") == grid
    assert [p.values for p in search.hyperparameters().space if p.name == "rho"] == [grid]


def test_a_second_search_of_the_same_project_is_refused(data_dir, tmp_path):
    project = tuning.project_path(_search(), tmp_path)
    project.parent.mkdir(parents=True)
    with open(project.parent / f".{project.name}.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="being searched by another process"):
            tuning.run_search(_search(), tmp_path, data_dir)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"tuner": "exhaustive"}, "Unknown tuner 'exhaustive'"),
        ({"tuner": "grid", "grid_points": 1}, "--grid_points must be >= 2"),
        ({"method": "kd"}, "rho has no effect on kd"),
        ({"method": "baseline"}, "no loss weight to tune"),
        ({"method": "pmkdd"}, "Unknown method 'pmkdd'"),
        ({"tuned": ("gamma",)}, "Cannot tune 'gamma'"),
        ({"tuned": ("rho", "rho")}, "at most once"),
        ({"ranges": {"rho": tuning.Range(0.0, 5.0, log=True)}}, "low end must be > 0"),
        ({"ranges": {"rho": tuning.Range(2.0, 1.0, log=True)}}, "low < high"),
        ({"tuned": ("alpha",), "ranges": {"alpha": tuning.Range(0.5, 1.5)}}, "alpha must be in [0, 1]"),
        ({"exp": {"validation_examples": 0}}, "set --validation_examples > 0"),
        ({"tuner": "hyperband"}, "hyperband needs 2 <= --hyperband_factor <= --trial_epochs"),
        ({"max_trials": 0}, "--max_trials must be > 0"),
    ],
)
def test_bad_search_settings_are_user_errors(kw, message):
    with pytest.raises(UserError) as raised:
        _search(**kw)
    assert message in str(raised.value)


def test_distributed_env_must_be_complete(monkeypatch):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    with pytest.raises(UserError, match="KERASTUNER_ORACLE_PORT"):
        tuning.distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "eight")
    with pytest.raises(UserError, match="must be a port number"):
        tuning.distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert tuning.distributed_role() == "worker"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert tuning.distributed_role() == "chief"


def test_a_named_project_refuses_other_settings(tmp_path):
    tuning.PipelineTuner(_search(), tmp_path, project_name="mine").save()
    longer = _search(exp={"recipe": Recipe(epochs=2, batch_size=64)})
    assert longer.project_name() != _search().project_name()  # default names never collide
    with pytest.raises(UserError, match="other settings"):
        tuning.PipelineTuner(longer, tmp_path, project_name="mine")
    tuning.PipelineTuner(_search(max_trials=5), tmp_path, project_name="mine")  # more trials: same search


def test_a_phase_another_process_is_training_is_waited_for_then_reused(cifar, tmp_path):
    exp = pipeline.Experiment(**TINY)
    trainer = pipeline.Trainer(exp, cifar, tmp_path)
    phase = pipeline.final_phase(exp, "teacher", 0)
    folder = trainer.folder(phase)
    folder.mkdir(parents=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        waiter = threading.Thread(target=trainer.train_phase, args=(phase,))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()  # blocked while the other process trains
        (folder / "result.json").write_text(json.dumps({"status": "ok", "folder": folder.name}))
    waiter.join(timeout=HANG_SECONDS)
    assert not waiter.is_alive() and not (folder / "config.json").exists()  # reused, not trained again


@pytest.mark.parametrize(
    "flag, message",
    [("--tuner=exhaustive", "--tuner=exhaustive: value should be one of <bayesian|random|hyperband|grid>"),
     ("--method=kd", "rho has no effect on kd")],
)
def test_cli_bad_input_is_one_clear_line_and_exit_2(data_dir, tmp_path, flag, message):
    done = subprocess.run([*TUNE, *TINY_FLAGS, flag, f"--out_dir={tmp_path}"], env=_env(data_dir),
                          capture_output=True, text=True, timeout=HANG_SECONDS, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in done.stderr and not list(tmp_path.rglob("*.json"))
