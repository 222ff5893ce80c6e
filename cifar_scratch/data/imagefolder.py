"""Datasets stored as image files: ``<root>/<split>/<class>/<image>.png|jpg``.

``root`` may be a folder or a ``.tar``/``.tar.gz`` archive of one (read in place, never extracted).
Images are decoded once with Pillow and cached as uint8 arrays in the data dir, under a key made
from the source's file list, sizes and modification times, so an edited source is decoded again.
If ``<archive>.sha256`` lies beside an archive, the archive is verified before decoding.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from cifar_scratch.data.download import check_member_names, file_digest
from cifar_scratch.data.lock import data_lock
from cifar_scratch.errors import DataError
from cifar_scratch.fileio import atomic_open

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SPLITS = ("train", "test")
CACHE_VERSION = 1


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz"))


def _entries(source: Path) -> tuple[list[tuple[str, str, str, int, int]], str]:
    """List images as (split, class, member path, size, mtime) and return a fingerprint of the source."""
    rows = []
    if _is_archive(source):
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
        check_member_names(source, [m.name for m in members])
        items = [(PurePosixPath(m.name).parts, m.name, m.size, int(m.mtime)) for m in members]
        stat = source.stat()
        fingerprint_base = f"archive:{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    elif source.is_dir():
        items = []
        for path in sorted(source.rglob("*")):
            if path.is_file():
                st = path.stat()
                items.append((path.relative_to(source).parts, str(path), st.st_size, st.st_mtime_ns))
        fingerprint_base = f"folder:{source.resolve()}"
    else:
        raise DataError(f"{source}: no such folder or .tar/.tar.gz archive")
    for parts, where, size, mtime in items:
        if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        # The split folder is the last `train`/`test` component with exactly <class>/<file> below it.
        if len(parts) >= 3 and parts[-3] in SPLITS:
            rows.append((parts[-3], parts[-2], where, size, mtime))
    if not rows:
        raise DataError(f"{source}: no images found in the layout <split>/<class>/<image> with split in {SPLITS}")
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    digest = hashlib.sha256(fingerprint_base.encode())
    for row in rows:
        digest.update(repr(row).encode())
    return rows, digest.hexdigest()[:16]


def _verify_sidecar(source: Path) -> None:
    sidecar = source.with_name(source.name + ".sha256")
    if _is_archive(source) and sidecar.is_file():
        expected = sidecar.read_text().split()[0].lower()
        actual = file_digest(source, "sha256")
        if actual != expected:
            raise DataError(f"{source}: SHA-256 {actual} does not match {sidecar} ({expected}); the archive is corrupt")


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: cannot decode image ({exc})") from None


def _decode_all(source: Path, rows: list, progress: bool) -> dict[str, np.ndarray]:
    classes = sorted({r[1] for r in rows if r[0] == "train"} or {r[1] for r in rows})
    index = {name: i for i, name in enumerate(classes)}
    for split, cls, where, *_ in rows:
        if cls not in index:
            raise DataError(f"{where}: class folder {cls!r} of split {split!r} does not exist in the train split")
    images: np.ndarray | None = None
    labels = np.empty(len(rows), dtype=np.int64)
    tar = tarfile.open(source) if _is_archive(source) else None
    try:
        for i, (split, cls, where, *_) in enumerate(tqdm(rows, desc=f"decode {source.name}", unit="img", disable=not progress)):
            data = tar.extractfile(where).read() if tar else Path(where).read_bytes()
            pixels = _decode(data, where)
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
            if images is None:
                images = np.empty((len(rows), *pixels.shape), dtype=np.uint8)
            if pixels.shape != images.shape[1:]:
                raise DataError(f"{where}: image shape {pixels.shape} differs from the first image's {images.shape[1:]}")
            images[i] = pixels
            labels[i] = index[cls]
    finally:
        if tar:
            tar.close()
    splits = np.array([r[0] for r in rows])
    arrays = {"class_names": np.array(classes)}
    for split in SPLITS:
        chosen = splits == split
        if chosen.any():
            arrays[f"{split}_images"] = images[chosen]
            arrays[f"{split}_labels"] = labels[chosen]
    return arrays


def load(source: Path, cache_dir: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """-> ``{"class_names", "train_images", "train_labels"[, "test_images", "test_labels"]}``.

    Images are (N, H, W, C) uint8 with C = 3 (RGB) or 1 (grayscale sources).
    """
    rows, key = _entries(source)
    stem = source.name.split(".")[0] or "images"
    cache = cache_dir / f"{stem}-{key}.npz"
    if (arrays := _read_cache(cache)) is not None:
        return arrays
    with data_lock(cache_dir, cache.stem, progress):
        if (arrays := _read_cache(cache)) is not None:  # decoded by another process while this one waited
            return arrays
        _verify_sidecar(source)
        arrays = _decode_all(source, rows, progress)
        with atomic_open(cache, "wb") as handle:
            np.savez(handle, cache_version=np.array(CACHE_VERSION), **arrays)
    return arrays


def _read_cache(cache: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the cache is missing, unreadable, partial or from another version."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}  # reading checks each member's CRC
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None
    if int(arrays.pop("cache_version", -1)) != CACHE_VERSION or "train_images" not in arrays:
        return None
    return arrays
