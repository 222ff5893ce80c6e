"""Central-difference gradients, for checking analytical backward passes in float64."""

from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` in place one element at a time.

    ``f`` takes no arguments and reads ``x``; ``x`` is restored exactly after each probe.
    Error is O(h^2), so float64 with h = 1e-5 gives ~1e-10 relative accuracy on smooth functions.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + h
        plus = f()
        flat_x[i] = original - h
        minus = f()
        flat_x[i] = original
        flat_g[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-8) -> float:
    """max |a - n| / max(|a| + |n|, floor): the cs231n measure, robust where both are ~0."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), floor)))
