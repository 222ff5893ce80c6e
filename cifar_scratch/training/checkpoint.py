"""Checkpoints: one ``.npz`` file of named arrays plus a ``metadata.json`` member. No pickle.

The file is a standard zip, so ``np.load(path)`` lists the arrays and ``unzip -p path metadata.json``
shows the metadata. It is written to a temporary file and renamed, so a checkpoint on disk is
always complete: a run killed mid-write still has its previous checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from cifar_scratch.errors import CheckpointError
from cifar_scratch.fileio import atomic_open, json_safe

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


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """-> (arrays, metadata). Object arrays are refused (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(META_MEMBER))
            if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a cifar-scratch checkpoint")
            if metadata.get("version") != VERSION:
                raise CheckpointError(
                    f"{path}: checkpoint format {metadata.get('version')} is not supported by this version of cifar-scratch "
                    f"(it reads format {VERSION}); train the run again, or use the version that wrote it"
                )
            arrays = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as member:
                        arrays[name[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, OSError, EOFError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    return arrays, metadata


def group(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``group({"param/dense1.weight": a}, "param")`` -> ``{"dense1.weight": a}``."""
    start = prefix + "/"
    return {name[len(start) :]: value for name, value in arrays.items() if name.startswith(start)}
