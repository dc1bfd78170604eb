"""Model zoo: shapes, on-the-fly property, parameter ratios, pacemaker, saving."""

import keras
import numpy as np
import pytest

from pmkd_tf import models

TINY = 1 / 16


def _feature_shapes(model):
    return [tuple(f.shape[1:]) for f in model.output["features"]]


@pytest.mark.parametrize("net", models.NETS)
def test_every_shape_has_identical_features_and_logits(net):
    built = {shape: models.get_model(net, shape, 7, TINY) for shape in models.FILTER_SHAPES}
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    teacher_shapes = _feature_shapes(built["NxN"])
    assert len(teacher_shapes) >= 4
    for shape, model in built.items():
        out = model(x, training=False)
        assert set(out) == {"logits", "features"}
        assert tuple(out["logits"].shape) == (2, 7)
        assert _feature_shapes(model) == teacher_shapes, shape
        assert [tuple(f.shape[1:]) for f in out["features"]] == teacher_shapes


@pytest.mark.parametrize("net", models.NETS)
def test_on_the_fly_property_and_one_third_parameters(net):
    reports = {s: models.on_the_fly_report(models.get_model(net, s, 10, TINY)) for s in models.FILTER_SHAPES}
    assert reports["1xN"].on_the_fly and not reports["1xN"].offending_layers
    assert not reports["NxN"].on_the_fly and not reports["Nx1"].on_the_fly
    assert reports["1xN"].intermediate_conv_params * 3 == reports["NxN"].intermediate_conv_params
    assert reports["Nx1"].intermediate_conv_params == reports["1xN"].intermediate_conv_params
    assert reports["1xN"].total_params < reports["NxN"].total_params


def test_kernel_size_n_is_a_parameter():
    teacher = models.on_the_fly_report(models.get_model("resnet18", "NxN", 10, TINY, n=5))
    student = models.on_the_fly_report(models.get_model("resnet18", "1xN", 10, TINY, n=5))
    assert student.intermediate_conv_params * 5 == teacher.intermediate_conv_params


def test_stem_option_makes_the_stem_one_row_high_too():
    kept = models.get_model("vgg13", "1xN", 10, TINY)
    body = models.get_model("vgg13", "1xN", 10, TINY, stem="body")
    assert kept.get_layer("stem_conv").kernel_size == (3, 3)
    assert body.get_layer("stem_conv").kernel_size == (1, 3)


def test_vgg_strides_replace_intermediate_pooling_only():
    model = models.get_model("vgg16", "1xN", 10, TINY)
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["first_pool", "last_pool"]
    strided = [layer.name for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)]
    assert strided == ["stage3_conv1", "stage4_conv1", "stage5_conv1"]


def test_full_width_resnet18_matches_the_known_cifar_parameter_count():
    report = models.on_the_fly_report(models.get_model("resnet18", "NxN", 10))
    assert report.trainable_params == 11_173_962


def test_resnet8_is_mlperf_tinys_network():
    """16-filter stem, one basic block each of 16, 32, 64 filters: MLPerf Tiny's ~78k parameters (ours: no conv
    biases, a batch norm on each projection)."""
    model = models.get_model("resnet8", "NxN", 10)
    assert model.count_params() == 78_714
    assert _feature_shapes(model) == [(32, 32, 16), (32, 32, 16), (16, 16, 32), (8, 8, 64)]


def test_any_wrn_depth_and_width():
    model = models.get_model("wrn_22_2", "1xN", 10, TINY)
    assert len(model.output["features"]) == 1 + 3 * 3


def test_pacemaker_is_the_mean_of_its_members():
    config = models.NetConfig("resnet18", num_classes=5, width_multiplier=TINY)
    pacemaker = models.build_pacemaker(config)
    row = models.pacemaker_member(pacemaker, "1xN")
    column = models.pacemaker_member(pacemaker, "Nx1")
    assert row.get_layer("stage1_block1_conv1").kernel_size == (1, 3)
    assert column.get_layer("stage1_block1_conv1").kernel_size == (3, 1)
    assert len(pacemaker.trainable_weights) == len(row.trainable_weights) + len(column.trainable_weights)
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")
    out, r, c = pacemaker(x), row(x), column(x)
    np.testing.assert_allclose(out["logits"], (r["logits"] + c["logits"]) / 2, rtol=1e-5, atol=1e-6)
    for f, fr, fc in zip(out["features"], r["features"], c["features"]):
        np.testing.assert_allclose(f, (fr + fc) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["column", "row"])
def test_single_member_pacemaker(kind):
    config = models.NetConfig("vgg13", width_multiplier=TINY)
    pacemaker = models.build_pacemaker(config, kind)
    shape = models.PACEMAKER_KINDS[kind][0]
    member = models.pacemaker_member(pacemaker, shape)
    x = np.ones((1, 32, 32, 3), "float32")
    np.testing.assert_allclose(pacemaker(x)["logits"], member(x)["logits"])
    with pytest.raises(ValueError, match="no"):
        models.pacemaker_member(pacemaker, "1xN" if shape == "Nx1" else "Nx1")


def test_save_load_round_trip_of_model_and_pacemaker_member(tmp_path):
    config = models.NetConfig("wrn_10_10", "1xN", width_multiplier=TINY)
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    model = models.build(config)
    model.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(loaded(x)["logits"], model(x)["logits"], rtol=1e-6)

    pacemaker = models.build_pacemaker(config)
    row = models.pacemaker_member(pacemaker, "1xN")
    row.save(tmp_path / "row.keras")
    student = models.build(config)
    student.set_weights(keras.saving.load_model(tmp_path / "row.keras").get_weights())
    np.testing.assert_allclose(student(x)["logits"], row(x)["logits"], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"net": "resnet19"}, "valid nets: vgg13"),
        ({"net": "wrn_11_2"}, "6n\\+4"),
        ({"net": "resnet18", "filter_shape": "2x2"}, "Unknown filter shape '2x2'; valid: NxN, 1xN, Nx1"),
        ({"net": "resnet18", "width_multiplier": 0}, "width_multiplier"),
        ({"net": "resnet18", "n": 4}, "odd"),
    ],
)
def test_clear_errors_for_bad_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.get_model(**kwargs)


def test_unknown_pacemaker_kind():
    with pytest.raises(ValueError, match="valid: ensemble, column, row"):
        models.build_pacemaker(models.NetConfig("vgg13", width_multiplier=TINY), "diagonal")


# One net per family: VGG's strided stages, ResNet basic blocks, bottlenecks, WRN.
FAMILIES = ("vgg13", "resnet18", "resnet50", "wrn_10_10")


@pytest.mark.parametrize("net", FAMILIES)
@pytest.mark.parametrize("downsampling", ["average", "max"])
def test_pooled_downsampling_keeps_feature_shapes_and_reads_every_row(net, downsampling):
    """A 1xN model pools row pairs (Nx1: column pairs) and then strides along its kernel's axis only."""
    size = (19, 33, 1) if net.startswith("vgg") else (17, 33, 1)  # odd heights round up like a stride
    built = {shape: models.get_model(net, shape, 7, TINY, input_shape=size, downsampling=downsampling)
             for shape in models.FILTER_SHAPES}
    assert _feature_shapes(built["1xN"]) == _feature_shapes(built["Nx1"]) == _feature_shapes(built["NxN"])
    assert models.on_the_fly_report(built["1xN"]).on_the_fly
    pool = keras.layers.AveragePooling2D if downsampling == "average" else keras.layers.MaxPooling2D
    for shape, window, strides in (("1xN", (2, 1), (1, 2)), ("Nx1", (1, 2), (2, 1))):
        model = built[shape]
        pooled = [layer for layer in model.layers if isinstance(layer, pool) and layer.name.endswith("_pool")
                  and layer.name not in ("first_pool", "last_pool")]
        assert pooled and all(layer.pool_size == window for layer in pooled)
        strided = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.Conv2D) and layer.strides != (1, 1)]
        assert strided and all(layer.strides == strides for layer in strided), shape
        # Every strided conv (the projection shortcuts too) reads a pooled tensor, never the rows it would drop.
        assert all(isinstance(layer.input._keras_history.operation, pool) for layer in strided)
    teacher = models.get_model(net, "NxN", 7, TINY, input_shape=size)
    assert [w.shape for w in built["NxN"].weights] == [w.shape for w in teacher.weights]
    assert not any(isinstance(layer, (keras.layers.AveragePooling2D,)) for layer in built["NxN"].layers)


@pytest.mark.parametrize("net", ["resnet18", "resnet50", "wrn_10_10"])
def test_pooled_downsampling_runs_on_a_one_row_strip(net):
    model = models.get_model(net, "1xN", 5, TINY, input_shape=(1, 12, 3), downsampling="average")
    out = model(np.ones((2, 1, 12, 3), "float32"))
    assert all(feature.shape[1] == 1 for feature in out["features"])
    assert np.isfinite(out["logits"]).all()


def test_unknown_downsampling():
    with pytest.raises(ValueError, match="valid: stride, average, max"):
        models.get_model("resnet18", "1xN", downsampling="skip")
