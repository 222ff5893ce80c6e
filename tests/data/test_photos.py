"""A folder of one's own photos, as people have them: flat or split, any size and mode, EXIF-rotated,
with the clutter systems leave; and predict resizing a new photo as training did."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cifar_scratch as cs
from cifar_scratch.cli import app
from cifar_scratch.config import DataConfig
from cifar_scratch.data import imagefolder, load_dataset
from cifar_scratch.data import images as pictures
from cifar_scratch.errors import ConfigError, DataError
from cifar_scratch.inference.predict import load_image
from tests.conftest import REPO

EXIF_ORIENTATION = 0x0112


def photo(rng, width, height, mode="RGB", tint=(0, 0, 0)):
    """A noisy image of one class's colour."""
    pixels = np.clip(rng.normal(128, 40, (height, width, 3)) + np.array(tint), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image.convert(mode) if mode != "RGB" else image


def save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def rotated_jpeg(image, path):
    """``image`` stored on its side with EXIF orientation 6 (the viewer turns it 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return save(image.transpose(Image.Transpose.ROTATE_90), path, exif=exif, quality=95)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A flat folder of 240 photos of 3 classes: mixed sizes and formats, some EXIF-rotated, RGBA, gray,
    palette and CMYK ones, a stray text file and the files systems leave behind."""
    root = tmp_path_factory.mktemp("photos") / "my photos"
    rng = np.random.default_rng(0)
    tints = {"cats": (80, -40, -40), "dogs": (-40, 80, -40), "owls": (-40, -40, 80)}
    for cls, tint in tints.items():
        for i in range(80):
            width, height = int(rng.integers(40, 160)), int(rng.integers(40, 160))
            image = photo(rng, width, height, tint=tint)
            kind = i % 8
            if kind == 0:
                rotated_jpeg(image, root / cls / f"{i:03d}.jpg")
            elif kind == 1:
                rgba = image.convert("RGBA")
                rgba.putalpha(128)
                save(rgba, root / cls / f"{i:03d}.png")
            elif kind == 2:
                save(image.convert("L"), root / cls / f"{i:03d}.jpg")
            elif kind == 3:
                save(image.convert("P"), root / cls / f"{i:03d}.gif")
            elif kind == 4:
                save(image.convert("CMYK"), root / cls / f"{i:03d}.jpg")
            else:
                save(image, root / cls / f"{i:03d}.jpeg", quality=90)
    (root / "cats" / "notes.txt").write_text("taken in the garden")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dogs" / "._001.jpeg").write_bytes(b"\0\5\26\7")
    (root / "owls" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    return root


@pytest.mark.slow
def test_a_flat_folder_of_mixed_photos_trains_at_one_size_and_predict_resizes_the_same(photos, tmp_path):
    tree = {
        "name": "photos",
        "data": {
            "dataset": "imagefolder",
            "source": str(photos),
            "image_size": [64, 64],
            "val_fraction": 0.1,
            "test_fraction": 0.2,
        },
        "model": {"layers": ["flatten", {"type": "dense", "units": 32}, "relu", "dense"]},
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "training": {"epochs": 3, "batch_size": 32},
    }
    run = cs.train(tree, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    assert run.info["image_shape"] == [64, 64, 3] and run.info["class_names"] == ["cats", "dogs", "owls"]
    assert run.info["sizes"] == {"train": 172, "val": 20, "test": 48}, "240 photos; the text file and clutter left out"
    assert "1 file that is no image ignored: notes.txt" in run.info["dataset"]
    assert run.metrics["test_accuracy"] > 0.6, "the classes differ by colour: learnable after resizing"
    assert run.config.data.image_size == (64, 64)

    # A new photo of another size and orientation: predict makes it as the training loader would have.
    new = rotated_jpeg(photo(np.random.default_rng(9), 300, 170, tint=(80, -40, -40)), tmp_path / "one" / "cats" / "new.jpg")
    save(photo(np.random.default_rng(10), 30, 30), tmp_path / "one" / "dogs" / "other.png")
    arrays = imagefolder.load(tmp_path / "one", tmp_path / "cache", progress=False, size=(64, 64))
    assert np.array_equal(load_image(new, (64, 64, 3)), arrays["train_images"][0])
    assert run.predict(load_image(new, (64, 64, 3))[None]).argmax() == 0


def test_exif_orientation_is_applied():
    image = Image.fromarray(np.concatenate([np.zeros((20, 10, 3)), np.full((20, 10, 3), 255)], axis=1).astype(np.uint8))
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored as is; shown turned 90 degrees clockwise: left half on top
    image.save(buffer, "JPEG", exif=exif, quality=95)
    with pictures.open_image(buffer.getvalue(), "x.jpg", 10**6) as opened:
        upright = pictures.to_pixels(opened, "x.jpg", 3)
    assert upright.shape == (20, 20, 3)
    assert upright[:8].mean() < 30 and upright[-8:].mean() > 220


def test_modes_follow_one_rule(tmp_path):
    rng = np.random.default_rng(1)
    base = photo(rng, 12, 10)
    rgba = base.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: the alpha is dropped, the colours stay
    for name, image in (("rgba.png", rgba), ("gray.png", base.convert("L")), ("rgb.png", base)):
        save(image, tmp_path / "mixed" / "a" / name)
        save(image, tmp_path / "mixed" / "b" / name)
    arrays = imagefolder.load(tmp_path / "mixed", tmp_path / "cache", progress=False)
    assert arrays["train_images"].shape == (6, 10, 12, 3), "one colour image makes the dataset RGB"
    rows = dict(zip(sorted(["gray.png", "rgb.png", "rgba.png"]), arrays["train_images"][:3]))
    assert np.array_equal(rows["rgba.png"], rows["rgb.png"])
    assert np.all(rows["gray.png"][..., 0] == rows["gray.png"][..., 2]), "gray replicated into three channels"
    for cls in ("a", "b"):
        save(base.convert("L"), tmp_path / "gray" / cls / "x.png")
    assert imagefolder.load(tmp_path / "gray", tmp_path / "cache", progress=False)["train_images"].shape == (2, 10, 12, 1)


def test_a_val_folder_is_used_not_ignored(tmp_path):
    rng = np.random.default_rng(2)
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(count):
                save(photo(rng, 8, 8), tmp_path / "split" / split / cls / f"{i}.png")
    data = load_dataset(DataConfig(dataset="imagefolder", source=str(tmp_path / "split")), tmp_path / "data", progress=False)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 4, 6)
    assert "validation = the source's val/ split" in data.description


def test_mixed_sizes_without_image_size_name_two_sizes_and_the_key(tmp_path):
    rng = np.random.default_rng(3)
    save(photo(rng, 120, 90), tmp_path / "p" / "a" / "1.jpg")
    save(photo(rng, 50, 40), tmp_path / "p" / "b" / "2.jpg")
    with pytest.raises(DataError) as info:
        imagefolder.load(tmp_path / "p", tmp_path / "cache", progress=False)
    message = str(info.value)
    assert "2.jpg is 50x40 pixels" in message and "1.jpg 120x90 (width x height)" in message
    assert "set data.image_size: [H, W]" in message and "(e.g. [90, 120])" in message


def test_an_empty_class_folder_is_named(tmp_path):
    save(photo(np.random.default_rng(4), 8, 8), tmp_path / "p" / "a" / "1.png")
    save(photo(np.random.default_rng(5), 8, 8), tmp_path / "p" / "b" / "1.png")
    (tmp_path / "p" / "ghosts").mkdir()
    with pytest.raises(DataError, match=r"p/ghosts: a class folder with no images in it"):
        imagefolder.load(tmp_path / "p", tmp_path / "cache", progress=False)


def test_image_size_is_for_image_folders():
    with pytest.raises(Exception, match="image_size: resizes the images of an imagefolder dataset, not of digits"):
        DataConfig(dataset="digits", image_size=[32, 32])
    with pytest.raises(ConfigError, match="data.image_size.0: Input should be greater than or equal to 1"):
        cs.config_of({"data": {"dataset": "imagefolder", "source": "x", "image_size": [0, 4]}, "model": {"layers": ["dense"]}})


@pytest.mark.slow
def test_the_shipped_photo_config_checks_and_trains_on_a_folder_beside_it(photos, tmp_path):
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "my_photos.yaml", tmp_path / "configs" / "my_photos.yaml")
    shutil.copytree(photos, tmp_path / "my_photos")
    config = tmp_path / "configs" / "my_photos.yaml"
    runner = CliRunner()
    checked = runner.invoke(
        app, ["gradcheck", str(config), "--max-elements", "4"], env={"CIFAR_SCRATCH_DATA": str(tmp_path / "data")}
    )
    assert checked.exit_code == 0, checked.output
    trained = runner.invoke(
        app,
        ["train", str(config), "training.epochs=1", "--quiet", "--runs-dir", str(tmp_path / "runs")],
        env={"CIFAR_SCRATCH_DATA": str(tmp_path / "data")},
    )
    assert trained.exit_code == 0, trained.output
    run = cs.load_run(trained.output.strip().splitlines()[-1])
    assert run.info["image_shape"] == [64, 64, 3] and len(run.history) == 1
