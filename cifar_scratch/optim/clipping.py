"""Gradient clipping by global norm (PyTorch's ``clip_grad_norm_``), and the squared norms it reads.

The norm is a reduction over every trained gradient; it must not depend on the thread count (the
clipping scale changes the weights, which resume reproduces bit for bit), so it is summed by NumPy,
never by a threaded BLAS dot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def squared_norms(grads: dict[str, np.ndarray], names: Iterable[str]) -> dict[str, float]:
    """Dotted name -> the sum of squares of ``grads[name]`` (any shape), for each of ``names``."""
    return {name: float(np.einsum("i,i->", grads[name].ravel(), grads[name].ravel())) for name in names}


def global_norm(squares: dict[str, float]) -> float:
    """The L2 norm of all the gradients together: sqrt of the sum of their squared norms."""
    return math.sqrt(sum(squares.values()))


def clip_by_global_norm(grads: dict[str, np.ndarray], names: Iterable[str], max_norm: float, norm: float) -> bool:
    """Scale ``grads[name]`` for ``names`` in place by ``max_norm / norm`` when ``norm`` (their global norm)
    exceeds ``max_norm``, so that it becomes ``max_norm``; -> whether they were scaled. A NaN norm is left
    to the loop's divergence check."""
    if not norm > max_norm:
        return False
    scale = np.float32(max_norm / (norm + 1e-6))  # PyTorch's epsilon: a norm of exactly max_norm stays put
    for name in names:
        grads[name] *= scale
    return True
