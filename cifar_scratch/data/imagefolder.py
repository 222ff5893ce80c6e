"""Datasets stored as image files, in either layout:

- flat, as people keep photos: ``<root>/<class>/<image>`` (test and validation images are held out by
  ``data.test_fraction`` and ``data.val_fraction``);
- split: ``<root>/train/<class>/<image>``, with ``val/`` and ``test/`` beside it when there are such.

``root`` may be a folder or a ``.tar``/``.tar.gz`` archive of one (read in place, never extracted).
Every image follows :mod:`cifar_scratch.data.images` (EXIF orientation, mode, and with ``image_size``
the resize ``predict`` uses too). Hidden files (``.DS_Store``, ``._*``, ``Thumbs.db``) are ignored and
other files that are no images counted and named in the dataset's description. Images are decoded once
and cached as uint8 arrays in the data dir, under a key made from the file list, sizes, modification
times and the target size, so an edited source is decoded again; large files are decoded by a pool of
threads. If ``<archive>.sha256`` lies beside an archive, the archive is verified before decoding.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from cifar_scratch.data import images as pictures
from cifar_scratch.data.download import check_member_names
from cifar_scratch.data.lock import data_lock
from cifar_scratch.errors import DataError
from cifar_scratch.fileio import atomic_open, file_digest, format_bytes, read_limited

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
#: Files that systems leave in photo folders: never images, never counted.
HIDDEN = ("Thumbs.db", "desktop.ini")
CACHE_VERSION = 2  # 2: val/ split, flat layout, EXIF orientation, image_size

#: Largest image accepted, in pixels, from its header before it is decoded (a decompression bomb):
#: a 100-megapixel camera's photo passes.
MAX_PIXELS = 100_000_000
#: Largest image file read: 100 megapixels of 16-bit RGBA, uncompressed, are 800 MB.
MAX_IMAGE_BYTES = 1_000_000_000
#: Files at least this large on average are decoded by a pool of threads: Pillow releases the GIL
#: while it decodes and resizes, which pays for the pool on photos, not on CIFAR's 1 KB JPEGs.
PARALLEL_BYTES = 64_000
#: Everything reading a damaged archive can raise.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz"))


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in HIDDEN


def _listing(source: Path) -> tuple[list[tuple[tuple[str, ...], str, int, int]], set[tuple[str, ...]], str]:
    """(path parts, where, size, mtime) of every file, the folders, and the base of the source's fingerprint."""
    if _is_archive(source):
        try:
            with tarfile.open(source) as tar:
                members = tar.getmembers()
        except ARCHIVE_ERRORS as exc:
            raise DataError(f"{source}: not a readable .tar/.tar.gz archive ({_reason(exc)})") from None
        check_member_names(source, [m.name for m in members])
        for m in members:
            if (m.issym() or m.islnk()) and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                raise DataError(f"{source}: refusing archive member {m.name!r}: a link, not an image file")
        files = [(PurePosixPath(m.name).parts, m.name, m.size, int(m.mtime)) for m in members if m.isfile()]
        folders = {PurePosixPath(m.name).parts for m in members if m.isdir()}
        stat = source.stat()
        return files, folders, f"archive:{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if source.is_dir():
        files, folders = [], set()
        for path in sorted(source.rglob("*")):
            parts = path.relative_to(source).parts
            if path.is_dir():
                folders.add(parts)
            elif path.is_file():
                st = path.stat()
                files.append((parts, str(path), st.st_size, st.st_mtime_ns))
        return files, folders, f"folder:{source.resolve()}"
    raise DataError(f"{source}: no such folder or .tar/.tar.gz archive")


def _entries(source: Path) -> tuple[list[tuple[str, str, str, int, int]], list[str], str]:
    """-> (rows (split, class, where, size, mtime) sorted, the names of files that are no images, fingerprint)."""
    files, folders, fingerprint_base = _listing(source)
    files = [f for f in files if not any(_hidden(part) for part in f[0])]
    images, others = [], []
    for f in files:
        (images if Path(f[0][-1]).suffix.lower() in IMAGE_SUFFIXES else others).append(f)
    others = [where for _, where, *_ in others]
    split_layout = any(len(parts) >= 3 and parts[-3] in SPLITS for parts, *_ in images)
    if split_layout:
        rows = [
            (parts[-3], parts[-2], where, size, mtime)
            for parts, where, size, mtime in images
            if len(parts) >= 3 and parts[-3] in SPLITS
        ]
        stray = [where for parts, where, *_ in images if not (len(parts) >= 3 and parts[-3] in SPLITS)]
        others += stray  # images outside <split>/<class>/ in a split layout: not part of it
    else:
        depth = {len(parts) for parts, *_ in images}
        if len(depth) > 1:
            raise DataError(
                f"{source}: images at different depths; use one layout: <class>/<image>, or train/<class>/<image> "
                "(with val/ and test/ beside it if you have them)"
            )
        rows = [("train", parts[-2], where, size, mtime) for parts, where, size, mtime in images if len(parts) >= 2]
    for _, _, where, size, _ in rows:  # checked before anything is read: a 20 GB file named .jpg is not read
        if size > MAX_IMAGE_BYTES:
            raise DataError(
                f"{where}: {format_bytes(size)} is more than an image file holds here ({format_bytes(MAX_IMAGE_BYTES)} at most)"
            )
    if not rows:
        raise DataError(
            f"{source}: no images found; put them in <class>/<image> folders, or train/<class>/<image> "
            f"(with val/ and test/ beside it if you have them)"
        )
    kept = {where for _, _, where, *_ in rows}
    _check_class_folders(source, folders, [parts for parts, where, *_ in images if where in kept], split_layout)
    rows.sort(key=lambda r: (SPLITS.index(r[0]), r[1], r[2]))
    digest = hashlib.sha256(fingerprint_base.encode())
    for row in rows:
        digest.update(repr(row).encode())
    return rows, others, digest.hexdigest()[:16]


def _check_class_folders(source: Path, folders: set, image_parts: list, split_layout: bool) -> None:
    """A class folder without images is a mistake worth naming (an empty download, a wrong move)."""
    holding = {parts[:-1] for parts in image_parts}
    if split_layout:
        classes = {parts for parts in folders if len(parts) >= 2 and parts[-2] in SPLITS}
    else:
        prefixes = {parts[:-2] for parts in image_parts}  # the folders above the class folders
        classes = {parts for parts in folders if parts[:-1] in prefixes}
    for parts in sorted(classes - holding):
        if not any(_hidden(part) for part in parts):
            where = "/".join(parts) if _is_archive(source) else str(source.joinpath(*parts))
            raise DataError(f"{where}: a class folder with no images in it; add images or remove the folder")


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _verify_sidecar(source: Path) -> None:
    sidecar = source.with_name(source.name + ".sha256")
    if _is_archive(source) and sidecar.is_file():
        words = sidecar.read_text(errors="replace").split()
        expected = words[0].lower() if words else ""
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise DataError(f"{sidecar}: does not hold a SHA-256 checksum (64 hex digits); fix or delete it")
        actual = file_digest(source, "sha256")
        if actual != expected:
            raise DataError(f"{source}: SHA-256 {actual} does not match {sidecar} ({expected}); the archive is corrupt")


def _encoded(source: Path, rows: list) -> Iterator[tuple[int, bytes]]:
    """(row index, file bytes) of every row, one at a time (photos do not all fit in memory at once). An
    archive is read once, front to back: random access into a .tar.gz decompresses from the start each time."""
    if not _is_archive(source):
        for index, (_, _, where, *_) in enumerate(rows):
            try:
                yield index, read_limited(where, MAX_IMAGE_BYTES)
            except OSError as exc:  # replaced since it was listed (by a FIFO, a bigger file)
                raise DataError(f"{exc.filename}: {exc.strerror}") from None
        return
    position = {where: i for i, (_, _, where, *_) in enumerate(rows)}
    seen = 0
    try:
        with tarfile.open(source, mode="r:*") as tar:
            for member in tar:
                index = position.get(member.name)
                if index is not None and member.isfile():
                    seen += 1
                    yield index, tar.extractfile(member).read()
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{source}: the archive is damaged or truncated ({_reason(exc)}); fetch it again") from None
    if seen != len(rows):
        raise DataError(f"{source}: could not read every listed image from the archive")


def _size_text(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"  # width x height, as file browsers say


def _decode_one(data: bytes, where: str, size: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    """-> (uint8 RGB pixels (H, W, 3), whether the image was gray)."""
    with pictures.open_image(data, where, MAX_PIXELS) as image:
        gray = pictures.is_gray(image)
        return pictures.to_pixels(image, where, 3, size), gray


def _decoded(source: Path, rows: list, size: tuple[int, int] | None) -> Iterator[tuple[int, tuple[np.ndarray, bool]]]:
    """(row index, :func:`_decode_one`'s result) of every row: on this thread for small files, on a pool
    of threads for large ones, with a few encoded files in flight at a time (not the whole folder)."""
    if sum(r[3] for r in rows) / len(rows) < PARALLEL_BYTES:
        for i, data in _encoded(source, rows):
            yield i, _decode_one(data, rows[i][2], size)
        return
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for i, data in _encoded(source, rows):
            pending.append((i, pool.submit(_decode_one, data, rows[i][2], size)))
            while len(pending) > 4 * workers:
                i, future = pending.popleft()
                yield i, future.result()
        while pending:
            i, future = pending.popleft()
            yield i, future.result()


def _decode_all(source: Path, rows: list, progress: bool, size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    classes = sorted({r[1] for r in rows if r[0] == "train"})
    index = {name: i for i, name in enumerate(classes)}
    for split, cls, where, *_ in rows:
        if cls not in index:
            raise DataError(f"{where}: class folder {cls!r} of the {split} split has no counterpart in train/")
    images: np.ndarray | None = None
    all_gray = True
    first: tuple[str, tuple[int, ...]] = ("", ())
    with tqdm(total=len(rows), desc=f"decode {source.name}", unit="img", disable=not progress) as bar:
        for i, (pixels, gray) in _decoded(source, rows, size):
            all_gray &= gray
            if images is None:
                images, first = np.empty((len(rows), *pixels.shape), np.uint8), (rows[i][2], pixels.shape)
            if pixels.shape != images.shape[1:]:
                raise DataError(
                    f"{rows[i][2]} is {_size_text(pixels.shape)} pixels, {first[0]} {_size_text(first[1])} (width x height): "
                    f"images of one dataset need one size; set data.image_size: [H, W] to resize them all "
                    f"(e.g. [{first[1][0]}, {first[1][1]}])"
                )
            images[i] = pixels
            bar.update(1)
    if all_gray:
        images = np.ascontiguousarray(images[..., :1])  # every image gray: one channel (R = G = B)
    labels = np.array([index[r[1]] for r in rows], dtype=np.int64)
    splits = np.array([r[0] for r in rows])
    arrays = {"class_names": np.array(classes)}
    for split in SPLITS:
        chosen = splits == split
        if chosen.any():
            arrays[f"{split}_images"] = images[chosen]
            arrays[f"{split}_labels"] = labels[chosen]
    return arrays


def load(source: Path, cache_dir: Path, progress: bool = True, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """-> ``{"class_names", "train_images", "train_labels"[, "val_..."][, "test_..."], "ignored"}``.

    Images are (N, H, W, C) uint8 with C = 3 (RGB), or 1 when every image is gray; ``size``: (H, W)
    to resize every image to (:mod:`cifar_scratch.data.images`), else all must share one size.
    ``ignored``: the files that are no images.
    """
    rows, others, key = _entries(source)
    if size is not None:
        key = hashlib.sha256(f"{key}:{size}".encode()).hexdigest()[:16]
    stem = source.name.split(".")[0] or "images"
    cache = cache_dir / f"{stem}-{key}.npz"
    if (arrays := _read_cache(cache)) is None:
        with data_lock(cache_dir, cache.stem, progress):
            if (arrays := _read_cache(cache)) is None:  # or decoded by another process while this one waited
                _verify_sidecar(source)
                arrays = _decode_all(source, rows, progress, size)
                with atomic_open(cache, "wb") as handle:
                    np.savez(handle, cache_version=np.array(CACHE_VERSION), **arrays)
    return arrays | {"ignored": np.array(others, dtype=str)}


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
