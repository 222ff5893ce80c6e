"""Fast batch normalisation: the same functions as :mod:`cifar_scratch.nn.reference`.

Each pass over the activations runs block by block in the thread pool: per-channel sums are
BLAS products of a block with a vector of ones, taken while the block is in cache and added in a
fixed order, and the elementwise work writes into ``out=`` buffers, its per-channel vectors repeated
to a block's rows (:func:`channel_rows`). The forward pass reads its input twice (statistics, then
the output), the backward pass its inputs twice (sums, then dx). The cache keeps the normalised input
and the inverse standard deviation.
"""

from __future__ import annotations

import math

import numpy as np

from cifar_scratch.nn.fast import parallel
from cifar_scratch.nn.fast.elementwise import channel_rows


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, tuple | None]:
    """x (..., C) -> same shape. In training mode, updates ``running_mean``/``running_var`` (C,) in place.

    The mean and variance come from one pass over x (:func:`_mean_and_variance`), the output and
    the normalised input from a second.
    """
    channels = x.shape[-1]
    flat = x.reshape(-1, channels)
    dtype = x.dtype.type
    count = flat.shape[0]
    rows = max(1, min(parallel.rows_per_block(channels), count))
    out = np.empty_like(flat)
    if not training:
        inv = 1.0 / np.sqrt(running_var + dtype(eps))
        scale = inv if gamma is None else gamma * inv
        shift = -running_mean * scale if beta is None else beta - running_mean * scale
        scale, shift = channel_rows(rows, scale, shift)

        def apply(block: slice) -> None:
            rows_here = block.stop - block.start
            np.multiply(flat[block], scale[:rows_here], out=out[block])
            out[block] += shift[:rows_here]

        parallel.for_blocks(apply, count, rows)
        return out.reshape(x.shape), None
    mean, var = _mean_and_variance(flat, rows)
    inv = 1.0 / np.sqrt(var + dtype(eps))
    scale = inv if gamma is None else gamma * inv
    xhat = np.empty_like(flat)
    mean_rows, scale_rows, inv_rows, beta_rows = channel_rows(rows, mean, scale, inv, beta)

    def normalize(block: slice) -> None:
        rows_here = block.stop - block.start
        centered = xhat[block]
        np.subtract(flat[block], mean_rows[:rows_here], out=centered)
        np.multiply(centered, scale_rows[:rows_here], out=out[block])
        centered *= inv_rows[:rows_here]
        if beta_rows is not None:
            out[block] += beta_rows[:rows_here]

    parallel.for_blocks(normalize, count, rows)
    running_mean *= dtype(1.0 - momentum)
    running_mean += dtype(momentum) * mean
    running_var *= dtype(1.0 - momentum)
    running_var += dtype(momentum * count / max(count - 1, 1)) * var
    return out.reshape(x.shape), (xhat, inv, gamma)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """dout (..., C) -> dx (same shape), dgamma (C,), dbeta (C,) (None for an absent scale/shift)."""
    xhat, inv, gamma = cache
    flat = dout.reshape(-1, xhat.shape[1])
    count = flat.shape[0]
    rows = max(1, min(parallel.rows_per_block(xhat.shape[1]), count))
    ones = np.ones(rows, flat.dtype)

    def sums(block: slice, total: np.ndarray) -> None:
        d, along = flat[block], ones[: block.stop - block.start]
        np.matmul(along, d, out=total[0])
        np.matmul(along, d * xhat[block], out=total[1])

    dbeta, dgamma = _block_sums(sums, 2, flat, rows).sum(axis=0)  # added in a fixed order
    # dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with dxhat = dout * gamma.
    scale = inv if gamma is None else gamma * inv
    along_xhat, shift = -(dgamma * scale) / count, (dbeta * scale) / count
    along_xhat, scale, shift = channel_rows(rows, along_xhat, scale, shift)
    dx = np.empty_like(flat)

    def work(block: slice) -> None:
        rows_here = block.stop - block.start
        d = dx[block]
        np.multiply(xhat[block], along_xhat[:rows_here], out=d)
        d += flat[block] * scale[:rows_here]
        d -= shift[:rows_here]

    parallel.for_blocks(work, count, rows)
    return dx.reshape(dout.shape), (dgamma if gamma is not None else None), dbeta


def _block_sums(sums, kinds: int, flat: np.ndarray, rows: int) -> np.ndarray:
    """Column sums of ``kinds`` quantities of an (M, C) array, one pass over it in blocks of ``rows``
    rows in the pool: ``sums(block, total)`` writes the block's (kinds, C) sums, each a single-threaded
    BLAS product with a vector of ones while the block is in cache. -> (blocks, kinds, C), for the
    caller to combine in a fixed order: the bits depend on the shapes only, never on the workers."""
    totals = np.empty((math.ceil(len(flat) / rows), kinds, flat.shape[1]), flat.dtype)
    parallel.for_blocks(lambda block: sums(block, totals[block.start // rows]), len(flat), rows, single_threaded_blas=True)
    return totals


def _mean_and_variance(flat: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) -> per-channel mean and (biased) variance, reading the array once: each block of ``rows``
    rows gives its sum and its squared deviations from its own mean, combined as Chan, Golub and
    LeVeque (1979) do, so no block subtracts a large mean from large squares."""
    count, dtype = len(flat), flat.dtype.type
    ones = np.ones(rows, flat.dtype)

    def sums(block: slice, total: np.ndarray) -> None:
        x, along = flat[block], ones[: block.stop - block.start]
        np.matmul(along, x, out=total[0])
        centered = x - total[0] / dtype(block.stop - block.start)
        np.square(centered, out=centered)
        np.matmul(along, centered, out=total[1])

    totals = _block_sums(sums, 2, flat, rows)
    sizes = np.minimum(rows, count - rows * np.arange(len(totals))).astype(flat.dtype)[:, None]
    mean = totals[:, 0].sum(axis=0) / dtype(count)
    spread = totals[:, 0] / sizes - mean  # each block's mean from the whole's
    spread *= spread
    spread *= sizes
    return mean, (totals[:, 1].sum(axis=0) + spread.sum(axis=0)) / dtype(count)
