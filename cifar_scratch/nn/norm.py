"""Batch normalisation over the last axis: (N, D) after dense layers, (N, H, W, C) after convolutions.

Conventions follow PyTorch: ``running = (1 - momentum) * running + momentum * batch_stat``, the
running variance is the unbiased batch variance, and normalisation uses the biased one.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.nn.functional import column_sums


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
    """x (..., C) -> same shape. In training mode, updates ``running_mean``/``running_var`` (C,) in place."""
    channels = x.shape[-1]
    flat = x.reshape(-1, channels)
    dtype = x.dtype.type
    if not training:
        inv = 1.0 / np.sqrt(running_var + dtype(eps))
        scale = inv if gamma is None else gamma * inv
        shift = -running_mean * scale if beta is None else beta - running_mean * scale
        out = flat * scale
        out += shift
        return out.reshape(x.shape), None
    count = flat.shape[0]
    mean = column_sums(flat) / dtype(count)
    xhat = flat - mean
    var = column_sums(np.square(xhat)) / dtype(count)
    inv = 1.0 / np.sqrt(var + dtype(eps))
    xhat *= inv
    out = xhat * gamma if gamma is not None else xhat.copy()
    if beta is not None:
        out += beta
    running_mean *= dtype(1.0 - momentum)
    running_mean += dtype(momentum) * mean
    running_var *= dtype(1.0 - momentum)
    running_var += dtype(momentum * count / max(count - 1, 1)) * var
    return out.reshape(x.shape), (xhat, inv, gamma)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """dout (..., C) -> dx (same shape), dgamma (C,), dbeta (C,) (None for an absent scale/shift)."""
    xhat, inv, gamma = cache
    flat = dout.reshape(-1, xhat.shape[1])
    dbeta = column_sums(flat)
    dgamma = column_sums(flat * xhat)
    # dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), with dxhat = dout * gamma.
    scale = inv if gamma is None else gamma * inv
    count = flat.shape[0]
    dx = xhat * (-(dgamma * scale) / count)
    dx += flat * scale
    dx -= (dbeta * scale) / count
    return dx.reshape(dout.shape), (dgamma if gamma is not None else None), dbeta
