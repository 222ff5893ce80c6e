"""Runs started together on one empty data dir: one process does the work, the others wait and reuse it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.data.helpers import make_cifar_archive
from tests.data.test_dataset import write_folder

CIFAR_SCRIPT = """
import json, sys
from cifar_scratch.data import cifar10
from cifar_scratch.data.download import RemoteFile
from pathlib import Path
url, md5, checksums, data_dir = json.loads(sys.argv[1])
data_dir = Path(data_dir)
folder = cifar10.prepare(data_dir, True, True, cifar10.Release(RemoteFile("cifar-10-python.tar.gz", (url,), md5), checksums))
(train_x, train_y), _, _ = cifar10.load(folder)
print(int(train_x.sum()))
"""

IMAGEFOLDER_SCRIPT = """
import json, sys
from cifar_scratch.data import imagefolder
from pathlib import Path
source, cache = map(Path, json.loads(sys.argv[1]))
print(int(imagefolder.load(source, cache, progress=True)["train_images"].sum()))
"""


def run_four(script: str, argument: list) -> list[tuple[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(argument)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in results]
    return results


@pytest.mark.slow
def test_four_processes_download_and_extract_cifar_once(tmp_path, http_server):
    archive, archive_md5, checksums, images, _ = make_cifar_archive(http_server.root, per_batch=200)
    http_server.set_delay(0.5)
    data_dir = tmp_path / "data"
    results = run_four(CIFAR_SCRIPT, [f"{http_server.url}/{archive.name}", archive_md5, checksums, str(data_dir)])
    assert {out.strip() for out, _ in results} == {str(int(images.sum()))}
    assert dict(http_server.requests) == {f"/{archive.name}": 1}
    assert sorted(p.name for p in data_dir.iterdir()) == [".locks", "cifar-10-batches-py", "cifar-10-python.tar.gz"]


@pytest.mark.slow
def test_four_processes_decode_an_image_folder_once(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=1000, size=(32, 32))  # slow enough to overlap
    cache = tmp_path / "cache"
    results = run_four(IMAGEFOLDER_SCRIPT, [str(root), str(cache)])
    assert len({out for out, _ in results}) == 1
    decoders = [err for _, err in results if "decode pets" in err]
    assert len(decoders) == 1, "exactly one process decodes; the others read its cache"
    assert sum("waiting for another process" in err for _, err in results) >= 1
    assert [p.suffix for p in cache.iterdir() if p.name != ".locks"] == [".npz"]
    assert np.load(next(cache.glob("*.npz")))["train_images"].shape[0] == 2000
