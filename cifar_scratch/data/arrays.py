"""Images a notebook already holds, as an ``.npz`` file: ``data: {dataset: npz, source: file.npz}``.

The file holds ``x_train`` (N, H, W, C) or (N, H, W) uint8 pixels and ``y_train`` (N,) integer labels,
optionally ``x_test`` and ``y_test`` (else a test split is held out, as for the digits), and
``class_names`` (K strings; else the labels' numbers). It is read without pickle, and every array is
checked: a wrong dtype, shape or label is one line naming the file and the array.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from cifar_scratch.errors import DataError
from cifar_scratch.fileio import atomic_open

#: The arrays an .npz of images may hold.
KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


def load(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None, tuple[str, ...]]:
    """-> ((train images, labels), (test images, labels) or None, class names); DataError naming what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz of arrays ({type(exc).__name__}: {str(exc)[:200]})") from None
    return check(arrays, str(path))


def check(arrays: dict, where: str):
    """Validate ``arrays`` (the keys of :data:`KEYS`) -> as :func:`load` returns them."""
    unknown = sorted(set(arrays) - set(KEYS))
    if unknown:
        raise DataError(f"{where}: unknown array {unknown[0]!r}; an images .npz holds {', '.join(KEYS)}")
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{where}: has no {key} (it needs x_train and y_train, optionally x_test, y_test, class_names)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{where}: x_test and y_test go together")
    names = arrays.get("class_names")
    if names is not None:
        names = np.asarray(names)
        if names.ndim != 1 or names.dtype.kind not in "US" or len(set(names.tolist())) != len(names) or len(names) < 2:
            raise DataError(f"{where}: class_names must be 2 or more distinct strings (got {names.dtype} {names.shape})")
        names = tuple(str(n) for n in names.tolist())
    train = _split(arrays["x_train"], arrays["y_train"], "train", where)
    test = _split(arrays["x_test"], arrays["y_test"], "test", where) if "x_test" in arrays else None
    if test is not None and test[0].shape[1:] != train[0].shape[1:]:
        raise DataError(f"{where}: x_test's images are {test[0].shape[1:]}, x_train's {train[0].shape[1:]}")
    top = max(int(labels.max(initial=0)) for labels in (train[1], *(() if test is None else (test[1],))))
    if names is None:
        names = tuple(str(i) for i in range(top + 1))
    elif top >= len(names):
        raise DataError(f"{where}: a label is {top}, but class_names names {len(names)} classes (labels 0..{len(names) - 1})")
    return train, test, names


def _split(images: np.ndarray, labels: np.ndarray, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8:
        raise DataError(
            f"{where}: x_{name} is {images.dtype}; give uint8 pixels 0..255 (e.g. (x * 255).round().astype(np.uint8))"
        )
    if images.ndim == 3:  # (N, H, W): one channel
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or min(images.shape[1:3]) < 1:
        raise DataError(f"{where}: x_{name} must be (N, H, W, C) with C = 1 or 3, or (N, H, W) (got {images.shape})")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: y_{name} must be a 1-D array of integer labels (got {labels.dtype} {labels.shape})")
    if len(labels) != len(images):
        raise DataError(f"{where}: x_{name} holds {len(images)} images, y_{name} {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: y_{name} holds a negative label ({labels.min()}); labels are 0..K-1")
    return np.ascontiguousarray(images), labels.astype(np.int64)


def save(folder: Path, arrays: dict) -> Path:
    """Write checked ``arrays`` to ``folder/<SHA-256 of their bytes>.npz`` (once: the same arrays give the
    same file) -> its path. A run of in-memory arrays reads them back from there on resume or evaluate."""
    (train_x, train_y), test, names = check(arrays, "data")
    stored = {"x_train": train_x, "y_train": train_y, "class_names": np.array(names)}
    if test is not None:
        stored |= {"x_test": test[0], "y_test": test[1]}
    digest = hashlib.sha256()
    for key in sorted(stored):
        digest.update(f"{key}{stored[key].dtype}{stored[key].shape}".encode())
        digest.update(np.ascontiguousarray(stored[key]).data)
    path = Path(folder) / f"{digest.hexdigest()[:32]}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **stored)
    return path
