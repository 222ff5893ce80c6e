"""Builders of small datasets in the official on-disk formats."""

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from cifar_scratch.data import cifar10


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar_batch_bytes(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the official release stores it: dict of bytes keys, (N, 3072) uint8 channel-planar rows."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {b"batch_label": b"testing batch", b"labels": list(labels), b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=2)


def make_cifar_archive(directory: Path, per_batch: int = 20, seed: int = 0):
    """Write cifar-10-python.tar.gz with 5 train batches + test batch + meta.

    Returns (archive path, archive md5, member checksums, train images, train labels).
    """
    rng = np.random.default_rng(seed)
    files, checksums = {}, {}
    all_images, all_labels = [], []
    for name in [*cifar10.TRAIN_FILES, "test_batch"]:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(i % 10) for i in range(per_batch)]
        files[name] = cifar_batch_bytes(images, labels)
        if name != "test_batch":
            all_images.append(images)
            all_labels += labels
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in cifar10.CLASSES],
                                          b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
            checksums[name] = md5(content)
    archive = directory / cifar10.ARCHIVE.filename
    archive.write_bytes(buffer.getvalue())
    return archive, md5(buffer.getvalue()), checksums, np.concatenate(all_images), np.array(all_labels)


def add_tar_member(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))
