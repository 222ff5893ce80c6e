"""The official CIFAR-10 python release: download, verify, and read without trusting pickle.

The batches are Python 2 pickles. They are read through :class:`BatchUnpickler`, which can build
only NumPy arrays (plus lists, dicts, bytes and numbers, which pickle builds natively): a batch
that names any other callable is refused before it runs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_scratch.data.download import RemoteFile, download, extract_tar, set_aside
from cifar_scratch.data.lock import data_lock
from cifar_scratch.errors import DataError
from cifar_scratch.fileio import file_digest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
# Checksums published with the dataset (also used by torchvision).
ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "c58f30108f718f92721af3b95e74349a",
)
TRAIN_FILES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST_FILES = {"test_batch": "40351d587109b95175f43aff81a1287e"}
META_FILES = {"batches.meta": "5ff9c542aee3614f3951f8cda6e48888"}


@dataclass(frozen=True)
class Release:
    """The archive to download and the MD5 of each file inside it."""

    archive: RemoteFile
    checksums: dict[str, str]


OFFICIAL = Release(ARCHIVE, {**TRAIN_FILES, **TEST_FILES, **META_FILES})


class BatchUnpickler(pickle.Unpickler):
    """Accepts only what NumPy needs to rebuild an array; everything else raises ``UnpicklingError``."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,  # how Python 3 protocol-2 pickles store bytes
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch") from None


def read_batch(path: Path) -> dict:
    """One pickled batch -> dict with str keys. Raises DataError for anything that is not a CIFAR batch."""
    try:
        with open(path, "rb") as handle:
            content = BatchUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a valid CIFAR-10 batch ({exc})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: not a valid CIFAR-10 batch (top level is {type(content).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


def read_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A data batch -> images (N, 32, 32, 3) uint8, labels (N,) int64."""
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: 'labels' must hold one integer in 0..9 per image")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channel-planar; we keep NHWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


def folder_problem(folder: Path, checksums: dict[str, str]) -> str | None:
    """What is wrong with an extracted folder (a missing or altered file), or None if every MD5 matches."""
    for name, expected in checksums.items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing from the CIFAR-10 folder"
        if file_digest(path, "md5") != expected:
            return f"{path}: checksum mismatch (expected MD5 {expected}); the file is corrupt or not the official one"
    return None


def verify_folder(folder: Path, checksums: dict[str, str]) -> None:
    if (problem := folder_problem(folder, checksums)) is not None:
        raise DataError(problem)


def prepare(data_dir: Path, download_missing: bool, progress: bool, release: Release | None = None) -> Path:
    """Return a verified ``data_dir/cifar-10-batches-py``, downloading and extracting it if needed.

    A folder with a missing or altered file is extracted again from the (verified) archive, once the
    archive is in hand: the old folder is moved aside, never deleted, and left untouched when no
    archive can be had. The work runs under the data dir's lock, so parallel runs do it once and
    never see a partial folder.
    """
    release = release or OFFICIAL
    folder = data_dir / FOLDER
    if folder_problem(folder, release.checksums) is None:
        return folder
    with data_lock(data_dir, FOLDER, progress):
        problem = folder_problem(folder, release.checksums)
        if problem is None:  # another process finished it while this one waited
            return folder
        try:
            archive_path = download(release.archive, data_dir, progress=progress, fetch=download_missing)
        except DataError as exc:
            if folder.exists():
                raise DataError(f"{problem}\n{folder} was left as it is; {exc}") from None
            raise
        if folder.exists():
            set_aside(folder, problem.removeprefix(f"{folder}/"))
        extract_tar(archive_path, data_dir, FOLDER)
    verify_folder(folder, release.checksums)  # the archive's content itself must match the published sums
    return folder


def load(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """-> (train images, labels), (test images, labels), class names; images (N, 32, 32, 3) uint8."""
    parts = [read_images(folder / name) for name in TRAIN_FILES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = read_images(folder / "test_batch")
    names = read_batch(folder / "batches.meta").get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{folder / 'batches.meta'}: 'label_names' must list 10 class names")
    return train, test, tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
