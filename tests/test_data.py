"""Data: the real image folder, tfds loaders on mock data, tf.data datasets, errors."""

import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pmkd_tf import data


def test_real_folder_subsets_are_disjoint_and_seeded(data_dir, cifar):
    assert cifar.train_images.shape == (320, 32, 32, 3) and cifar.train_images.dtype == np.uint8
    assert cifar.val_images.shape == (64, 32, 32, 3) and cifar.test_images.shape == (160, 32, 32, 3)
    assert cifar.class_names[:3] == ("airplane", "automobile", "bird") and cifar.num_classes == 10
    assert len(set(cifar.train_labels)) == 10 and cifar.image_shape == (32, 32, 3) and cifar.in_memory
    # The paper datasets keep their published full-training-set statistics.
    assert (cifar.mean, cifar.std) == data.STATS["cifar10"] and cifar.identity["statistics"] == "published"
    flat = lambda a: {x.tobytes() for x in a}  # noqa: E731
    assert not flat(cifar.val_images) & flat(cifar.train_images)
    assert not flat(cifar.val_images) & flat(cifar.test_images)
    again = data.load("cifar10", data_dir, train_examples=320, test_examples=160, validation_examples=64)
    np.testing.assert_array_equal(again.train_images, cifar.train_images)


def test_datasets_normalise_augment_and_batch(cifar):
    assert cifar.augment == "crop_flip"
    train = cifar.train_dataset(64, seed=0)
    x, y = next(iter(train))
    assert x.shape == (64, 32, 32, 3) and x.dtype == "float32" and y.shape == (64,)
    assert abs(float(np.mean(x))) < 0.5 and 0.5 < float(np.std(x)) < 1.5
    # Seeded: the same seed gives the same shuffle, crops and flips; another seed others.
    np.testing.assert_array_equal(next(iter(cifar.train_dataset(64, seed=0)))[0], x)
    assert not np.array_equal(next(iter(cifar.train_dataset(64, seed=1)))[0], x)
    # Epoch e is drawn from (seed, e) alone, as a phase resumed at e needs; each epoch has every training label
    # once, in an order and with crops of its own. A variable epoch is read whenever the dataset is iterated.
    def batches(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*ds.as_numpy_iterator())
        return np.concatenate(xs), np.concatenate(ys)
    epochs = [batches(cifar.train_dataset(64, seed=0, epoch=e)) for e in range(3)]
    np.testing.assert_array_equal(epochs[0][0][:64], x)
    epoch = tf.Variable(0, dtype=tf.int64)
    train = cifar.train_dataset(64, seed=0, epoch=epoch)
    for e in (2, 1):
        epoch.assign(e)
        for a, b in zip(batches(train), epochs[e], strict=True):
            np.testing.assert_array_equal(a, b)
    assert all(sorted(labels) == sorted(cifar.train_labels) for _, labels in epochs)
    assert not np.array_equal(epochs[1][1], epochs[2][1]) and not np.array_equal(epochs[1][0], epochs[2][0])
    test = cifar.eval_dataset("test", 64)
    first = np.concatenate([b[1] for b in test])
    np.testing.assert_array_equal(first, cifar.test_labels)
    np.testing.assert_allclose(next(iter(test))[0][0], data.normalize(cifar.test_images[0], cifar.mean, cifar.std))


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100), ("svhn", 10)])
def test_tfds_loaders_on_mock_data(name, classes):
    with tfds.testing.mock_data(num_examples=30):
        splits = data.load(name, None, train_examples=12, validation_examples=6, test_examples=10)
    assert splits.train_images.shape == (12, 32, 32, 3) and splits.val_images.shape == (6, 32, 32, 3)
    assert splits.test_images.shape == (10, 32, 32, 3) and splits.num_classes == classes
    assert splits.augment == ("none" if name == "svhn" else "crop_flip")
    assert (splits.mean, splits.std) == data.STATS[name] and splits.identity["source"] == "tfds"


def _copy_folder(data_dir, tmp_path, per_class=3):
    for split in ("train", "test"):
        for klass in ("cat", "dog"):
            dst = tmp_path / "cifar10" / split / klass
            dst.mkdir(parents=True)
            for i in range(per_class):
                shutil.copy(f"{data_dir}/cifar10/{split}/{klass}/{i:04d}.jpg", dst / f"{i}.jpg")
    return tmp_path


def test_corrupt_files_are_skipped_and_counted(data_dir, tmp_path, caplog):
    root = _copy_folder(data_dir, tmp_path)
    (root / "cifar10" / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    splits = data.load("cifar10", str(root))
    assert len(splits.train_labels) == 6
    assert "Skipped 1 of 7" in caplog.text


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "does not exist"),
        ("empty", "No image folder"),
        ("classes", "different class folders"),
        ("no_images", "Empty class folder"),
    ],
)
def test_bad_folders_give_clear_errors(data_dir, tmp_path, setup, message):
    root = tmp_path / "root"
    if setup != "missing":
        root.mkdir()
    if setup in ("classes", "no_images"):
        _copy_folder(data_dir, root)
    if setup == "classes":
        shutil.rmtree(root / "cifar10" / "test" / "dog")
    if setup == "no_images":
        for f in (root / "cifar10" / "test").rglob("*.jpg"):
            f.unlink()
    with pytest.raises(data.DataError, match=message):
        data.load("cifar10", str(root))


def test_unknown_dataset_and_bad_counts():
    with pytest.raises(data.DataError, match="Unknown dataset 'mnist': not one of cifar10, cifar100, svhn or tfds"):
        data.load("mnist")
    with pytest.raises(data.DataError, match="train_examples must be positive"):
        data.load("cifar10", "/nonexistent", train_examples=0)


def test_offline_download_says_how_to_point_at_local_data(tmp_path, monkeypatch):
    # An empty tfds folder and a download that fails the way it does offline
    # (the real one retries for minutes before giving up).
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))

    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(data.DataError, match=r"ConnectionError.*point --data_dir \(or PMKD_DATA_DIR\)"):
        data.load("cifar100", None)
