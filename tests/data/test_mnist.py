"""MNIST / Fashion-MNIST: mirrors, checksums, local folders, the real Fashion-MNIST files, concurrent preparation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar_scratch.config import DataConfig
from cifar_scratch.data import load_dataset, mnist
from cifar_scratch.errors import DataError
from tests.conftest import REPO
from tests.data.helpers import make_mnist_files, mnist_release

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
# CI installs Debian's dataset-fashion-mnist and sets this, so there the real-data test must run, not skip.
REQUIRE_REALDATA = os.environ.get("CIFAR_SCRATCH_REQUIRE_REALDATA") == "1"


def served_release(http_server, **kwargs):
    table, arrays = make_mnist_files(http_server.root / "good", **kwargs)
    mirrors = (f"{http_server.url}/broken/", f"{http_server.url}/good/")  # the first mirror answers 404
    return mnist_release(table, mirrors), arrays


def test_download_falls_back_to_the_second_mirror(tmp_path, http_server):
    release, expected = served_release(http_server)
    arrays, folder = mnist.load(release, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / release.folder
    assert arrays["train_images"].shape == (60, 28, 28, 1) and arrays["train_images"].dtype == np.uint8
    assert arrays["train_labels"].dtype == np.int64 and arrays["test_images"].shape == (20, 28, 28, 1)
    for key in expected:
        assert np.array_equal(arrays[key].reshape(expected[key].shape), expected[key]), key
    assert all(http_server.requests[f"/broken/{f.remote.filename}"] == 1 for f in release.files.values())
    # A second load reads the verified files without any request.
    before = sum(http_server.requests.values())
    mnist.load(release, tmp_path / "data", progress=False)
    assert sum(http_server.requests.values()) == before


def test_corrupt_file_in_the_data_dir_is_fetched_again(tmp_path, http_server):
    release, expected = served_release(http_server)
    mnist.load(release, tmp_path / "data", progress=False)
    target = tmp_path / "data" / release.folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:100])  # truncated
    arrays, _ = mnist.load(release, tmp_path / "data", progress=False)
    assert np.array_equal(arrays["train_images"][..., 0], expected["train_images"])
    assert http_server.requests["/good/train-images-idx3-ubyte.gz"] == 2


def test_local_folder_with_unpacked_or_recompressed_files(tmp_path):
    """Packagers recompress or unpack the files: the content checksum accepts them."""
    table, expected = make_mnist_files(tmp_path / "unpacked", compress=False)
    release = mnist_release(table, ("http://127.0.0.1:9/",))
    arrays, folder = mnist.load(release, tmp_path / "data", download_missing=False, source=tmp_path / "unpacked")
    assert folder == tmp_path / "unpacked" and np.array_equal(arrays["test_labels"], expected["test_labels"])
    assert not (tmp_path / "data").exists(), "reading a local folder writes nothing"


def test_local_folder_with_a_foreign_file_is_refused_and_left_alone(tmp_path):
    table, _ = make_mnist_files(tmp_path / "mine")
    release = mnist_release(table, ("http://127.0.0.1:9/",))
    (tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "mine" / "train-labels-idx1-ubyte.gz").write_bytes(b"not the file")
    with pytest.raises(DataError) as info:
        mnist.load(release, tmp_path / "data", source=tmp_path / "mine")
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz matches neither published MD5" in message
    assert "t10k-labels-idx1-ubyte.gz (or t10k-labels-idx1-ubyte) is missing" in message
    assert (tmp_path / "mine" / "train-labels-idx1-ubyte.gz").read_bytes() == b"not the file"


def test_without_network_the_error_says_where_to_put_the_files(tmp_path):
    table, _ = make_mnist_files(tmp_path / "elsewhere")
    release = mnist_release(table, ("http://127.0.0.1:9/",))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz not found: download it from http://127.0.0.1:9/"):
        mnist.load(release, tmp_path / "data", download_missing=False)


def test_shape_checks_catch_mismatched_files(tmp_path):
    table, _ = make_mnist_files(tmp_path / "odd", n_train=60)
    # Swap in a label file for 59 images: checksums are per file, so only the cross-check can notice.
    other, _ = make_mnist_files(tmp_path / "other", n_train=59)
    (tmp_path / "odd" / "train-labels-idx1-ubyte.gz").write_bytes(
        (tmp_path / "other" / "train-labels-idx1-ubyte.gz").read_bytes()
    )
    table["train_labels"] = other["train_labels"]
    with pytest.raises(DataError, match="60 train images but 59 labels"):
        mnist.load(mnist_release(table, ()), tmp_path / "data", source=tmp_path / "odd")


PREPARE_SCRIPT = """
import json, sys
from tests.data.helpers import mnist_release
from cifar_scratch.data import mnist
table, mirrors, data_dir = json.loads(sys.argv[1])
arrays, folder = mnist.load(mnist_release(table, tuple(mirrors)), data_dir, progress=True)
print(json.dumps({k: int(v.sum()) for k, v in arrays.items()}))
"""


@pytest.mark.slow
def test_four_concurrent_processes_share_one_download(tmp_path, http_server):
    """Four runs on an empty data dir: all succeed, every file is downloaded exactly once, nothing partial is left."""
    table, expected = make_mnist_files(http_server.root / "good", n_train=3000)
    http_server.set_delay(0.3)  # keep the first download in flight while the others start
    mirrors = [f"{http_server.url}/good/"]
    data_dir = tmp_path / "data"
    argument = json.dumps([table, mirrors, str(data_dir)])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE_SCRIPT, argument],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err for _, err in results]
    sums = {k: int(v.sum()) for k, v in expected.items()}
    assert all(json.loads(out) == sums for out, _ in results)
    assert {path: count for path, count in http_server.requests.items()} == {f"/good/{t[0]}": 1 for t in table.values()}
    assert sum("waiting for another process" in err for _, err in results) >= 1
    leftovers = [p.name for p in (data_dir / "tiny-mnist").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_dataset_config_reads_a_source_folder(tmp_path):
    table, _ = make_mnist_files(tmp_path / "files", n_train=100)
    # A source folder is checked against the real release's checksums: these files are refused by name.
    config = DataConfig(dataset="mnist", source=str(tmp_path / "files"))
    with pytest.raises(DataError, match="does not hold the official MNIST files"):
        load_dataset(config, tmp_path / "data", progress=False)


@pytest.mark.realdata
@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir() and not REQUIRE_REALDATA,
    reason=f"Fashion-MNIST is not installed at {DEBIAN_FASHION} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    config = DataConfig(dataset="fashion_mnist", classes=["Sneaker", "Bag", "Ankle boot"], download=False)
    dataset = load_dataset(config, tmp_path / "empty-data-dir", progress=False)
    assert dataset.class_names == ("Sneaker", "Bag", "Ankle boot")
    assert dataset.image_shape == (28, 28, 1) and dataset.train.images.dtype == np.uint8
    assert len(dataset.test) == 3000 and len(dataset.train) + len(dataset.val) == 18000  # 6,000 per class
    assert np.bincount(dataset.test.labels).tolist() == [1000, 1000, 1000]
    assert str(DEBIAN_FASHION) in dataset.description
    full = load_dataset(DataConfig(dataset="fashion_mnist", download=False), tmp_path / "empty-data-dir", progress=False)
    assert len(full.test) == 10000 and len(full.train) == 54000 and len(full.val) == 6000
    # Published first training label (Ankle boot) and mean pixel of the training set.
    assert full.class_names[9] == "Ankle boot"
    assert not (tmp_path / "empty-data-dir").exists(), "the system copy is read in place"
