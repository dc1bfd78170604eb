"""Every method end to end on real images; artefact reuse; the table."""

import io
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.stats

from pmkd_tf import methods, models, pipeline, plots, results as tables, terms
from pmkd_tf.recipe import Recipe

TINY = 1 / 16


def _exp(**kw):
    hyperparameters = {"rho": 0.5, **{name: kw.pop(name) for name in list(kw) if name in terms.HYPERPARAMETERS}}
    base = dict(dataset="cifar10", net="vgg13", recipe=Recipe(epochs=1, batch_size=64), width_multiplier=TINY,
                hyperparameters=hyperparameters, train_examples=320, test_examples=160)
    base.update(kw)
    return pipeline.Experiment(**base)


@pytest.fixture(scope="module")
def trained(cifar, tmp_path_factory):
    """Every method for seed 0, trained once for the module."""
    out = tmp_path_factory.mktemp("runs")
    trainer = pipeline.Trainer(_exp(), cifar, out, verbose=0)
    results = {m: trainer.train_method(m, 0) for m in methods.METHODS}
    return trainer, results


def test_every_method_runs_and_reports(trained):
    trainer, results = trained
    for method, result in results.items():
        assert result["status"] == "ok", method
        assert 0.0 <= result["test_accuracy"] <= 1.0
        folder = trainer.root / result["folder"]
        assert (folder / "model.keras").exists() and (folder / "config.json").exists()
        assert len((folder / "history.csv").read_text().strip().splitlines()) == 1 + result["epochs"]
        assert any((folder / "logs").iterdir())
    assert results["pmkd"]["total_epochs"] == 4  # teacher, pacemaker, phase 2, phase 3
    assert results["kd_fitnet_long"]["epochs"] == 2 and results["baseline_long"]["epochs"] == 2


def test_teacher_and_pacemakers_are_trained_once_and_shared(trained):
    trainer, results = trained
    folders = [p.name for p in trainer.root.iterdir() if p.is_dir()]
    assert sum(f.startswith("teacher-") for f in folders) == 1
    assert sorted(f.split("-")[1] for f in folders if f.startswith("pacemaker-")) == ["at", "feature", "kd",
                                                                                     "kd_feature"]
    assert results["pmkd"]["phases"][0] == results["kd"]["phases"][0]  # the same teacher folder
    stamp = {f: (trainer.root / f / "result.json").stat().st_mtime for f in results["pmkd"]["phases"]}
    again = trainer.train_method("pmkd", 0)
    assert again["test_accuracy"] == results["pmkd"]["test_accuracy"]
    assert stamp == {f: (trainer.root / f / "result.json").stat().st_mtime for f in again["phases"]}


def test_phase_models_have_the_right_shapes(trained):
    trainer, results = trained
    student = keras.saving.load_model(trainer.root / results["pmkd"]["folder"] / "model.keras")
    assert models.on_the_fly_report(student).on_the_fly
    pacemaker = keras.saving.load_model(trainer.root / results["pmkd"]["phases"][1] / "model.keras")
    assert {layer.name for layer in pacemaker.layers if isinstance(layer, keras.Model)} == {"vgg13_1xN", "vgg13_Nx1"}
    teacher = keras.saving.load_model(trainer.root / results["teacher"]["folder"] / "model.keras")
    assert not models.on_the_fly_report(teacher).on_the_fly


def test_changed_config_never_reuses_a_stale_artefact(trained):
    trainer, _ = trained
    data = trainer.splits.identity
    stale = pipeline.final_phase(trainer.exp, "pmkd", 0)
    fresh = pipeline.final_phase(_exp(rho=0.25), "pmkd", 0)
    assert fresh.folder(_exp(rho=0.25), data) != stale.folder(trainer.exp, data)
    assert fresh.taught_by.folder(_exp(rho=0.25), data) == stale.taught_by.folder(trainer.exp, data)  # CE teacher
    assert pipeline.final_phase(_exp(rho=0.25), "baseline", 0).folder(_exp(rho=0.25), data) == \
        pipeline.final_phase(trainer.exp, "baseline", 0).folder(trainer.exp, data)
    # A result measured on another test subset, or on other data, is never reused.
    assert stale.folder(_exp(test_examples=80), data) != stale.folder(trainer.exp, data)
    assert stale.folder(trainer.exp, {**data, "image_size": [24, 24]}) != stale.folder(trainer.exp, data)


def test_downsampling_enters_identities_only_where_it_changes_a_model(trained):
    """`stride` keeps every committed phase and table findable; one teacher serves every down-sampling."""
    trainer, _ = trained
    data = trainer.splits.identity
    stride, average = trainer.exp, _exp(downsampling="average")
    for method in ("teacher", "baseline", "pmkd"):
        before = [p.config(stride, data) for p in pipeline.needed_phases(pipeline.final_phase(stride, method, 0))]
        assert "downsampling" not in json.dumps(before)  # exactly the config (and hash) made before the setting
        after = [p.config(average, data) for p in pipeline.needed_phases(pipeline.final_phase(average, method, 0))]
        for old, new in zip(before, after):
            assert (new == old) == (old["role"] == "teacher"), old["phase"]
            assert new.get("downsampling") == (None if old["role"] == "teacher" else "average")
    assert "downsampling" not in stride.flat() and average.flat()["downsampling"] == "average"


def test_settings_added_later_enter_identities_only_away_from_their_old_value(cifar):
    """bn_momentum 0.99, the step schedule and no label smoothing are what every committed phase trained with."""
    old = [p.config(_exp(), {}) for p in pipeline.needed_phases(pipeline.final_phase(_exp(), "pmkd", 0))]
    assert not any(f'"{name}"' in json.dumps(old) for name in ("bn_momentum", "label_smoothing", "lr_schedule"))
    changes = [_exp(bn_momentum=0.9), _exp(label_smoothing=0.1), _exp(recipe=Recipe(1, 64, lr_schedule="cosine"))]
    for exp in changes:
        new = [p.config(exp, {}) for p in pipeline.needed_phases(pipeline.final_phase(exp, "pmkd", 0))]
        assert all(a != b for a, b in zip(old, new)) and len(exp.flat()) == len(_exp().flat()) + 1
    model = pipeline.Trainer(changes[0], cifar, "unused").build_model(pipeline.final_phase(changes[0], "kd", 0))
    assert {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


def test_a_wider_teacher_changes_the_teacher_and_what_learns_from_it_only():
    """--teacher_width_multiplier equal to --width_multiplier (or absent) is today's experiment, phases and all."""
    same, wide = _exp(teacher_width_multiplier=TINY), _exp(teacher_width_multiplier=4 * TINY)
    assert same == _exp() and "teacher_width_multiplier" not in same.flat()
    assert wide.flat()["teacher_width_multiplier"] == 4 * TINY
    assert wide.net_config("teacher", 10, (32, 32, 3)).width_multiplier == 4 * TINY
    assert wide.net_config("pacemaker", 10, (32, 32, 3)).width_multiplier == TINY
    for method, changed in (("teacher", True), ("baseline", False), ("kd", True), ("pmkd", True)):
        folders = [pipeline.final_phase(e, method, 0).folder(e, {}) for e in (same, wide)]
        assert (folders[0] != folders[1]) == changed, method


def test_pmkd_from_a_wider_teacher_trains_every_phase_and_saves_students_without_regressors(cifar, tmp_path):
    """The pacemaker and the phase-3 student reach the wider teacher's taps through regressors; phase 2 (from the
    pacemaker, same widths) needs none, and no saved model carries one."""
    exp = _exp(net="resnet8", teacher_width_multiplier=2 * TINY)
    trainer = pipeline.Trainer(exp, cifar, tmp_path, verbose=0)
    assert trainer.train_method("pmkd", 0)["status"] == "ok"
    student = models.build(exp.net_config("student", 10, (32, 32, 3)))
    for phase in pipeline.needed_phases(pipeline.final_phase(exp, "pmkd", 0)):
        saved = keras.saving.load_model(trainer.folder(phase) / "model.keras")
        assert not [w for w in saved.weights if "regressor" in w.path], phase.name
        if phase.name.startswith("pmkd"):
            assert saved.count_params() == student.count_params()
    teacher = keras.saving.load_model(trainer.trained_model(pipeline.final_phase(exp, "teacher", 0)))
    assert teacher.output["features"][-1].shape[-1] == 2 * student.output["features"][-1].shape[-1]


def test_the_committed_converged_table_and_its_phases_are_still_found():
    """Today's code gives the committed `converged` table's settings and every phase's config (so its folder)."""
    root = Path(__file__).parents[1] / "experiments/results/cifar10/resnet18"
    table = json.loads((root / "converged.json").read_text())
    stored = {k: v for k, v in table["experiment"].items() if k not in ("class_names", "command")}
    exp = pipeline.Experiment.from_flat(stored)
    assert exp.flat() == stored
    for method in ("teacher", "baseline", "pmkd", "kd_fitnet_long"):
        run = table["runs"][f"{method}/seed1" if method != "teacher" else "teacher/seed0"]
        seed = run["seed"]
        phases = list(pipeline.needed_phases(pipeline.final_phase(exp, method, seed)))
        data = json.loads((root / run["phases"][0] / "config.json").read_text())["data"]
        assert [p.folder(exp, data) for p in phases] == run["phases"], method


def test_a_teacher_below_one_and_a_half_times_chance_is_named_before_a_student_learns_from_it(cifar, tmp_path,
                                                                                               caplog):
    untrained = _exp(recipe=Recipe(epochs=1, batch_size=64, learning_rate=1e-9))  # the teacher stays at chance
    trainer = pipeline.Trainer(untrained, cifar, tmp_path, verbose=0)
    teacher = trainer.train_method("teacher", 0)
    assert teacher["val_accuracy"] < 0.15  # the split has a validation part: that is the accuracy named
    with caplog.at_level("WARNING"):
        trainer.train_method("kd", 0)
    [line] = [r.getMessage() for r in caplog.records if "below 1.5x chance" in r.getMessage()]
    assert f"{100 * teacher['val_accuracy']:.2f}% on validation, below 1.5x chance (15.00% for 10 classes)" in line
    caplog.clear()
    with caplog.at_level("WARNING"):
        trainer.train_method("kd", 0)  # finished: nothing starts, nothing to warn about
    assert not [r for r in caplog.records if "below 1.5x chance" in r.getMessage()]


def test_fig2_phase3_starts_from_the_pacemaker_row_member(cifar, trained):
    trainer, _ = trained
    exp = _exp(phase3_init="pacemaker_row")
    final = pipeline.final_phase(exp, "pmkd", 0)
    assert final.init.role == "pacemaker" and final.init_member == "1xN"
    fig2 = pipeline.Trainer(exp, cifar, trainer.root.parent.parent, verbose=0)
    start = fig2.build_model(final)
    pacemaker = keras.saving.load_model(fig2.folder(final.init) / "model.keras")
    for a, b in zip(start.get_weights(), models.pacemaker_member(pacemaker, "1xN").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_table_has_every_row_and_stability(trained, tmp_path):
    _, results = trained
    path = tmp_path / "results.json"
    for seed in (0, 1):
        for method in ("baseline", "kd", "pmkd"):
            run = dict(results[method], seed=seed, test_accuracy=results[method]["test_accuracy"] + 0.01 * seed)
            tables.record(path, run, {"net": "vgg13", "dataset": "cifar10"})
    tables.record(path, {"method": "fitnet", "seed": 0, "status": "failed", "error": "fitnet: loss NaN"},
                  {"net": "vgg13", "dataset": "cifar10", "command": "run --methods=fitnet --seeds=1"})
    stored = json.loads(path.read_text())
    assert set(stored["runs"]) == {"baseline/seed0", "baseline/seed1", "kd/seed0", "kd/seed1", "pmkd/seed0",
                                   "pmkd/seed1", "fitnet/seed0"}
    md = tables.markdown(stored)
    assert "| Baseline |" in md and "| KD |" in md and "| PMKD |" in md and "| FitNet | failed |" in md
    assert "[-0.50, +0.50]" in md and "fitnet: loss NaN" in md
    # Rows come from several invocations, so the command shown is named the latest, not the table's.
    assert "the latest run was `run --methods=fitnet --seeds=1`" in md
    assert "| PMKD |" in md.split("Against the paper")[1] and "| +1.72 |" in md  # VGG13: 71.44 - 69.72


def test_a_table_refuses_runs_made_with_other_settings(tmp_path):
    path = tmp_path / "results.json"
    settings = {"net": "vgg13", "dataset": "cifar10", "pacemaker_kind": "ensemble", "rho": 1.0, "jit_compile": False,
                "command": "python -m pmkd_tf.experiments.run"}
    tables.check_same_table(path, settings)  # no table yet
    tables.record(path, {"method": "baseline", "seed": 0, "status": "ok", "test_accuracy": 0.5}, settings)
    # How the run was launched, and XLA, do not change the table's numbers.
    tables.check_same_table(path, {**settings, "command": "python -m pmkd_tf.experiments.run --seeds=5",
                                   "jit_compile": True, "steps_per_execution": 4})
    with pytest.raises(pipeline.UserError, match=r"pacemaker_kind='ensemble' \(now 'column'\).*--table=<name>"):
        tables.check_same_table(path, {**settings, "pacemaker_kind": "column"})
    with pytest.raises(pipeline.UserError, match=r"rho=1.0 \(now 2.0\)"):
        tables.check_same_table(path, {**settings, "rho": 2.0})


def test_phase3_refuses_a_model_of_another_net_or_shape(cifar, trained):
    trainer, _ = trained
    final = pipeline.final_phase(trainer.exp, "pm_kd", 0)
    phase2_model = trainer.folder(final.init) / "model.keras"
    saved = phase2_model.read_bytes()
    try:
        models.get_model("wrn_10_10", "1xN", 10, TINY).save(phase2_model)
        with pytest.raises(pipeline.UserError, match="holds wrn_10_10_1xN, not the vgg13_1xN"):
            trainer.build_model(final)
    finally:
        phase2_model.write_bytes(saved)


def test_plots_are_drawn_from_a_results_folder(trained):
    trainer, results = trained
    for method in ("teacher", "baseline", "pmkd"):
        tables.record(trainer.root / "results.json", results[method], {"net": "vgg13", "dataset": "cifar10"})
        tables.record(trainer.root / "ablation.json", results[method], {"net": "vgg13", "dataset": "cifar10"})
    paths = plots.plot(trainer.root, 0)
    assert [p.name for p in paths] == ["accuracy.png", "curves_seed0.png"]
    # Another table's figures carry its name, so they never overwrite the main table's.
    paths += plots.plot(trainer.root, 0, table="ablation")
    assert [p.name for p in paths[2:]] == ["ablation_accuracy.png", "ablation_curves_seed0.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in paths)


def test_a_method_the_table_does_not_know_is_shown_by_name(tmp_path):
    path = tmp_path / "results.json"
    tables.record(path, {"method": "baseline", "seed": 0, "status": "ok", "test_accuracy": 0.5, "total_epochs": 1,
                         "total_wall_seconds": 1.0}, {"net": "vgg13", "dataset": "cifar10"})
    tables.record(path, {"method": "my_variant", "seed": 0, "status": "ok", "test_accuracy": 0.6, "total_epochs": 2,
                         "total_wall_seconds": 2.0}, {"net": "vgg13", "dataset": "parts",
                                                      "class_names": ["bolt", "nut", "washer"]})
    md = tables.markdown(tables.read_table(path))
    assert "| my_variant | 60.00 | ↑ +10.00 |" in md
    assert "3 classes: bolt, nut, washer." in md  # the user's class names travel into the table


def test_each_method_is_paired_by_seed_with_the_baseline_and_each_compute_matched_control(tmp_path):
    path = tmp_path / "converged.json"
    top1 = {"baseline": (0.40, 0.38, 0.39), "baseline_long": (0.41, 0.37, 0.42), "pmkd": (0.45, 0.40),
            "kd_fitnet_long": (0.43, 0.41)}
    for method, accuracies in top1.items():
        for seed, accuracy in enumerate(accuracies):
            tables.record(path, {"method": method, "seed": seed, "status": "ok", "test_accuracy": accuracy,
                                 "total_epochs": 2, "total_wall_seconds": 1.0}, {"net": "vgg13", "dataset": "cifar10"})
    md = tables.markdown(tables.read_table(path))
    paired = md.split("## Paired by seed")[1].split("##")[0]
    assert "| Method | minus Baseline | minus Baseline (2x epochs) | minus KD + FitNet (2x epochs) |" in paired
    # PMKD has seeds 0 and 1 only: it is paired on those, not against the control's 3-seed mean; the
    # p-value is scipy's paired t-test on the two rows' seeds.
    p = [scipy.stats.ttest_rel([45, 40], other).pvalue for other in ([40, 38], [41, 37], [43, 41])]
    assert f"| PMKD | +3.50 [+5.00, +2.00] p={p[0]:.2g} | +3.50 [+4.00, +3.00] p={p[1]:.2g} | " \
           f"+0.50 [+2.00, -1.00] p={p[2]:.2g} |" in paired
    # Margins that do not vary give the test nothing to say: no p-value rather than p=0.
    p = scipy.stats.ttest_rel([40, 38, 39], [41, 37, 42]).pvalue
    assert f"| Baseline |  | -1.00 [-1.00, +1.00, -3.00] p={p:.2g} | -3.00 [-3.00, -3.00] |" in paired
    # A table with a baseline only has nothing to pair.
    tables.record(tmp_path / "results.json", {"method": "baseline", "seed": 0, "status": "ok", "test_accuracy": 0.5,
                                              "total_epochs": 1, "total_wall_seconds": 1.0}, {"net": "vgg13"})
    assert "Paired by seed" not in tables.markdown(tables.read_table(tmp_path / "results.json"))


def test_the_method_table_decides_terms_weights_and_tunables():
    assert methods.METHODS["pmkd"].tunable == ("alpha", "temperature", "rho")
    assert methods.METHODS["fitnet"].tunable == ("rho",) and methods.METHODS["baseline"].tunable == ()
    assert methods.METHODS["pm_at"].tunable == ("beta",)
    given = {"rho": 2.0, "alpha": 0.9, "temperature": 4.0}
    fitnet = methods.METHODS["fitnet"].values(given)
    assert (fitnet["rho"], fitnet["alpha"]) == (2.0, 0.0)  # no KD term: CE gets weight 1 - 0 = 1
    kd = methods.METHODS["kd"].values(given)
    assert (kd["rho"], kd["alpha"]) == (0.0, 0.9) and "beta" not in kd
    with pytest.raises(ValueError, match="Unknown distillation term"):
        methods.Method("Bad", ("attention",))


def test_a_phase_whose_weights_are_missing_is_named_not_a_traceback(cifar, tmp_path):
    exp = _exp()
    trainer = pipeline.Trainer(exp, cifar, tmp_path, verbose=0)
    teacher = pipeline.final_phase(exp, "teacher", 0)
    folder = trainer.folder(teacher)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"status": "ok", "folder": folder.name, "epochs": 1,
                                                    "wall_seconds": 1.0, "test_accuracy": 0.1}))
    with pytest.raises(pipeline.UserError, match=r"has a result but no model.keras.*delete .* to retrain it"):
        trainer.train_method("kd", 0)
    assert not list(tmp_path.rglob("kd-seed0-*/config.json"))  # refused before the student's phase began


def test_a_log_gets_one_line_per_epoch_and_a_terminal_the_progress_bar(cifar, monkeypatch):
    """Keras's "auto" would draw the bar into a `nohup` log too, megabytes of backspaces per phase."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert pipeline.Trainer(_exp(), cifar, "unused").verbose == 2
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert pipeline.Trainer(_exp(), cifar, "unused").verbose == 1
    assert pipeline.Trainer(_exp(), cifar, "unused", verbose=0).verbose == 0
