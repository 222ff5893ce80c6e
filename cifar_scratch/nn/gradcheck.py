"""Central-difference gradients, for checking analytical backward passes in float64."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class TensorCheck:
    """One tensor's analytic gradient against its central-difference estimate."""

    layer: str
    tensor: str  # "input" or a parameter name
    shape: tuple[int, ...]
    max_relative_error: float
    worst_index: tuple[int, ...]
    analytic: float  # at the worst element
    numeric: float


def _compare(layer: str, tensor: str, analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-8) -> TensorCheck:
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    errors = np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)
    worst = np.unravel_index(int(np.argmax(errors)), errors.shape) if errors.size else ()
    return TensorCheck(layer, tensor, tuple(a.shape), float(errors.max(initial=0.0)), tuple(int(i) for i in worst),
                       float(a[worst]) if errors.size else 0.0, float(n[worst]) if errors.size else 0.0)


def _reset_randomness(layers, seed: int) -> None:
    # Layers that draw random numbers (dropout) get the same generator state before every forward
    # pass, so the numerical probes and the analytic pass see the same masks.
    for layer in layers:
        if hasattr(layer, "_rng"):
            layer._rng = np.random.default_rng(seed)


def check_layer(layer, input_shape: tuple[int, ...], batch: int = 2, seed: int = 0, h: float = 1e-5) -> list[TensorCheck]:
    """Gradients of ``sum(layer(x) * R)`` w.r.t. x and every parameter, analytic vs numerical, in float64.

    ``layer`` is built here for per-sample ``input_shape``; its parameters are perturbed away from
    their initial values (ones, zeros, identity) so that every term of the backward pass matters.
    """
    rng = np.random.default_rng(seed)
    out_shape = layer.build(tuple(input_shape), rng, np.float64)
    for value in layer.params.values():
        value += 0.3 * rng.standard_normal(value.shape)
    x = rng.standard_normal((batch, *input_shape))
    projection = rng.standard_normal((batch, *out_shape))

    def loss() -> float:
        _reset_randomness([layer], seed)
        return float(np.sum(layer.forward(x) * projection))

    loss()
    dx = layer.backward(projection.copy())
    analytic = {"input": dx, **{name: layer.grads[name].copy() for name in layer.params}}
    results = [_compare(layer.name, "input", analytic["input"], numerical_gradient(loss, x, h))]
    for name, value in layer.params.items():
        results.append(_compare(layer.name, name, analytic[name], numerical_gradient(loss, value, h)))
    return results


def check_model(model, x: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0, seed: int = 0,
                h: float = 1e-5) -> list[TensorCheck]:
    """End to end through softmax cross-entropy: every parameter and the input, for a float64 ``model``."""
    from cifar_scratch.nn.functional import softmax_cross_entropy

    def loss() -> float:
        _reset_randomness(model.layers, seed)
        return softmax_cross_entropy(model.forward(x), labels, label_smoothing)[0]

    _reset_randomness(model.layers, seed)
    _, dlogits = softmax_cross_entropy(model.forward(x), labels, label_smoothing)
    dx = model.backward(dlogits)
    grads = {name: g.copy() for name, g in model.grads.items()}
    results = [_compare("model", "input", dx, numerical_gradient(loss, x, h))]
    for name, value in model.params.items():
        layer, _, tensor = name.partition(".")
        results.append(_compare(layer, tensor, grads[name], numerical_gradient(loss, value, h)))
    return results
