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
    batch = {
        b"batch_label": b"testing batch",
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"img{i}.png".encode() for i in range(len(labels))],
    }
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
    files["batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in cifar10.CLASSES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=2
    )
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


def idx_bytes(array: np.ndarray) -> bytes:
    """An array in the IDX format (big-endian header and values)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def make_mnist_files(directory: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, compress: bool = True):
    """The four MNIST-style files (28x28 images, labels 0..9) in ``directory``.

    Returns ({key: (filename.gz, md5 of the .gz, md5 of the content)}, {key: array}).
    """
    import gzip

    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    directory.mkdir(parents=True, exist_ok=True)
    table = {}
    for key, array in arrays.items():
        content = idx_bytes(array)
        packed = gzip.compress(content, mtime=0)
        (directory / (names[key] + (".gz" if compress else ""))).write_bytes(packed if compress else content)
        table[key] = (names[key] + ".gz", md5(packed), md5(content))
    return table, arrays


def mnist_release(table: dict, mirrors: tuple[str, ...], folder: str = "tiny-mnist"):
    """A Release like mnist.MNIST, for the files made by :func:`make_mnist_files`."""
    from cifar_scratch.data import mnist
    from cifar_scratch.data.download import RemoteFile

    files = {
        key: mnist.IdxFile(RemoteFile(name, tuple(m + name for m in mirrors), gz), raw) for key, (name, gz, raw) in table.items()
    }
    return mnist.Release("Tiny MNIST", folder, tuple(str(d) for d in range(10)), files)
