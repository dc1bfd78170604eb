"""Your own images: folders of any format, size and channel count, tfds:<name>, on-disk mode, bad input, sizes.

Every folder is built in tmp_path from a few dozen of the real CIFAR-10
JPEGs (conftest's data_dir), re-saved as PNG/BMP/GIF, grayscale or resized.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import HANG_SECONDS
from PIL import Image

from pmkd_tf import data, models
from pmkd_tf.errors import UserError

CLASSES = ("cat", "dog", "ship")


@pytest.fixture
def info_log(caplog):
    """caplog with the loader's INFO lines (the defaults it chose) captured too."""
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


def _cifar(data_dir: str, klass: str, i: int) -> Image.Image:
    return Image.open(f"{data_dir}/cifar10/train/{klass}/{i:04d}.jpg")


def _mixed(image: Image.Image, i: int) -> tuple[Image.Image, str]:
    """Eight files a class: two colour PNGs, a grayscale PNG, a BMP, a GIF, a 20x48 JPEG and two 32x32 JPEGs."""
    return [(image, ".png"), (image, ".png"), (image.convert("L"), ".png"), (image, ".bmp"), (image, ".gif"),
            (image.resize((48, 20)), ".jpg"), (image, ".jpg"), (image, ".jpg")][i % 8]


def _folder(root, data_dir, name="parts", per_class=8, test=False, make=_mixed, classes=CLASSES):
    """<root>/<name>/train/<class>/* (and test/ with the same files): `make` turns CIFAR image i into a file."""
    for split in ("train", "test") if test else ("train",):
        for klass in classes:
            folder = root / name / split / klass
            folder.mkdir(parents=True)
            for i in range(per_class):
                image, suffix = make(_cifar(data_dir, klass, i), i)
                image.save(folder / f"{i:02d}{suffix}")
    return root


def _expected(path) -> np.ndarray:
    """What a lossless file holds, as RGB (grayscale repeated), decoded by Pillow."""
    return np.asarray(Image.open(path).convert("RGB"))


def test_mixed_formats_sizes_and_channels_with_a_held_out_test_split(data_dir, tmp_path, info_log):
    root = _folder(tmp_path, data_dir)
    splits = data.load("parts", str(root), test_fraction=0.25, seed=3)
    assert splits.class_names == CLASSES and splits.num_classes == 3
    assert splits.image_shape == (32, 32, 3) and splits.train_images.shape == (18, 32, 32, 3)
    assert "most common, 32x32 (21 of 24 images)" in info_log.text
    assert "holding out 25% of each class" in info_log.text
    # Two of every class's eight images are the test split, and no file is in both.
    assert np.bincount(splits.test_labels).tolist() == [2, 2, 2] and len(splits.train_labels) == 18
    train, test = ({x.tobytes() for x in a} for a in (splits.train_images, splits.test_images))
    assert not train & test
    # Statistics are measured on the training split, not taken from a table.
    pixels = splits.train_images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(splits.mean, pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(splits.std, pixels.std(0), atol=1e-6)
    assert splits.identity["statistics"] == "train" and splits.identity["test_fraction"] == 0.25
    assert splits.augment == "crop_flip"
    again = data.load("parts", str(root), test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.test_images, splits.test_images)
    other_seed = data.load("parts", str(root), test_fraction=0.25, seed=4)
    assert {x.tobytes() for x in other_seed.test_images} != test


def test_every_format_decodes_to_the_exact_pixels(data_dir, tmp_path):
    root = _folder(tmp_path, data_dir, per_class=5, test=True, classes=CLASSES[:2])
    splits = data.load("parts", str(root))
    files = sorted((root / "parts" / "test").glob("*/*"))
    assert len(files) == len(splits.test_images) == 10
    for path, image in zip(files, splits.test_images):
        if path.suffix != ".jpg":  # PNG, grayscale PNG, BMP and GIF are lossless once written
            np.testing.assert_array_equal(image, _expected(path), err_msg=path.name)


def test_non_square_size_resizes_every_image_and_trains(data_dir, tmp_path):
    def strip(image, i):  # one file already 24x96 (kept exactly), the others stretched to it
        return (image.resize((96, 24)), ".png") if i == 0 else _mixed(image, i)

    root = _folder(tmp_path, data_dir, per_class=6, test=True, make=strip)
    for augment in ("crop_flip", "crop", "none"):
        splits = data.load("parts", str(root), image_size=(24, 96), augment=augment)
        assert splits.image_shape == (24, 96, 3) and splits.test_images.shape == (18, 24, 96, 3)
        x, y = next(iter(splits.train_dataset(4, seed=0)))
        assert x.shape == (4, 24, 96, 3) and x.dtype == "float32" and y.shape == (4,)
    np.testing.assert_array_equal(splits.test_images[0], _expected(root / "parts/test/cat/00.png"))
    # Downscaling a file of twice the size gives (nearly) what Pillow makes at that size.
    big = tmp_path / "big"
    _folder(big, data_dir, per_class=2, test=True, make=lambda image, i: (image.resize((192, 48)), ".png"))
    small = tmp_path / "small"
    _folder(small, data_dir, per_class=2, test=True, make=lambda image, i: (image.resize((96, 24)), ".png"))
    down = data.load("parts", str(big), image_size=(24, 96)).test_images.astype(float)
    assert np.abs(down - data.load("parts", str(small)).test_images).mean() < 6


def test_grayscale_folder_defaults_to_one_channel(data_dir, tmp_path, info_log):
    root = _folder(tmp_path, data_dir, per_class=4, test=True, make=lambda image, i: (image.convert("L"), ".png"))
    gray = data.load("parts", str(root))
    assert gray.image_shape == (32, 32, 1) and len(gray.mean) == len(gray.std) == 1
    assert "every training image is grayscale" in info_log.text
    colour = data.load("parts", str(root), channels=3)
    assert colour.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(colour.test_images, np.repeat(gray.test_images, 3, axis=-1))
    x, _ = next(iter(gray.eval_dataset("test", 8)))
    assert x.shape == (8, 32, 32, 1)


def test_identity_names_exactly_the_data(data_dir, tmp_path):
    root = _folder(tmp_path, data_dir, per_class=4, test=True)
    first = data.load("parts", str(root), train_examples=6, validation_examples=2)
    identity = first.identity
    assert json.loads(json.dumps(identity)) == identity
    assert identity["source"] == "folder" and identity["path"] == str((root / "parts").resolve())
    assert (identity["train_examples"], identity["validation_examples"], identity["test_examples"]) == (6, 2, 12)
    assert data.load("parts", str(root), train_examples=6, validation_examples=2).identity == identity
    changed = [
        data.load("parts", str(root), train_examples=6, validation_examples=2, image_size=(24, 96)),
        data.load("parts", str(root), train_examples=6, validation_examples=2, channels=1),
        data.load("parts", str(root), train_examples=5, validation_examples=2),
        data.load("parts", str(root), train_examples=6, validation_examples=2, test_examples=5),
        data.load("parts", str(root), train_examples=6, validation_examples=2, seed=1),
        data.load("parts", str(root), train_examples=6, validation_examples=2, augment="none"),
    ]
    shutil.copytree(root / "parts", tmp_path / "copy" / "parts")
    changed.append(data.load("parts", str(tmp_path / "copy"), train_examples=6, validation_examples=2))
    assert changed[-1].identity["fingerprint"] == identity["fingerprint"]  # same files, another folder
    shutil.copy(root / "parts/train/cat/00.png", root / "parts/train/cat/99.png")
    changed.append(data.load("parts", str(root), train_examples=6, validation_examples=2))
    assert changed[-1].identity["fingerprint"] != identity["fingerprint"]
    assert all(s.identity != identity for s in changed)


def test_on_disk_mode_gives_the_same_data_as_in_memory(data_dir, tmp_path, info_log):
    root = _folder(tmp_path, data_dir, per_class=8)
    args = dict(image_size=(20, 40), validation_examples=3, test_fraction=0.25)
    memory = data.load("parts", str(root), **args)
    needed = 20 * 40 * 3 * 24  # bytes of every chosen image decoded: the estimate made before decoding
    assert data.load("parts", str(root), memory_limit_bytes=needed, **args).in_memory
    disk = data.load("parts", str(root), memory_limit_bytes=needed - 1, **args)
    assert memory.in_memory and not disk.in_memory and "reading them from disk in every epoch" in info_log.text
    assert disk.identity == memory.identity and (disk.mean, disk.std) == (memory.mean, memory.std)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(disk, f"{split}_labels"), getattr(memory, f"{split}_labels"))
        np.testing.assert_array_equal(getattr(disk, f"{split}_images"), getattr(memory, f"{split}_images"))

    def batches(ds):
        xs, ys = zip(*ds.as_numpy_iterator())
        return np.concatenate(xs), np.concatenate(ys)

    # Same shuffles and the same crops and flips, epoch after epoch (each epoch new ones).
    assert memory.augment == "crop_flip"
    epochs = [[batches(split.train_dataset(5, seed=7, epoch=e)) for split in (disk, memory)] for e in range(2)]
    for from_disk, from_memory in epochs:
        for a, b in zip(from_disk, from_memory, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(epochs[0][1][0], epochs[1][1][0])
    for a, b in zip(batches(disk.eval_dataset("test", 4)), batches(memory.eval_dataset("test", 4))):
        np.testing.assert_array_equal(a, b)


def test_tfds_mnist_is_grayscale_28x28_with_measured_statistics():
    with tfds.testing.mock_data(num_examples=40):
        mnist = data.load("tfds:mnist", train_examples=20, validation_examples=5, test_examples=10)
        resized = data.load("tfds:mnist", train_examples=20, image_size=(32, 32), channels=3)
    assert mnist.image_shape == (28, 28, 1) and mnist.train_images.shape == (20, 28, 28, 1)
    assert mnist.class_names == tuple(str(d) for d in range(10)) and mnist.augment == "crop_flip"
    pixels = mnist.train_images.reshape(-1) / 255.0
    np.testing.assert_allclose(mnist.mean + mnist.std, (pixels.mean(), pixels.std()), atol=1e-6)
    assert mnist.identity["source"] == "tfds" and mnist.identity["tfds_name"] == "mnist"
    assert mnist.identity["tfds_version"] == str(tfds.builder("mnist").info.version)
    assert resized.image_shape == (32, 32, 3) and resized.identity != mnist.identity


def _no_readable(root, data_dir, content):
    _folder(root, data_dir, per_class=2, test=True)
    for f in (root / "parts" / "train" / "dog").iterdir():
        f.write_bytes(content)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty_class", "Empty class folder .*train/empty"),
        ("zero_byte_class", "train/dog has no readable images: every file in it is empty"),
        ("corrupt_class", "Class 'dog' has no readable images in .*train: none of its 2 files decodes"),
        ("one_class", "has 1 class folder\\(s\\); a classifier needs at least two"),
        ("different_classes", "different class folders \\(only in train: \\['ship'\\], only in test: \\[\\]"),
        ("one_image_class", "class 'ship' has 1 readable image\\(s\\); holding out a test split needs at least 2"),
        ("too_many_validation", "--validation_examples=6 leaves no training images"),
        ("no_data_dir", "Unknown dataset 'parts': .*pass --data_dir"),
        ("not_a_name", "Invalid dataset '../parts'"),
        ("unknown_tfds", "tensorflow-datasets has no dataset 'no_such_set'"),
        ("tfds_text", "tfds:imdb_reviews is not an image classification dataset"),
        ("image_size", "--image_size must be HxW with positive H and W"),
        ("channels", "--channels must be 1 \\(grayscale\\) or 3 \\(colour\\), got 2"),
        ("augment", "--augment must be one of crop_flip, crop, none"),
        ("test_fraction", "--test_fraction must be between 0 and 1"),
    ],
)
def test_bad_input_is_one_clear_line(data_dir, tmp_path, setup, message):
    root, kwargs, name = tmp_path, {}, "parts"
    if setup == "empty_class":
        _folder(root, data_dir, per_class=2)
        (root / "parts" / "train" / "empty").mkdir()
    elif setup in ("zero_byte_class", "corrupt_class"):
        _no_readable(root, data_dir, b"" if setup == "zero_byte_class" else b"not an image")
    elif setup == "one_class":
        _folder(root, data_dir, per_class=2, classes=("cat",))
    elif setup == "different_classes":
        _folder(root, data_dir, per_class=2, test=True)
        shutil.rmtree(root / "parts" / "test" / "ship")
    elif setup == "one_image_class":
        _folder(root, data_dir, per_class=2)
        (root / "parts" / "train" / "ship" / "01.png").unlink()
    elif setup == "too_many_validation":
        _folder(root, data_dir, per_class=2, test=True)
        kwargs = dict(validation_examples=6)
    elif setup == "no_data_dir":
        root = None
    elif setup == "not_a_name":
        name = "../parts"
    elif setup in ("unknown_tfds", "tfds_text"):
        name, root = {"unknown_tfds": "tfds:no_such_set", "tfds_text": "tfds:imdb_reviews"}[setup], None
    else:
        kwargs = {"image_size": dict(image_size=(0, 32)), "channels": dict(channels=2),
                  "augment": dict(augment="flip"), "test_fraction": dict(test_fraction=1.0)}[setup]
    with pytest.raises(data.DataError, match=message) as error:
        data.load(name, None if root is None else str(root), **kwargs)
    assert "\n" not in str(error.value) and isinstance(error.value, UserError)  # the CLIs: one line, exit 2


def test_empty_and_corrupt_files_are_skipped_and_counted(data_dir, tmp_path, caplog):
    root = _folder(tmp_path, data_dir, per_class=3)
    (root / "parts" / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (root / "parts" / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    (root / "parts" / "train" / "dog" / "notes.txt").write_text("not an image")
    splits = data.load("parts", str(root), test_fraction=0.34)
    assert len(splits.train_labels) + len(splits.test_labels) == 9
    assert "Skipped 1 of 11 image files in" in caplog.text and "that are empty" in caplog.text
    assert "ignored 1 files without an image suffix" in caplog.text
    assert "that are not readable JPEG/PNG/BMP/GIF images" in caplog.text


def test_image_size_flag_parses_rows_by_columns():
    assert data.parse_image_size("24x96") == (24, 96)
    for text in ("24", "0x96", "24x-1", "axb"):
        with pytest.raises(data.DataError, match="--image_size must be HxW"):
            data.parse_image_size(text)


@pytest.mark.parametrize("net", models.NETS)
def test_every_net_builds_and_runs_on_non_square_strips(net):
    model = models.get_model(net, "1xN", 4, 1 / 16, input_shape=(24, 96, 1))
    out = model(np.zeros((2, 24, 96, 1), np.float32), training=False)
    assert tuple(out["logits"].shape) == (2, 4)


@pytest.mark.parametrize("net", ["vgg13", "resnet18", "wrn_10_10"])
def test_too_small_for_the_net_names_the_smallest_size_that_works(net):
    smallest = models.min_input_size(net)
    assert smallest == (18 if net.startswith("vgg") else 1)
    model = models.get_model(net, "NxN", 3, 1 / 16, input_shape=(smallest, smallest, 3))
    assert tuple(model(np.zeros((1, smallest, smallest, 3), np.float32))["logits"].shape) == (1, 3)
    if smallest > 1:
        with pytest.raises(UserError, match=f"{net} needs images of at least 18x18 .*--image_size=18x96"):
            models.get_model(net, "NxN", 3, 1 / 16, input_shape=(smallest - 1, 96, 3))
    with pytest.raises(UserError, match="input_shape must be"):
        models.NetConfig(net, input_shape=(0, 32, 3))


def test_own_folder_trains_baseline_and_pmkd_exports_and_streams_end_to_end(data_dir, tmp_path):
    """The user's path: a folder of mixed PNG/BMP/GIF/JPEG, sizes and grayscale, no test/, a line-scan size."""
    root = _folder(tmp_path / "images", data_dir, per_class=12)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    train = subprocess.run([sys.executable, "-m", "pmkd_tf.experiments.run", "--dataset=parts", f"--data_dir={root}",
                            "--image_size=24x40", "--net=resnet18", "--preset=smoke", "--methods=baseline,pmkd",
                            f"--out_dir={tmp_path / 'runs'}"], env=env, capture_output=True, text=True,
                           timeout=HANG_SECONDS)
    assert train.returncode == 0, train.stderr[-3000:]
    table = (tmp_path / "runs" / "parts" / "resnet18" / "results.md").read_text()
    assert "| Baseline |" in table and "| PMKD |" in table and "3 classes: cat, dog, ship." in table
    runs = json.loads((tmp_path / "runs" / "parts" / "resnet18" / "results.json").read_text())["runs"]
    student = tmp_path / "runs" / "parts" / "resnet18" / runs["pmkd/seed0"]["folder"] / "model.keras"
    out = tmp_path / "export"
    export = subprocess.run([sys.executable, "-m", "pmkd_tf.export", f"--model={student}", f"--out_dir={out}",
                             "--calibration_examples=20", "--micro_examples=2", "--int8_stream_examples=9",
                             "--float_stream_examples=2", "--latency_runs=2", "--c_stream_examples=9",
                             "--cortex_m4_examples=3", "--verbose=false"],
                            env=env, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert export.returncode == 0, export.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    # Size, channels and statistics came from the model and the run: nothing was repeated on the command line.
    assert report["input"]["shape"] == [1, 24, 40, 3] and report["dataset"] == "parts"
    stored = json.loads((student.parent / "config.json").read_text())["data"]
    held_out = stored["test_examples"]  # 20% of each class of train/, drawn with the run's seed
    assert stored["test_fraction"] == 0.2 and report["accuracy"]["test_examples"] == held_out == 6
    assert report["streaming"]["int8"]["bit_exact_images"] == report["streaming"]["int8"]["images"] == held_out
    assert report["c_stream"]["host"]["mismatched"] == 0 and report["c_stream"]["host"]["images"] == held_out
    assert '"cat", "dog", "ship"' in (out / "model_data.cc").read_text()
