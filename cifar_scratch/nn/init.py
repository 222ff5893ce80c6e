"""Weight initialisers. Each returns a float32 array (or ``dtype``) of ``shape`` drawn from ``rng``."""

from __future__ import annotations

import numpy as np


def initialize(
    kind: str, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """He (Kaiming) init keeps ReLU activations' variance: Var = 2 / fan_in.
    Xavier (Glorot) init balances forward and backward variance: Var = 2 / (fan_in + fan_out).
    torch_default is PyTorch's layer default, uniform within ±1/sqrt(fan_in): Var = 1 / (3 fan_in).
    """
    if kind in ("he_normal", "whiten"):  # whiten: a placeholder until the run fills in the data's whitening
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif kind == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        values = rng.uniform(-limit, limit, shape)
    elif kind == "torch_default":  # kaiming_uniform_(a=sqrt(5)) in PyTorch's terms
        limit = 1.0 / np.sqrt(fan_in)
        values = rng.uniform(-limit, limit, shape)
    elif kind == "xavier_normal":
        values = rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))
    elif kind == "xavier_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-limit, limit, shape)
    elif kind == "dirac":
        return dirac(shape, dtype)
    elif kind == "dirac_partial":
        # airbench's convolutions: PyTorch's default init (uniform, bound 1/sqrt(fan_in)), then the identity
        # on the first min(C, F) filters. No filter is all zero: a zero filter feeds batch norm a constant
        # channel, whose gradient explodes with a small eps.
        values = initialize("torch_default", shape, fan_in, fan_out, rng, dtype)
        keep = min(shape[2], shape[3])
        values[..., :keep] = dirac((*shape[:3], keep), dtype)
        return values
    else:
        raise ValueError(f"unknown initializer {kind!r}")
    return values.astype(dtype)


def dirac(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Identity convolution weights (kh, kw, C, F): the centre tap passes channel c to output c for
    c < min(C, F); everything else is 0 (as ``torch.nn.init.dirac_``)."""
    if len(shape) != 4:
        raise ValueError(f"dirac initialisation is for convolution weights (kh, kw, C, F), got shape {shape}")
    kh, kw, c, f = shape
    weight = np.zeros(shape, dtype)
    channels = np.arange(min(c, f))
    weight[kh // 2, kw // 2, channels, channels] = 1
    return weight


def whitening(patches: np.ndarray, filters: int, eps: float = 5e-4, dtype=np.float32) -> np.ndarray:
    """Convolution weights (kh, kw, C, filters) that whiten image patches (airbench's first layer).

    patches: (P, kh, kw, C) samples. The patch covariance's eigenvectors, each divided by the square
    root of its eigenvalue (+ eps), are the filters; with ``filters`` = 2 x kh*kw*C the negated
    filters follow, so a ReLU/GELU after the layer keeps both signs. Computed in float64.
    """
    p, kh, kw, c = patches.shape
    dims = kh * kw * c
    if filters not in (dims, 2 * dims):
        raise ValueError(
            f"whitening a {kh}x{kw}x{c} patch gives {dims} filters, or {2 * dims} with their negatives (got {filters})"
        )
    flat = patches.reshape(p, dims).astype(np.float64)
    flat -= flat.mean(axis=0)
    covariance = flat.T @ flat / max(1, p - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending; largest first below, as airbench
    order = np.argsort(eigenvalues)[::-1]
    basis = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # (dims, dims), a filter per column
    weight = basis if filters == dims else np.concatenate([basis, -basis], axis=1)
    return weight.reshape(kh, kw, c, filters).astype(dtype)
