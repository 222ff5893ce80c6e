"""Fast batch normalisation: the same functions as :mod:`cifar_scratch.nn.reference`.

Per-channel sums are BLAS matrix-vector products (:func:`column_sums`), and each elementwise pass
runs block by block in the thread pool into ``out=`` buffers, its per-channel vectors repeated to a
block's rows (:func:`channel_rows`); the cache keeps the normalised input and the inverse standard
deviation.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.nn.fast import parallel
from cifar_scratch.nn.fast.elementwise import channel_rows, column_sums


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

    Per-channel sums are BLAS matrix-vector products; the elementwise passes run block by block in
    the thread pool (:mod:`cifar_scratch.nn.fast.parallel`).
    """
    channels = x.shape[-1]
    flat = x.reshape(-1, channels)
    dtype = x.dtype.type
    rows = parallel.rows_per_block(channels)
    out = np.empty_like(flat)
    if not training:
        inv = 1.0 / np.sqrt(running_var + dtype(eps))
        scale = inv if gamma is None else gamma * inv
        shift = -running_mean * scale if beta is None else beta - running_mean * scale
        scale, shift = channel_rows(min(rows, len(flat)), scale, shift)

        def apply(block: slice) -> None:
            rows_here = block.stop - block.start
            np.multiply(flat[block], scale[:rows_here], out=out[block])
            out[block] += shift[:rows_here]

        parallel.for_blocks(apply, len(flat), rows)
        return out.reshape(x.shape), None
    count = flat.shape[0]
    mean = column_sums(flat) / dtype(count)
    xhat = np.empty_like(flat)
    squares = out  # scratch until the output is written
    (mean_rows,) = channel_rows(min(rows, count), mean)

    def center(block: slice) -> None:
        np.subtract(flat[block], mean_rows[: block.stop - block.start], out=xhat[block])
        np.square(xhat[block], out=squares[block])

    parallel.for_blocks(center, count, rows)
    var = column_sums(squares) / dtype(count)
    inv = 1.0 / np.sqrt(var + dtype(eps))
    scale = inv if gamma is None else gamma * inv
    scale_rows, inv_rows, beta_rows = channel_rows(min(rows, count), scale, inv, beta)

    def normalize(block: slice) -> None:
        rows_here = block.stop - block.start
        np.multiply(xhat[block], scale_rows[:rows_here], out=out[block])
        xhat[block] *= inv_rows[:rows_here]
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
    rows = parallel.rows_per_block(xhat.shape[1])
    dx = np.empty_like(flat)
    parallel.for_blocks(lambda block: np.multiply(flat[block], xhat[block], out=dx[block]), len(flat), rows)
    dbeta = column_sums(flat)
    dgamma = column_sums(dx)  # dx holds dout * xhat until it is overwritten below
    # dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with dxhat = dout * gamma.
    scale = inv if gamma is None else gamma * inv
    count = flat.shape[0]
    along_xhat, shift = -(dgamma * scale) / count, (dbeta * scale) / count
    along_xhat, scale, shift = channel_rows(min(rows, count), along_xhat, scale, shift)

    def work(block: slice) -> None:
        rows_here = block.stop - block.start
        d = dx[block]
        np.multiply(xhat[block], along_xhat[:rows_here], out=d)
        d += flat[block] * scale[:rows_here]
        d -= shift[:rows_here]

    parallel.for_blocks(work, count, rows)
    return dx.reshape(dout.shape), (dgamma if gamma is not None else None), dbeta
