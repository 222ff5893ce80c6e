"""Crash-safe file writing: every file is written to a temporary sibling, then renamed.

A reader therefore sees either the old complete file or the new complete file, never a
half-written one, even if the process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def open_regular(path: str | Path) -> IO[bytes]:
    """Open an existing file for binary reading, or raise OSError if it is not a regular file: a FIFO
    would block forever, a device such as /dev/zero never ends. The check is made on the opened file
    (a non-blocking open, so a FIFO with no writer does not block), not on a name that could change."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError otherwise (checked from its size
    before anything is read, so a 20 GB file named run.json costs nothing)."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise OSError(
            errno.EFBIG,
            f"{format_bytes(max(size, len(data)))} is more than such a file holds ({format_bytes(limit)} at most)",
            str(path),
        )
    return data


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KB', 999 -> '999 bytes', in powers of 1000 (as file browsers show sizes)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:,.0f} bytes" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


#: Ends the name of every temporary this program writes, so that cleaning up after a kill removes
#: only its own files (``.last.npz.k3x9q_2a.cifar-scratch.tmp``), never a user's ``notes/.draft.tmp``.
TEMP_SUFFIX = ".cifar-scratch.tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")  # mkstemp's 8 random characters


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit, fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path, owned: Collection[str]) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path`` and put it in place whole on clean exit: a
    reader sees the old folder or the new one, and an interrupted build leaves nothing. ``owned``: the
    names this program writes into such a folder; anything else in an old folder at ``path`` (a user's
    notes) moves into the new one, and is never deleted, even by a kill mid-swap."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX))
    try:
        yield staging
        if path.is_dir():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX))
            os.replace(path, old)  # onto the empty folder just made: an atomic swap in two renames
            os.replace(staging, path)
            _empty_old_folder(old, owned, into=path)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # holds only what this build wrote
        raise


def _empty_old_folder(old: Path, owned: Collection[str], into: Path | None) -> None:
    """Delete this program's files from ``old``, move the rest into ``into`` (where nothing of that
    name exists), and remove ``old`` if that left it empty."""
    for entry in old.iterdir():
        if entry.name in owned or _TEMP_NAME.match(entry.name):
            if entry.is_file() or entry.is_symlink():
                entry.unlink(missing_ok=True)
        elif into is not None and not (into / entry.name).exists():
            os.replace(entry, into / entry.name)
    with contextlib.suppress(OSError):  # not empty: a user's file stays where it is
        old.rmdir()


def remove_stale_temporaries(folders: list[Path], owned: Collection[str] = ()) -> list[Path]:
    """Delete what :func:`atomic_open` and :func:`atomic_folder` leave in ``folders`` (not below them) when
    the process is killed mid-write: only names of this program's temporaries, and in a temporary folder
    only the ``owned`` names (a folder that still holds anything else is left, never a user's file lost)."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not _TEMP_NAME.match(path.name):
                continue
            if path.is_dir() and not path.is_symlink():
                _empty_old_folder(path, owned, into=None)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by None, recursively; NumPy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | Path, value: Any) -> None:
    """Write strict JSON (``allow_nan=False``): NaN and infinities are stored as null."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read a megabyte at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
