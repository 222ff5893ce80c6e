"""Checkpoints: one ``.npz`` file of named arrays plus a ``metadata.json`` member. No pickle.

The file is a standard zip, so ``np.load(path)`` lists the arrays and ``unzip -p path metadata.json``
shows the metadata. It is written to a temporary file and renamed, so a checkpoint on disk is
always complete: a run killed mid-write still has its previous checkpoint.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar_scratch.errors import CheckpointError
from cifar_scratch.fileio import atomic_open, json_safe, open_regular

FORMAT = "cifar-scratch-checkpoint"
VERSION = 2  # 2: metadata holds the resolved config and the data fingerprint
META_MEMBER = "metadata.json"


def save_checkpoint(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """Write ``arrays`` (names may contain ``/``) and JSON ``metadata`` atomically to ``path``."""
    header = {"format": FORMAT, "version": VERSION, **metadata}
    with atomic_open(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.writestr(META_MEMBER, json.dumps(json_safe(header), allow_nan=False))
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


#: Which members to read, and the shape each must have: ``shapes(name, metadata)`` returns the shape,
#: or None to leave the member unread; it may raise CheckpointError for a member that must not be there.
Shapes = Callable[[str, dict], "tuple[int, ...] | None"]
#: The metadata member is JSON of a few kilobytes to a few megabytes (history, resolved config).
MAX_METADATA_BYTES = 64_000_000


def load_checkpoint(path: str | Path, shapes: Shapes | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """-> (arrays, metadata). Object arrays are refused (``allow_pickle=False``).

    Nothing is allocated from a member's own claims: its ``.npy`` header must agree with the member's
    size in the zip directory, and with ``shapes`` (when given) before its data is read, so a header
    claiming 10^12 floats, or a small compressed member that would expand to gigabytes, is refused
    as damaged instead of filling memory. ``shapes`` None reads every member.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint" + (" (not a regular file)" if path.exists() else ""))
    try:
        with open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
            metadata = json.loads(_read_member(archive, META_MEMBER, MAX_METADATA_BYTES))
            if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a cifar-scratch checkpoint")
            if metadata.get("version") != VERSION:
                raise CheckpointError(
                    f"{path}: checkpoint format {metadata.get('version')} is not supported by this version of cifar-scratch "
                    f"(it reads format {VERSION}); train the run again, or use the version that wrote it"
                )
            arrays = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                expected = shapes(name, metadata) if shapes is not None else ()
                if expected is not None:
                    arrays[name] = _read_array(archive, info, None if shapes is None else tuple(expected), path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, OSError, EOFError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    return arrays, metadata


def _read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise ValueError(f"{name} claims {info.file_size:,} bytes, more than it can hold ({limit:,})")
    with archive.open(info) as member:
        return member.read(limit + 1)


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    """One ``.npy`` member, its header checked against its size (and ``shape``) before its data is read."""
    damaged = f"{path}: checkpoint is damaged: {info.filename[:-4]}"
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            stored, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            stored, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise CheckpointError(f"{damaged}: .npy format {version} is not one this program writes")
        if dtype.hasobject:
            raise CheckpointError(f"{damaged}: holds Python objects, which are never loaded (pickle)")
        data_bytes = math.prod(stored) * dtype.itemsize
        if member.tell() + data_bytes != info.file_size:
            raise CheckpointError(
                f"{damaged}: its header declares {stored} {dtype} ({data_bytes:,} bytes), but the member holds "
                f"{info.file_size - member.tell():,} bytes"
            )
        if shape is not None and tuple(stored) != shape:
            raise CheckpointError(
                f"{path}: {info.filename[:-4]} has shape {tuple(stored)}, expected {shape}: the checkpoint does not fit "
                "the model in config.yaml, or is damaged"
            )
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``group({"param/dense1.weight": a}, "param")`` -> ``{"dense1.weight": a}``."""
    start = prefix + "/"
    return {name[len(start) :]: value for name, value in arrays.items() if name.startswith(start)}
