"""Checkpoints: one ``.npz`` file of named arrays plus a ``metadata.json`` member. No pickle.

The file is a standard zip, so ``np.load(path)`` lists the arrays and ``unzip -p path metadata.json``
shows the metadata. It is written to a temporary file and renamed, so a checkpoint on disk is
always complete: a run killed mid-write still has its previous checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import tokenize
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from cifar_scratch.config import RESUMABLE_KEYS, RunConfig, changed_keys, lookup
from cifar_scratch.data import Normalizer
from cifar_scratch.errors import CheckpointError, ConfigError
from cifar_scratch.fileio import atomic_open, json_safe, open_regular
from cifar_scratch.kinds import user
from cifar_scratch.nn.model import Sequential

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
    # NumPy parses a .npy header with Python's tokenizer: a damaged one can also raise TokenError or SyntaxError.
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        KeyError,
        ValueError,
        OSError,
        EOFError,
        RecursionError,
        tokenize.TokenError,
        SyntaxError,
    ) as exc:
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


# --------------------------------------------------------------------------- what a checkpoint holds
class _RunningMeans(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loss_sum: Optional[float]  # null in JSON once the loss was NaN
    correct: NonNegativeInt
    seen: NonNegativeInt
    elapsed: float
    grad_norm_sum: Optional[float] = 0.0  # of the global gradient norms before clipping; null once NaN


class _HistoryRow(BaseModel):
    epoch: NonNegativeInt
    train_loss: Optional[float]
    train_accuracy: Optional[float]
    val_loss: Optional[float]
    val_accuracy: Optional[float]
    lr: float
    grad_norm: Optional[float] = None  # the epoch's mean global gradient norm before clipping
    epoch_time: float


class CheckpointMetadata(BaseModel):
    """What :meth:`Trainer.save` writes besides the arrays; validated on load so that a damaged
    checkpoint is one clear error instead of a crash somewhere later."""

    model_config = ConfigDict(extra="allow")
    epoch: NonNegativeInt
    step: NonNegativeInt
    batch_in_epoch: NonNegativeInt
    running: _RunningMeans
    history: list[_HistoryRow]
    best_value: Optional[float]
    best_epoch: Optional[NonNegativeInt]
    bad_epochs: NonNegativeInt
    stop_reason: Optional[str]
    optimizer_steps: NonNegativeInt
    schedule: dict[str, Any]
    rng: dict[str, Any]
    class_names: list[str]
    input_shape: list[int]
    config: dict[str, Any]
    data: dict[str, str]
    health: Optional[dict[str, Any]] = None  # training.health.LayerHealth's state


def read_metadata(raw: dict, path: Path) -> CheckpointMetadata:
    try:
        return CheckpointMetadata.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "metadata"
        raise CheckpointError(f"{path}: checkpoint is damaged: metadata {where}: {err['msg']}") from None


def check_array(array: np.ndarray | None, shape: tuple, dtype, what: str, finite: bool = True) -> None:
    if array is None:
        raise CheckpointError(f"{what} is missing")
    if array.shape != tuple(shape) or array.dtype != dtype:
        raise CheckpointError(f"{what} has shape {array.shape} and type {array.dtype}, expected {tuple(shape)} {np.dtype(dtype)}")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise CheckpointError(f"{what} holds NaN or infinite values (training had diverged)")


def apply_weights(
    arrays: dict[str, np.ndarray], checkpoint: Path, model: Sequential, normalizer: Normalizer, finite: bool = True
) -> None:
    """Copy a checkpoint's parameters, buffers and normalisation statistics into ``model`` and ``normalizer``;
    ``finite``: refuse NaN or infinite weights (all but a diverged run's last state)."""
    params, buffers = group(arrays, "param"), group(arrays, "buffer")
    damaged = f"{checkpoint}: checkpoint is damaged"
    # Type and finiteness are checked before anything is copied, so a refused checkpoint changes nothing.
    for kind, named in (("param", params), ("buffer", buffers)):
        for name, array in named.items():
            check_array(array, array.shape, np.float32, f"{damaged}: {kind}/{name}", finite)
    for name in ("mean", "scale"):
        check_array(arrays.get(f"data/{name}"), normalizer.mean.shape, np.float32, f"{damaged}: data/{name}")
    try:
        model.load_state_dict({**params, **buffers})
    except ValueError as exc:
        raise CheckpointError(f"{checkpoint}: does not fit the model in config.yaml ({exc})") from None
    normalizer.mean[...] = arrays["data/mean"]
    normalizer.scale[...] = arrays["data/scale"]


def weight_shapes(model: Sequential, normalizer: Normalizer, checkpoint: Path):
    """The :data:`~cifar_scratch.training.checkpoint.Shapes` of what :func:`load_weights` reads: parameters,
    buffers and normalisation statistics, each of the model's own shape. A parameter or buffer the model
    does not have is an error; other members (optimizer state, the permutation) are left unread."""
    expected = {f"param/{k}": v.shape for k, v in model.params.items()} | {
        f"buffer/{k}": v.shape for k, v in model.buffers.items()
    }
    expected |= {"data/mean": normalizer.mean.shape, "data/scale": normalizer.scale.shape}

    def shapes(name: str, metadata: dict) -> tuple[int, ...] | None:
        if name in expected:
            return expected[name]
        if name.startswith(("param/", "buffer/")):
            raise CheckpointError(
                f"{checkpoint}: does not fit the model in config.yaml (it holds {name}, which the model has not)"
            )
        return None

    return shapes


def load_weights(model: Sequential, normalizer: Normalizer, checkpoint: Path) -> CheckpointMetadata:
    """Put a checkpoint's weights and normalisation into ``model``/``normalizer``; return its metadata."""
    arrays, raw = load_checkpoint(checkpoint, weight_shapes(model, normalizer, checkpoint))
    meta = read_metadata(raw, checkpoint)
    apply_weights(arrays, checkpoint, model, normalizer)
    return meta


def check_checkpoint_matches(meta, config: RunConfig, fingerprint: dict, class_names, checkpoint: Path) -> None:
    """Refuse a checkpoint whose recorded config or data differ from what the run folder now says.

    Without this, an edited ``config.yaml`` (say ``data.split_seed``) would silently mix training
    images into the test split.
    """
    # Where the run folder and the data live may change (a moved folder, a copied dataset): the data
    # fingerprint, not the path, says whether the images are the same.
    movable = ("output.runs_dir", "data.source")
    current = user.portable(config.model_dump(mode="json"))
    try:  # a key added to the schema since the checkpoint was written reads as its default (the old behaviour)
        recorded = RunConfig.model_validate(meta.config).model_dump(mode="json")
    except ValidationError:
        recorded = meta.config
    recorded = user.portable(copy.deepcopy(recorded))
    differences = [k for k in changed_keys(recorded, current) if not k.startswith(RESUMABLE_KEYS) and k not in movable]
    if differences:
        raise ConfigError(
            [
                f"{k}: config.yaml says {lookup(current, k)!r}, but {checkpoint.name} was trained with "
                f"{lookup(recorded, k)!r} (config.yaml was edited after the run started; restore it or start a new run)"
                for k in differences[:10]
            ]
        )
    if list(meta.class_names) != list(class_names):
        raise CheckpointError(f"{checkpoint}: trained on classes {meta.class_names}, but the data now has {list(class_names)}")
    changed = [split for split, digest in meta.data.items() if fingerprint.get(split) != digest]
    if changed:
        raise CheckpointError(
            f"{checkpoint}: the {', '.join(changed)} split{'s' if len(changed) > 1 else ''} of the data differ from the images "
            f"this run was trained on (the dataset files changed); results would not be comparable"
        )
