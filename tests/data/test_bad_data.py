"""Broken image data of every kind found by the hostile campaign: one DataError or ConfigError line each."""

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from cifar_scratch.config import DataConfig
from cifar_scratch.data import imagefolder, load_dataset, resolve_data_dir
from cifar_scratch.data import images as pictures
from cifar_scratch.errors import ConfigError, DataError


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def folder_with(tmp_path, name: str, data: bytes):
    root = tmp_path / "images"
    for cls in ("cats", "dogs"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            (root / "train" / cls / f"{i}.png").write_bytes(png(np.full((5, 6, 3), 40 * i, np.uint8)))
    (root / "train" / "cats" / name).write_bytes(data)
    return root


def test_truncated_png_is_a_data_error(tmp_path):
    whole = png(np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8))
    root = folder_with(tmp_path, "broken.png", whole[:-30])
    with pytest.raises(DataError, match="broken.png: cannot decode image"):
        imagefolder.load(root, tmp_path / "cache", progress=False)


@pytest.mark.parametrize("error", [SyntaxError("broken PNG file"), Image.DecompressionBombError("too big"), IndexError("x")])
def test_whatever_pillow_raises_is_a_data_error(tmp_path, monkeypatch, error):
    odd = png(np.full((5, 6, 3), 7, np.uint8))
    root = folder_with(tmp_path, "odd.png", odd)
    real_open = Image.open

    def fragile_open(stream, *args, **kwargs):
        if stream.getvalue() == odd:
            raise error
        return real_open(stream, *args, **kwargs)

    monkeypatch.setattr(pictures.Image, "open", fragile_open)
    with pytest.raises(DataError, match=f"odd.png: not a readable image \\({type(error).__name__}"):
        imagefolder.load(root, tmp_path / "cache", progress=False)


def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefolder, "MAX_PIXELS", 4096 * 4096)  # 100 megapixels: too large a file to make here
    root = folder_with(tmp_path, "huge.png", png(np.zeros((4100, 4100), np.uint8)))
    with pytest.raises(DataError, match="huge.png: a 4100x4100 image is over 16,777,216 pixels"):
        imagefolder.load(root, tmp_path / "cache", progress=False)


def test_sixteen_bit_images_keep_their_range(tmp_path):
    root = tmp_path / "gray16"
    for cls, value in (("dark", 1000), ("bright", 60000)):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(2):
            (root / "train" / cls / f"{i}.png").write_bytes(png(np.full((4, 4), value + i, np.uint16)))
    arrays = imagefolder.load(root, tmp_path / "cache", progress=False)
    values = {int(arrays["train_images"][arrays["train_labels"] == k].max()) for k in (0, 1)}
    assert values == {60001 >> 8, 1001 >> 8}, "not clipped to 0/255"


def test_empty_sidecar_is_a_clear_error(tmp_path):
    root = folder_with(tmp_path, "3.png", png(np.zeros((5, 6, 3), np.uint8)))
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
    (tmp_path / "images.tar.gz.sha256").write_text("")
    with pytest.raises(DataError, match="does not hold a SHA-256 checksum"):
        imagefolder.load(archive, tmp_path / "cache", progress=False)


def test_truncated_and_fake_archives_are_data_errors(tmp_path):
    root = tmp_path / "big"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(40):
            (root / "train" / cls / f"{i}.png").write_bytes(png(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="images.tar.gz: (not a readable|the archive is damaged)"):
        imagefolder.load(archive, tmp_path / "cache", progress=False)
    archive.write_bytes(os.urandom(5000))
    with pytest.raises(DataError, match="not a readable .tar/.tar.gz archive"):
        imagefolder.load(archive, tmp_path / "cache", progress=False)


def test_symlink_member_named_like_an_image_is_refused(tmp_path):
    root = folder_with(tmp_path, "3.png", png(np.zeros((5, 6, 3), np.uint8)))
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "train", arcname="train")
        link = tarfile.TarInfo("train/cats/4.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="refusing archive member 'train/cats/4.png': a link"):
        imagefolder.load(archive, tmp_path / "cache", progress=False)


@pytest.mark.parametrize("fraction, key", [(0.0001, "val_fraction"), (0.9999, "test_fraction")])
def test_split_fractions_that_leave_a_class_out_are_config_errors(fraction, key):
    config = DataConfig(dataset="digits", **{key: fraction})
    with pytest.raises(ConfigError, match=f"data.{key}: .* needs at least one image of each of the 10 classes"):
        load_dataset(config, resolve_data_dir(), progress=False)


def test_one_class_dataset_is_refused(tmp_path):
    root = tmp_path / "one"
    (root / "train" / "only").mkdir(parents=True)
    for i in range(20):
        (root / "train" / "only" / f"{i}.png").write_bytes(png(np.full((4, 4, 3), i, np.uint8)))
    config = DataConfig(dataset="imagefolder", source=str(root), val_fraction=0.0, test_fraction=0.1)
    with pytest.raises(DataError, match="training split holds 1 class \\(only\\): a classifier needs at least 2"):
        load_dataset(config, tmp_path / "data", progress=False)
