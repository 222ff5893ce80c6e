"""Training-time augmentation of uint8 NHWC batches: random flip, translation (random crop), cutout.

Everything is vectorised over the batch: the flip and the translation of every image are one
gather through a precomputed index (no padded copy of the batch is made), cutout is one mask.
Random numbers come from the generator passed in (the run's), so a resumed run draws the same
augmentations. ``draw`` and ``apply`` are separate so tests can check an image against the
exact offsets drawn for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifar_scratch.config import AugmentConfig
from cifar_scratch.errors import ConfigError

OFFLINE_CHUNK = 4096


@dataclass
class AugmentDraw:
    """The random choices for a batch of N images."""

    flip: np.ndarray | None  # (N,) bool: mirror left-right
    shift: np.ndarray | None  # (N, 2) int (dy, dx): content moves down by dy and right by dx
    cutout: np.ndarray | None  # (N, 2) int (cy, cx): centre of the erased square


def is_active(config: AugmentConfig) -> bool:
    return config.flip or config.translate > 0 or config.cutout > 0


def draw(n: int, height: int, width: int, config: AugmentConfig, rng: np.random.Generator) -> AugmentDraw:
    t = config.translate
    flip = rng.random(n) < 0.5 if config.flip is True else None  # alternate flips are given by the caller
    shift = rng.integers(-t, t + 1, size=(n, 2)) if t > 0 else None
    cutout = rng.integers(0, (height, width), size=(n, 2)) if config.cutout > 0 else None
    return AugmentDraw(flip, shift, cutout)


def _source_index(positions: np.ndarray, size: int, padding: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Map (possibly out-of-range) source coordinates into 0..size-1; also a validity mask for zero padding."""
    if padding == "reflect":  # mirror without repeating the edge pixel, like np.pad(mode="reflect")
        period = 2 * (size - 1)
        folded = np.abs(positions) % period if period else np.zeros_like(positions)
        return np.where(folded < size, folded, period - folded), None
    valid = (positions >= 0) & (positions < size)
    return np.clip(positions, 0, size - 1), valid


def apply(images: np.ndarray, choice: AugmentDraw, config: AugmentConfig) -> np.ndarray:
    """(N, H, W, C) array -> a new augmented (N, H, W, C) array of the same dtype (the input is not modified)."""
    n, height, width, channels = images.shape
    if config.padding == "reflect" and config.translate >= min(height, width):
        raise ConfigError(
            f"data.augment.translate: reflect padding needs a shift smaller than the image ({height}x{width}) "
            f"(got {config.translate})"
        )
    rows = np.broadcast_to(np.arange(height), (n, height))
    cols = np.broadcast_to(np.arange(width), (n, width))
    blank_rows = blank_cols = None  # (N, H) / (N, W) masks of pixels that become 0
    if choice.shift is not None:
        # Output pixel (y, x) shows pixel (y - dy, x - dx) of the (flipped) image, padded as configured.
        rows, row_ok = _source_index(rows - choice.shift[:, :1], height, config.padding)
        cols, col_ok = _source_index(cols - choice.shift[:, 1:], width, config.padding)
        if row_ok is not None:
            blank_rows, blank_cols = ~row_ok, ~col_ok
    if choice.flip is not None:  # mirror, then shift: the shift's coordinate map reads the mirrored image
        cols = np.where(choice.flip[:, None], width - 1 - cols, cols)
    # One gather does flip + shift: output pixel -> row of images viewed as (N*H*W, C).
    flat = (np.arange(n)[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
    blank = None
    if blank_rows is not None:
        blank = blank_rows[:, :, None] | blank_cols[:, None, :]
    if choice.cutout is not None:
        top, left = choice.cutout[:, :1] - config.cutout // 2, choice.cutout[:, 1:] - config.cutout // 2
        ys, xs = np.arange(height), np.arange(width)
        erased = ((ys >= top) & (ys < top + config.cutout))[:, :, None] & ((xs >= left) & (xs < left + config.cutout))[:, None, :]
        blank = erased if blank is None else blank | erased
    pixels = images.reshape(n * height * width, channels)
    if blank is not None:
        # Blanked pixels read an extra all-zero row instead of being masked afterwards (one pass, no broadcast over C).
        pixels = np.concatenate([pixels, np.zeros((1, channels), images.dtype)])
        flat = np.where(blank, n * height * width, flat)
    return np.take(pixels, flat.reshape(-1), axis=0).reshape(images.shape)


def augment(images: np.ndarray, config: AugmentConfig, rng: np.random.Generator, flip: np.ndarray | None = None) -> np.ndarray:
    """Draw and apply one random augmentation per image; returns ``images`` itself when nothing is enabled.

    ``flip`` (N,) bool: which images to mirror, for ``flip: alternate`` (see :func:`alternate_flips`).
    """
    if not is_active(config):
        return images
    n, height, width = images.shape[:3]
    choice = draw(n, height, width, config, rng)
    if flip is not None:
        choice.flip = flip
    return apply(images, choice, config)


def tta_views(images: np.ndarray, mode: str) -> list[tuple[np.ndarray, float]]:
    """(N, H, W, C) -> (view, weight) pairs of ``mode``: the images and their mirror (1/2 each); for
    flip+translate also the images shifted by one pixel up-left and down-right (edges reflected) and
    the mirror of each shifted image, weighted as airbench does: 1/4 for the image and its mirror, 1/8
    for each shifted view."""
    if mode == "none":
        return [(images, 1.0)]
    views = [images, np.ascontiguousarray(images[:, :, ::-1])]
    if mode == "flip":
        return [(view, 0.5) for view in views]
    shifted = AugmentConfig(translate=1, padding="reflect")
    for offset in (-1, 1):
        view = apply(images, AugmentDraw(None, np.full((len(images), 2), offset), None), shifted)
        views += [view, np.ascontiguousarray(view[:, :, ::-1])]
    return [(view, 0.25 if i < 2 else 0.125) for i, view in enumerate(views)]


def alternate_flips(parity: np.ndarray, indices: np.ndarray, epoch: int) -> np.ndarray:
    """Which of the images ``indices`` to mirror in ``epoch`` (0-based): image i is mirrored when its
    parity bit differs from the epoch's, so every image is mirrored in every other epoch. The bits
    come from a seeded stream of their own, so a resumed run recomputes them instead of saving them."""
    return parity[indices] ^ bool(epoch % 2)


def augmented_copies(images: np.ndarray, labels: np.ndarray, config: AugmentConfig, rng: np.random.Generator):
    """The offline variant: the originals followed by ``config.copies`` augmented copies of every image.

    Returns (images (N * (1 + copies), H, W, C), labels (N * (1 + copies),)).
    """
    out = np.empty((len(images) * (1 + config.copies), *images.shape[1:]), images.dtype)
    out[: len(images)] = images
    for copy in range(1, 1 + config.copies):
        for start in range(0, len(images), OFFLINE_CHUNK):  # bounds the size of the gather index
            chunk = images[start : start + OFFLINE_CHUNK]
            out[copy * len(images) + start :][: len(chunk)] = augment(chunk, config, rng)
    return out, np.tile(labels, 1 + config.copies)
