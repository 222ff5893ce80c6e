"""data.source as a list of candidates: the shipped CIFAR configs read the official release where it is in the
data dir or downloadable, else the JPEG copy beside the checkout; config.yaml records which one ran."""

import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cifar_scratch.cli import app
from cifar_scratch.config import DataConfig, load_config
from cifar_scratch.data import cifar10, load_dataset
from cifar_scratch.data.download import RemoteFile
from cifar_scratch.errors import ConfigError, DataError, DataUnavailable
from tests.conftest import REPO, SHARED_JPEG
from tests.data.helpers import make_cifar_archive
from tests.data.test_dataset import write_folder

runner = CliRunner()
#: Nothing listens on port 9 (discard) of 127.0.0.1: a download from it fails at once, as offline.
OFFLINE_URL = "http://127.0.0.1:9/cifar-10-python.tar.gz"


def official_release(monkeypatch, url: str, archive_md5: str = "0" * 32, checksums: dict | None = None) -> None:
    """Point the official CIFAR-10 release at ``url`` (the tests never reach the real host)."""
    remote = RemoteFile(cifar10.ARCHIVE.filename, (url,), archive_md5)
    monkeypatch.setattr(cifar10, "OFFICIAL", cifar10.Release(remote, checksums or cifar10.OFFICIAL.checksums))


def shipped_copy(tmp_path):
    """configs/ copied into a project folder with no ../shared beside it, as on a user's machine."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "configs", project / "configs")
    return project


def test_the_first_source_that_is_there_is_used(tmp_path):
    pets = write_folder(tmp_path / "pets")
    config = DataConfig(dataset="imagefolder", source=[str(tmp_path / "missing"), str(pets)], val_fraction=0.0, test_fraction=0.5)
    dataset = load_dataset(config, tmp_path / "data", progress=False)
    assert dataset.source == str(pets) and dataset.class_names == ("cats", "dogs")
    assert dataset.passed_over == (f"{tmp_path / 'missing'} does not exist",)


def test_a_source_that_is_there_but_wrong_stops_the_run(tmp_path):
    pets = write_folder(tmp_path / "pets")  # classes cats, dogs: not CIFAR-10's
    with pytest.raises(DataError, match="not the 10 CIFAR-10 classes"):
        load_dataset(DataConfig(source=[str(pets), str(SHARED_JPEG)]), tmp_path / "data", progress=False)


def test_no_source_available_names_each_and_where_the_official_archive_goes(tmp_path, monkeypatch):
    official_release(monkeypatch, OFFLINE_URL)
    config = DataConfig(source=["official", str(tmp_path / "copy.tar.gz")])
    with pytest.raises(DataUnavailable) as caught:
        load_dataset(config, tmp_path / "data", progress=False)
    message = str(caught.value)
    assert message.startswith("data.source: none of its 2 sources is available: official: could not download")
    assert f"put it at {tmp_path / 'data' / 'cifar-10-python.tar.gz'}" in message
    assert message.endswith(f"; {tmp_path / 'copy.tar.gz'} does not exist")


def test_source_lists_are_validated_and_made_absolute(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": ["official", "../copy"]}, "model": {"layers": ["flatten", "dense"]}}))
    assert load_config(path).data.source == ["official", str(tmp_path / "copy")]
    for source, error in (
        ([], "data.source: give at least one source"),
        (["official", "official"], "data.source: the same source is listed twice"),
    ):
        with pytest.raises(ConfigError, match=error):
            load_config(path, [f"data.source={source}"])
    with pytest.raises(ConfigError, match="the imagefolder dataset has no official release"):
        load_config(path, ["data.dataset=imagefolder", "data.source=[official]"])


def test_shipped_config_offline_without_the_copy_is_one_error_line(tmp_path, monkeypatch):
    official_release(monkeypatch, OFFLINE_URL)
    project = shipped_copy(tmp_path)
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["train", "configs/mlp3class.yaml", "--data-dir", "data"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith(
        "error: data.source: none of its 2 sources is available: official: could not download cifar-10-python.tar.gz"
    )
    assert f"put it at {project / 'data' / 'cifar-10-python.tar.gz'}" in line
    assert not (project / "runs").exists(), "a refused run leaves no folder"


def test_shipped_config_downloads_verifies_and_trains_on_the_official_release(tmp_path, http_root, monkeypatch):
    www, url = http_root
    archive, archive_md5, checksums, *_ = make_cifar_archive(www, per_batch=60)
    official_release(monkeypatch, f"{url}/{archive.name}", archive_md5, checksums)
    project = shipped_copy(tmp_path)
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["train", "configs/mlp3class.yaml", "training.epochs=1", "--data-dir", "data"])
    assert result.exit_code == 0, result.output
    assert "CIFAR-10 (official python release" in result.output and "skipped" not in result.output
    run_dir = project / result.output.strip().splitlines()[-1]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["source"] == "official"
    assert (project / "data" / "cifar-10-batches-py" / "data_batch_1").is_file()
    # A resume reads the recorded source only: with the release gone it fails instead of switching to another.
    shutil.rmtree(project / "data" / "cifar-10-batches-py")
    official_release(monkeypatch, OFFLINE_URL, archive_md5, checksums)
    (project / "data" / "cifar-10-python.tar.gz").unlink()
    result = runner.invoke(app, ["train", "--resume", str(run_dir), "training.epochs=2"])
    assert result.exit_code == 1 and "error: could not download cifar-10-python.tar.gz" in result.output


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_JPEG.exists(), reason=f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPEG}")
def test_shipped_config_offline_uses_the_jpeg_copy_beside_the_checkout(tmp_path, monkeypatch):
    official_release(monkeypatch, OFFLINE_URL)  # offline, as this machine and CI are, whatever the network
    data_dir = REPO / "data" if REPO.joinpath("data").is_dir() else tmp_path / "data"  # reuse the decoded cache
    result = runner.invoke(
        app,
        [
            "train",
            str(REPO / "configs" / "mlp3class.yaml"),
            "training.epochs=1",
            "--runs-dir",
            str(tmp_path),
            "--data-dir",
            str(data_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "data.source: skipped official: could not download cifar-10-python.tar.gz" in result.output
    run_dir = tmp_path / result.output.strip().splitlines()[-1]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["source"] == str(SHARED_JPEG.resolve())
    assert np.isfinite(yaml.safe_load((run_dir / "metrics.json").read_text())["test_accuracy"])
