"""Dataset assembly: class subsets, grayscale, deterministic splits, float32 normalisation, image folders."""

import tarfile

import numpy as np
import pytest
from PIL import Image

from cifar_scratch.config import DataConfig
from cifar_scratch.data import Normalizer, Split, imagefolder, load_dataset, resolve_data_dir, to_grayscale
from cifar_scratch.errors import ConfigError, DataError
from tests.data.helpers import make_cifar_archive


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """A data dir holding a small official-format CIFAR-10 archive, with the release checksums swapped to match it."""
    from cifar_scratch.data import cifar10
    from cifar_scratch.data.download import RemoteFile

    archive, archive_md5, checksums, *_ = make_cifar_archive(tmp_path, per_batch=40)
    monkeypatch.setattr(cifar10, "OFFICIAL", cifar10.Release(RemoteFile(archive.name, (), archive_md5), checksums))
    return tmp_path


def test_official_cifar_with_class_subset_by_name_and_index(cifar_dir):
    data = load_dataset(DataConfig(classes=["bird", 0], val_fraction=0.25), cifar_dir, progress=False)
    assert data.class_names == ("bird", "airplane")
    assert set(np.unique(data.train.labels)) == {0, 1}
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 8  # 2 of 10 classes, 4 images each
    assert data.train.images.dtype == np.uint8


def test_unknown_class_gets_did_you_mean(cifar_dir):
    with pytest.raises(ConfigError, match=r"data.classes.1: unknown class 'brid' \(did you mean 'bird'\?\)"):
        load_dataset(DataConfig(classes=["cat", "brid"]), cifar_dir, progress=False)
    with pytest.raises(ConfigError, match="data.classes.0: class index out of range"):
        load_dataset(DataConfig(classes=[10, 1]), cifar_dir, progress=False)


def test_grayscale_luma():
    pixel = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]]], dtype=np.uint8)
    gray = to_grayscale(pixel)
    assert gray.shape == (1, 1, 4, 1) and gray.dtype == np.uint8
    assert gray.ravel().tolist() == [76, 150, 29, round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)]


def test_digits_splits_are_deterministic_stratified_and_disjoint():
    config = DataConfig(dataset="digits", val_fraction=0.2, test_fraction=0.1, grayscale=True)
    first, second = load_dataset(config, resolve_data_dir(), False), load_dataset(config, resolve_data_dir(), False)
    assert np.array_equal(first.val.images, second.val.images) and np.array_equal(first.test.labels, second.test.labels)
    assert len(first.train) + len(first.val) + len(first.test) == 1797
    assert np.bincount(first.test.labels).min() >= 17  # stratified: every digit is present
    rows = lambda s: {img.tobytes() + bytes([lab]) for img, lab in zip(s.images, s.labels)}  # noqa: E731
    assert not rows(first.test) & rows(first.val)
    other = load_dataset(config.model_copy(update={"split_seed": 1}), resolve_data_dir(), False)
    assert not np.array_equal(first.val.labels, other.val.labels)


def test_per_class_split_is_the_reference_scripts_hold_out():
    """split_method: per_class holds out, class by class, default_rng(split_seed).choice of each class's indices."""
    config = DataConfig(dataset="digits", val_fraction=0.0, test_fraction=0.1, split_method="per_class", split_seed=3)
    data = load_dataset(config, resolve_data_dir(), False)
    from cifar_scratch.data import digits

    images, labels = digits.load()
    rng, held = np.random.default_rng(3), []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        held += list(rng.choice(members, round(0.1 * len(members)), replace=False))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    assert np.array_equal(data.test.images, images[mask]) and np.array_equal(data.test.labels, labels[mask])
    assert np.array_equal(data.train.images, images[~mask]) and np.array_equal(data.train.labels, labels[~mask])
    stratified = load_dataset(config.model_copy(update={"split_method": "stratified"}), resolve_data_dir(), False)
    assert not np.array_equal(stratified.test.labels, data.test.labels) or not np.array_equal(
        stratified.test.images, data.test.images
    )
    with pytest.raises(ConfigError, match="data.val_fraction: 0.001 of "):
        load_dataset(config.model_copy(update={"val_fraction": 0.001, "test_fraction": 0.01}), resolve_data_dir(), False)


def test_normalizer_is_float32_and_standardizes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    norm = Normalizer.fit(images, "standardize")
    batch = norm(images)
    assert batch.dtype == np.float32 and norm.mean.dtype == np.float32 and norm.scale.dtype == np.float32
    assert np.allclose(batch.reshape(-1, 3).mean(0), 0, atol=1e-4)
    assert np.allclose(batch.reshape(-1, 3).std(0), 1, atol=1e-3)
    assert np.allclose(Normalizer.fit(images, "scale")(images), images / np.float32(255))
    assert images.dtype == np.uint8  # the stored images are never converted in place


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAR_SCRATCH_DATA", raising=False)
    assert str(resolve_data_dir()) == "data"
    monkeypatch.setenv("CIFAR_SCRATCH_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir("elsewhere").name == "elsewhere"


def write_folder(root, splits=("train",), classes=("cats", "dogs"), per_class=3, size=(5, 6)):
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_from_folder_and_archive_with_cache(tmp_path):
    root = write_folder(tmp_path / "pets", splits=("train", "test"))
    cache = tmp_path / "cache"
    arrays = imagefolder.load(root, cache, progress=False)
    assert arrays["class_names"].tolist() == ["cats", "dogs"]
    assert arrays["train_images"].shape == (6, 5, 6, 3) and arrays["test_labels"].tolist() == [0, 0, 0, 1, 1, 1]
    first = Image.open(root / "train" / "cats" / "0.png")
    assert np.array_equal(arrays["train_images"][0], np.asarray(first))
    assert len(list(cache.glob("*.npz"))) == 1
    assert np.array_equal(imagefolder.load(root, cache, progress=False)["train_images"], arrays["train_images"])

    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="pets")
    from_archive = imagefolder.load(archive, cache, progress=False)
    assert np.array_equal(from_archive["train_images"], arrays["train_images"])


def test_image_folder_cache_is_rebuilt_when_corrupt_or_source_changes(tmp_path):
    root = write_folder(tmp_path / "pets")
    cache = tmp_path / "cache"
    imagefolder.load(root, cache, progress=False)
    (stored,) = cache.glob("*.npz")
    stored.write_bytes(b"partial")
    assert imagefolder.load(root, cache, progress=False)["train_images"].shape == (6, 5, 6, 3)
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(root / "train" / "dogs" / "9.png")
    assert imagefolder.load(root, cache, progress=False)["train_images"].shape == (7, 5, 6, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        imagefolder.load(tmp_path / "nope", tmp_path, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        imagefolder.load(tmp_path / "empty", tmp_path, progress=False)
    root = write_folder(tmp_path / "mixed")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train" / "cats" / "big.png")
    with pytest.raises(
        DataError,
        match=r"big.png is 9x9 pixels, .*0.png 6x5 \(width x height\): images of one dataset need one size; set data.image_size",
    ):
        imagefolder.load(root, tmp_path / "c", progress=False)


def test_archive_sidecar_checksum_is_verified(tmp_path):
    root = write_folder(tmp_path / "pets")
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="pets")
    (tmp_path / "pets.tar.gz.sha256").write_text("0" * 64 + "  pets.tar.gz\n")
    with pytest.raises(DataError, match="does not match"):
        imagefolder.load(archive, tmp_path / "c", progress=False)


def test_imagefolder_dataset_holds_out_test_when_missing(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=10)
    data = load_dataset(
        DataConfig(dataset="imagefolder", source=str(root), test_fraction=0.2, val_fraction=0.25),
        tmp_path / "data",
        progress=False,
    )
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 4)
    assert "held-out 20%" in data.description


def test_cifar_source_must_have_cifar_classes(tmp_path):
    root = write_folder(tmp_path / "pets")
    with pytest.raises(DataError, match="not the 10 CIFAR-10 classes"):
        load_dataset(DataConfig(source=str(root)), tmp_path / "data", progress=False)
    with pytest.raises(DataError, match="set data.source=official"):
        load_dataset(DataConfig(source=str(tmp_path / "missing.tar.gz")), tmp_path / "data", progress=False)


def test_split_len():
    assert len(Split(np.zeros((3, 1, 1, 1), np.uint8), np.zeros(3, np.int64))) == 3
