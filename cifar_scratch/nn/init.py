"""Weight initialisers. Each returns a float32 array (or ``dtype``) of ``shape`` drawn from ``rng``."""

from __future__ import annotations

import numpy as np


def initialize(
    kind: str, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """He (Kaiming) init keeps ReLU activations' variance: Var = 2 / fan_in.
    Xavier (Glorot) init balances forward and backward variance: Var = 2 / (fan_in + fan_out).
    """
    if kind == "he_normal":
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif kind == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        values = rng.uniform(-limit, limit, shape)
    elif kind == "xavier_normal":
        values = rng.standard_normal(shape) * np.sqrt(2.0 / (fan_in + fan_out))
    elif kind == "xavier_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-limit, limit, shape)
    elif kind == "dirac":
        return dirac(shape, dtype)
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
