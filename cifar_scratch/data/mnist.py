"""MNIST and Fashion-MNIST from their four official IDX files.

Where the files come from, in order:

1. ``data.source``, if set: a folder holding the four files, gzipped or not (read only; never modified).
2. ``<data_dir>/<release.folder>/``, where earlier downloads went.
3. Folders where operating-system packages install the official files, e.g. Debian's
   ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``.
4. A download into (2), mirror after mirror, under the data dir's lock.

Every file is checked against a published checksum: the MD5 of the ``.gz`` as served, or the MD5
of its decompressed content (packagers recompress the files, which changes only the former).
Images come out as (N, 28, 28, 1) uint8, labels as (N,) int64.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_scratch.data.download import RemoteFile, download, set_aside
from cifar_scratch.data.idx import parse_idx, unpack
from cifar_scratch.data.lock import data_lock
from cifar_scratch.errors import DataError, DataUnavailable


@dataclass(frozen=True)
class IdxFile:
    remote: RemoteFile  # the .gz as published, with the publisher's MD5
    raw_md5: str  # MD5 of the decompressed IDX content

    @property
    def name(self) -> str:
        return self.remote.filename.removesuffix(".gz")


@dataclass(frozen=True)
class Release:
    title: str
    folder: str
    classes: tuple[str, ...]
    files: dict[str, IdxFile]  # keys: train_images, train_labels, test_images, test_labels
    system_folders: tuple[str, ...] = ()


def _release(title: str, folder: str, classes: tuple[str, ...], mirrors: tuple[str, ...], md5s: dict, system=()) -> Release:
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    files = {
        key: IdxFile(RemoteFile(filename, tuple(m + filename for m in mirrors), md5s[key][0]), md5s[key][1])
        for key, filename in names.items()
    }
    return Release(title, folder, classes, files, tuple(system))


# (MD5 of the .gz, MD5 of its content). The .gz sums are torchvision's; the content sums were
# checked against Debian's recompressed Fashion-MNIST files and a third-party table.
MNIST = _release(
    "MNIST",
    "mnist",
    tuple(str(d) for d in range(10)),
    (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # yann.lecun.com now refuses downloads
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    {
        "train_images": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        "train_labels": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        "test_images": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        "test_labels": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    },
)
FASHION_MNIST = _release(
    "Fashion-MNIST",
    "fashion-mnist",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    {
        "train_images": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train_labels": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
        "test_images": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
        "test_labels": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
    },
    system=("/usr/share/datasets/fashion-mnist",),
)
RELEASES = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}

Arrays = dict[str, np.ndarray]


def _find(folder: Path, file: IdxFile) -> Path | None:
    for candidate in (folder / file.remote.filename, folder / file.name):
        if candidate.is_file():
            return candidate
    return None


def _read_verified(path: Path, file: IdxFile) -> np.ndarray | None:
    """The parsed array, or None when the file matches neither published checksum."""
    packed = path.read_bytes()
    if hashlib.md5(packed).hexdigest() == file.remote.md5:
        return parse_idx(unpack(packed, str(path)), str(path))
    try:
        content = unpack(packed, str(path))
    except DataError:  # a truncated or damaged .gz: no checksum can match
        return None
    return parse_idx(content, str(path)) if hashlib.md5(content).hexdigest() == file.raw_md5 else None


def _read_folder(folder: Path, release: Release) -> Arrays | None:
    """All four arrays from ``folder``, or None when a file is missing or fails its checksum."""
    arrays = {}
    for key, file in release.files.items():
        path = _find(folder, file)
        array = _read_verified(path, file) if path else None
        if array is None:
            return None
        arrays[key] = array
    return _check_shapes(arrays, folder)


def _check_shapes(arrays: Arrays, folder: Path) -> Arrays:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(f"{folder}: {split} files must be uint8 images (N, H, W) and uint8 labels (N,)")
        if len(images) != len(labels):
            raise DataError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise DataError(f"{folder}: {split} labels must lie in 0..9 (found {labels.max()})")
    return {
        "train_images": arrays["train_images"][..., None],
        "train_labels": arrays["train_labels"].astype(np.int64),
        "test_images": arrays["test_images"][..., None],
        "test_labels": arrays["test_labels"].astype(np.int64),
    }


def _explain(folder: Path, release: Release) -> str:
    problems = []
    for file in release.files.values():
        path = _find(folder, file)
        if path is None:
            problems.append(f"{file.remote.filename} (or {file.name}) is missing")
        elif _read_verified(path, file) is None:
            problems.append(f"{path.name} matches neither published MD5 ({file.remote.md5} packed, {file.raw_md5} unpacked)")
    return "; ".join(problems)


def load(
    release: Release, data_dir: Path, download_missing: bool = True, progress: bool = True, source: Path | None = None
) -> tuple[Arrays, Path]:
    """-> ({train,test}_{images,labels}, the folder they were read from). See the module docstring for the search order."""
    if source is not None:
        source = Path(source).expanduser()
        if not source.exists():
            raise DataUnavailable(f"data.source: {source} does not exist")
        arrays = _read_folder(source, release) if source.is_dir() else None
        if arrays is None:
            detail = _explain(source, release) if source.is_dir() else "a file, not a folder"
            raise DataError(f"data.source: {source} does not hold the official {release.title} files: {detail}")
        return arrays, source
    own = Path(data_dir) / release.folder
    for folder in (own, *map(Path, release.system_folders)):
        if folder.is_dir() and (arrays := _read_folder(folder, release)) is not None:
            return arrays, folder
    with data_lock(data_dir, release.folder, progress):
        # Another process may have finished while this one waited: download only what is still missing.
        arrays = {}
        for key, file in release.files.items():
            path = _find(own, file)
            array = _read_verified(path, file) if path is not None else None
            if array is None:
                if path is not None:
                    set_aside(path, "checksum mismatch")  # corrupt or truncated: fetch it again
                # download() has checked the packed MD5, so this parses (or raises on a malformed release).
                array = _read_verified(download(file.remote, own, progress=progress, fetch=download_missing), file)
            arrays[key] = array
    return _check_shapes(arrays, own), own
