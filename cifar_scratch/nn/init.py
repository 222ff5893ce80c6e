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
    else:
        raise ValueError(f"unknown initializer {kind!r}")
    return values.astype(dtype)
