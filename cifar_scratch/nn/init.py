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
    if kind == "he_normal":
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


#: Images whose patches are gathered at once when measuring the patch moment: bounds the memory
#: (500 CIFAR images give 480,500 2x2 patches, 46 MB in float64).
WHITENING_CHUNK = 500


def patch_moment(images: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) images -> (kh*kw*C, kh*kw*C) float64: the mean outer product of every kh x kw patch
    (all (H-kh+1)(W-kw+1) positions of every image), uncentred as airbench's. Gathered a chunk of
    images at a time, so the patches never all exist at once."""
    kh, kw = kernel
    n, h, w, c = images.shape
    dims = kh * kw * c
    moment = np.zeros((dims, dims), np.float64)
    for start in range(0, n, WHITENING_CHUNK):
        windows = np.lib.stride_tricks.sliding_window_view(images[start : start + WHITENING_CHUNK], kernel, axis=(1, 2))
        flat = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dims).astype(np.float64)  # (kh, kw, C) per row
        moment += flat.T @ flat
    return moment / max(1, n * (h - kh + 1) * (w - kw + 1))


def whitening(moment: np.ndarray, kernel: tuple[int, int], filters: int, eps: float = 5e-4, dtype=np.float32) -> np.ndarray:
    """Convolution weights (kh, kw, C, filters) that whiten image patches (airbench's first layer).

    moment: (kh*kw*C, kh*kw*C), the patches' second moment (:func:`patch_moment`). Its eigenvectors,
    each divided by the square root of its eigenvalue (+ eps), are the filters, largest eigenvalue
    first; with ``filters`` = 2 x kh*kw*C the negated filters follow, so a ReLU/GELU after the layer
    keeps both signs. Computed in float64.
    """
    kh, kw = kernel
    dims = len(moment)
    channels = dims // (kh * kw)
    if filters not in (dims, 2 * dims):
        raise ValueError(
            f"whitening a {kh}x{kw}x{channels} patch gives {dims} filters, or {2 * dims} with their negatives (got {filters})"
        )
    eigenvalues, eigenvectors = np.linalg.eigh(moment)  # ascending; largest first below, as airbench
    order = np.argsort(eigenvalues)[::-1]
    basis = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # (dims, dims), a filter per column
    weight = basis if filters == dims else np.concatenate([basis, -basis], axis=1)
    return weight.reshape(kh, kw, channels, filters).astype(dtype)
