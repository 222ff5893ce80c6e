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
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from cifar_scratch.data.download import check_member_names
from cifar_scratch.data.lock import data_lock
from cifar_scratch.errors import DataError
from cifar_scratch.fileio import atomic_open, file_digest, format_bytes, read_limited

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SPLITS = ("train", "test")
CACHE_VERSION = 1


#: Largest image accepted, in pixels: datasets of this kind hold small images, and a bigger one
#: (a decompression bomb, or a wrong folder) is refused from its header, before it is decoded.
MAX_PIXELS = 4096 * 4096
#: Largest image file read: 4096 x 4096 pixels of 16-bit RGBA, uncompressed, are 134 MB.
MAX_IMAGE_BYTES = 256_000_000
#: Everything reading a damaged archive can raise.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar", ".tar.gz", ".tgz"))


def _entries(source: Path) -> tuple[list[tuple[str, str, str, int, int]], str]:
    """List images as (split, class, member path, size, mtime) and return a fingerprint of the source."""
    if _is_archive(source):
        try:
            with tarfile.open(source) as tar:
                members = tar.getmembers()
        except ARCHIVE_ERRORS as exc:
            raise DataError(f"{source}: not a readable .tar/.tar.gz archive ({_reason(exc)})") from None
        check_member_names(source, [m.name for m in members])
        for m in members:
            if (m.issym() or m.islnk()) and _image_path(PurePosixPath(m.name).parts):
                raise DataError(f"{source}: refusing archive member {m.name!r}: a link, not an image file")
        items = [(PurePosixPath(m.name).parts, m.name, m.size, int(m.mtime)) for m in members if m.isfile()]
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
    rows = [(parts[-3], parts[-2], where, size, mtime) for parts, where, size, mtime in items if _image_path(parts)]
    for _, _, where, size, _ in rows:  # checked before anything is read: a 20 GB file named .png is not read
        if size > MAX_IMAGE_BYTES:
            raise DataError(
                f"{where}: {format_bytes(size)} is more than an image file of at most {MAX_PIXELS:,} pixels holds "
                f"({format_bytes(MAX_IMAGE_BYTES)} at most)"
            )
    if not rows:
        raise DataError(f"{source}: no images found in the layout <split>/<class>/<image> with split in {SPLITS}")
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    digest = hashlib.sha256(fingerprint_base.encode())
    for row in rows:
        digest.update(repr(row).encode())
    return rows, digest.hexdigest()[:16]


def _image_path(parts: tuple[str, ...]) -> bool:
    """An image file whose split folder is the last `train`/`test` component with exactly <class>/<file> below it."""
    return Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES and len(parts) >= 3 and parts[-3] in SPLITS


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


def _decode(data: bytes, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) RGB or (H, W) grayscale uint8.

    16-bit images keep their 8 most significant bits (0..65535 -> 0..255) instead of being
    clipped to 255 by Pillow's mode conversion. Any failure inside Pillow, whatever it raises,
    is a DataError naming the file.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise DataError(f"{where}: a {width}x{height} image is larger than {MAX_PIXELS:,} pixels (decompression bomb?)")
            if shape is not None and (height, width) != shape[:2]:
                raise DataError(f"{where}: image size {height}x{width} differs from the first image's {shape[0]}x{shape[1]}")
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            if image.mode in ("I", "F"):
                raise DataError(
                    f"{where}: {image.mode!r} images (32-bit integer or float pixels) are not supported; use 8- or 16-bit images"
                )
            return np.asarray(image.convert("L" if image.mode in ("L", "1", "LA") else "RGB"))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises SyntaxError, struct.error, DecompressionBombError...
        raise DataError(f"{where}: cannot decode image ({_reason(exc)})") from None


def _read_encoded(source: Path, rows: list) -> list[bytes]:
    """The bytes of every row's file, in row order. An archive is read once, front to back: random
    access into a .tar.gz decompresses from the start for every member (2 minutes for CIFAR-10)."""
    if not _is_archive(source):
        try:
            return [read_limited(where, MAX_IMAGE_BYTES) for _, _, where, *_ in rows]
        except OSError as exc:  # replaced since it was listed (by a FIFO, a bigger file)
            raise DataError(f"{exc.filename}: {exc.strerror}") from None
    position = {where: i for i, (_, _, where, *_) in enumerate(rows)}
    encoded: list[bytes | None] = [None] * len(rows)
    try:
        with tarfile.open(source, mode="r:*") as tar:
            for member in tar:
                index = position.get(member.name)
                if index is not None and member.isfile():
                    encoded[index] = tar.extractfile(member).read()
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{source}: the archive is damaged or truncated ({_reason(exc)}); fetch it again") from None
    missing = [rows[i][2] for i, data in enumerate(encoded) if data is None]
    if missing:
        raise DataError(f"{source}: could not read {missing[0]} from the archive")
    return encoded


def _decode_all(source: Path, rows: list, progress: bool) -> dict[str, np.ndarray]:
    classes = sorted({r[1] for r in rows if r[0] == "train"} or {r[1] for r in rows})
    index = {name: i for i, name in enumerate(classes)}
    for split, cls, where, *_ in rows:
        if cls not in index:
            raise DataError(f"{where}: class folder {cls!r} of split {split!r} does not exist in the train split")
    encoded = _read_encoded(source, rows)
    first = _decode(encoded[0], rows[0][2])
    shape = first.shape if first.ndim == 3 else (*first.shape, 1)
    images = np.empty((len(rows), *shape), dtype=np.uint8)
    # One thread on purpose: for 32x32 JPEGs Pillow's per-image Python work holds the GIL, and a
    # thread pool measured slower (4.3 s -> 5.6 s for CIFAR-10; docs/measurements.md).
    for i in tqdm(range(len(rows)), desc=f"decode {source.name}", unit="img", disable=not progress):
        pixels = _decode(encoded[i], rows[i][2], shape)
        pixels = pixels if pixels.ndim == 3 else pixels[:, :, None]
        if pixels.shape != shape:
            raise DataError(f"{rows[i][2]}: image shape {pixels.shape} differs from the first image's {shape}")
        images[i] = pixels
    labels = np.array([index[r[1]] for r in rows], dtype=np.int64)
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
