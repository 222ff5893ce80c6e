"""Datasets as uint8 image arrays plus the per-channel normalisation that turns batches into float32.

``load_dataset`` gives train / validation / test splits of (N, H, W, C) uint8 images and int64
labels. Images stay uint8 until a batch is formed; :class:`Normalizer` makes the float32 batch.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from cifar_scratch.config import DataConfig
from cifar_scratch.errors import ConfigError, DataError, DataUnavailable

DATA_DIR_ENV = "CIFAR_SCRATCH_DATA"
DEFAULT_DATA_DIR = "data"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """``--data-dir``, else ``$CIFAR_SCRATCH_DATA``, else ``./data``."""
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Loaded:
    """One source of a dataset as its kind's loader gives it (:mod:`cifar_scratch.kinds.datasets`)."""

    train: Split
    test: Split | None  # None: held out of train by data.test_fraction
    class_names: tuple[str, ...]
    description: str
    val: Split | None = None  # None: held out of train by data.val_fraction


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    description: str
    source: str | None = None  # the data.source candidate used: 'official' or a path (None: digits)
    passed_over: tuple[str, ...] = ()  # the candidates before it, each with why it was not there

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 (16 hex digits) of each split's images and labels: which images a run saw, exactly."""
        digests = {}
        for name in ("train", "val", "test"):
            split = self.split(name)
            digest = hashlib.sha256(repr((split.images.shape, split.labels.shape)).encode())
            digest.update(np.ascontiguousarray(split.images).data)
            digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).data)
            digests[name] = digest.hexdigest()[:16]
        return digests


@dataclass
class Normalizer:
    """uint8 (N, H, W, C) -> float32 ``(x - mean) * scale`` with per-channel ``mean`` and ``scale`` (C,)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray, mode: str) -> Normalizer:
        channels = images.shape[-1]
        if mode == "standardize":
            flat = images.reshape(-1, channels)
            mean = flat.mean(axis=0, dtype=np.float64)
            std = np.sqrt(np.maximum(np.square(flat, dtype=np.float64).mean(axis=0) - mean**2, 0.0))
            scale = 1.0 / np.maximum(std, 1e-3)
        elif mode == "scale":
            mean, scale = np.zeros(channels), np.full(channels, 1.0 / 255.0)
        else:
            mean, scale = np.zeros(channels), np.ones(channels)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = images.astype(np.float32)
        batch -= self.mean
        batch *= self.scale
        return batch


def _select_classes(requested: list, names: tuple[str, ...]) -> list[int]:
    chosen = []
    for position, item in enumerate(requested):
        where = f"data.classes.{position}"
        if isinstance(item, int):
            if not 0 <= item < len(names):
                raise ConfigError(f"{where}: class index out of range 0..{len(names) - 1} (got {item})")
            chosen.append(item)
        elif item in names:
            chosen.append(names.index(item))
        else:
            close = difflib.get_close_matches(item, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; classes are {', '.join(names)}"
            raise ConfigError(f"{where}: unknown class {item!r}{hint}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError("data.classes: the same class is named twice")
    return chosen


def _subset(split: Split, chosen: list[int]) -> Split:
    """Keep images of the chosen classes; relabel them 0..k-1 in the order chosen."""
    lookup = np.full(max(int(split.labels.max(initial=0)), max(chosen)) + 1, -1, dtype=np.int64)
    lookup[chosen] = np.arange(len(chosen))
    new = lookup[split.labels]
    keep = new >= 0
    return Split(split.images[keep], new[keep])


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W, 1) uint8 luma, ITU-R BT.601 weights, in integer arithmetic."""
    if images.shape[-1] == 1:
        return images
    r, g, b = (images[..., i].astype(np.uint32) for i in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)[..., None]


def _split_off(split: Split, fraction: float, seed: int, key: str, method: str = "stratified") -> tuple[Split, Split]:
    """Stratified, deterministic: the same (data, fraction, seed) always gives the same split.

    A stratified split needs every class on both sides: a fraction that leaves either side with
    fewer images than there are classes is a config error naming ``key``, not a crash in scikit-learn.
    """
    empty = Split(split.images[:0], split.labels[:0])
    if fraction == 0.0:
        return split, empty
    counts = np.bincount(split.labels)
    counts = counts[counts > 0]
    total, classes, smallest = len(split), len(counts), int(counts.min()) if len(counts) else 0
    held_count = math.ceil(fraction * total)
    if held_count < classes or total - held_count < classes or smallest < 2:
        need = f"between {classes / total:.3g} and {1 - classes / total:.3g}" if total > 2 * classes else "on a larger dataset"
        raise ConfigError(
            f"{key}: {fraction:g} of {total:,} images holds out {held_count:,} and keeps {total - held_count:,}, but a stratified "
            f"split needs at least one image of each of the {classes} classes on both sides"
            + (f" (the rarest class has {smallest} image)" if smallest < 2 else f"; use a fraction {need}")
        )
    if method == "per_class":
        held = _per_class_choice(split.labels, fraction, seed, key)
        keep = np.setdiff1d(np.arange(len(split)), held)
    else:
        keep, held = train_test_split(
            np.arange(len(split)), test_size=fraction, stratify=split.labels, random_state=seed, shuffle=True
        )
        keep.sort()
        held.sort()
    return Split(split.images[keep], split.labels[keep]), Split(split.images[held], split.labels[held])


def _per_class_choice(labels: np.ndarray, fraction: float, seed: int, key: str) -> np.ndarray:
    """Sorted held-out indices: class by class (ascending label), ``round(fraction * count)`` of the
    class's indices drawn without replacement by one ``default_rng(seed)``.

    This is how airbench's CPU reference script holds out its test set (500 of each CIFAR-10 class with
    seed 0), so a run given the same images in the same order is tested on the very same 5,000.
    """
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(fraction * len(members))
        if not 0 < count < len(members):
            raise ConfigError(
                f"{key}: {fraction:g} of class {label}'s {len(members):,} images holds out {count:,}; the per_class split "
                "needs at least one image of each class on both sides"
            )
        held.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(held))


def _load_raw(config: DataConfig, data_dir: Path, progress: bool) -> tuple[Loaded, str | None, list[str]]:
    """-> what the dataset's record loaded, the source used, and why each source before it was passed
    over: ``data.source``'s candidates are tried in order, each by the dataset's record
    (:mod:`cifar_scratch.kinds.datasets`)."""
    from cifar_scratch.kinds.datasets import DATASET_KINDS

    kind = DATASET_KINDS[config.dataset]
    if not kind.official and not kind.paths:  # a dataset without sources (scikit-learn's digits)
        return kind.load(config, None, data_dir, progress), None, []
    candidates, passed = config.sources, []
    for source in candidates:
        try:
            return kind.load(config, source, data_dir, progress), source, passed
        except DataUnavailable as exc:
            if len(candidates) == 1:
                raise
            reason = str(exc).removeprefix("data.source: ")
            passed.append(reason if reason.startswith(source) else f"{source}: {reason}")
    raise DataUnavailable(f"data.source: none of its {len(candidates)} sources is available: {'; '.join(passed)}")


def load_dataset(config: DataConfig, data_dir: Path, progress: bool = True) -> Dataset:
    """Load, subset, convert, and split the configured dataset (see :class:`DataConfig`)."""
    loaded, source, passed = _load_raw(config, data_dir, progress)
    train, test, val, names, description = loaded.train, loaded.test, loaded.val, loaded.class_names, loaded.description
    if config.classes is not None:
        chosen = _select_classes(config.classes, names)
        train, test, val = (_subset(s, chosen) if s is not None else None for s in (train, test, val))
        names = tuple(names[i] for i in chosen)
    if config.grayscale:
        train, test, val = (Split(to_grayscale(s.images), s.labels) if s is not None else None for s in (train, test, val))
    if test is None:
        # No published test split: hold one out before validation, with its own fixed seed,
        # so every run of a sweep is measured on the same untouched images.
        train, test = _split_off(train, config.test_fraction, config.split_seed, "data.test_fraction", config.split_method)
        description += f"; test = held-out {config.test_fraction:.0%} of train"
    if val is None:
        train, val = _split_off(train, config.val_fraction, config.split_seed + 1, "data.val_fraction", config.split_method)
    else:
        description += "; validation = the source's val/ split"
    present = np.unique(train.labels)
    if len(present) < 2:
        raise DataError(
            f"the training split holds {len(present)} class{'es' if len(present) != 1 else ''} "
            f"({', '.join(names[i] for i in present) or 'none'}): a classifier needs at least 2"
        )
    return Dataset(train, val, test, names, description, source, tuple(passed))
