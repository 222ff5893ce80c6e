"""Central-difference gradients, for checking analytical backward passes in float64."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5, indices: np.ndarray | None = None) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` in place one element at a time.

    ``f`` takes no arguments and reads ``x``; ``x`` is restored exactly after each probe.
    Error is O(h^2), so float64 with h = 1e-5 gives ~1e-10 relative accuracy on smooth functions.
    With ``indices`` (flat positions) only those elements are probed; the others stay 0.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size) if indices is None else indices:
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
    return float(np.max(_errors(np.asarray(analytic, np.float64), np.asarray(numeric, np.float64), floor)))


@dataclass
class TensorCheck:
    """One tensor's analytic gradient against its central-difference estimate."""

    layer: str
    tensor: str  # "input" or a parameter name
    shape: tuple[int, ...]
    checked: int  # elements probed
    max_relative_error: float
    worst_index: tuple[int, ...]
    analytic: float  # at the worst element
    numeric: float


def _compare(
    layer: str, tensor: str, analytic: np.ndarray, numeric: np.ndarray, indices=None, floor: float = 1e-8
) -> TensorCheck:
    a, n = np.asarray(analytic, np.float64).reshape(-1), np.asarray(numeric, np.float64).reshape(-1)
    if indices is not None:
        a, n = a[indices], n[indices]
    else:
        indices = np.arange(a.size)
    errors = _errors(a, n, floor)
    k = int(np.argmax(errors)) if errors.size else 0
    worst = tuple(int(i) for i in np.unravel_index(int(indices[k]), np.shape(analytic))) if errors.size else ()
    return TensorCheck(
        layer,
        tensor,
        tuple(np.shape(analytic)),
        int(errors.size),
        float(errors.max(initial=0.0)),
        worst,
        float(a[k]) if errors.size else 0.0,
        float(n[k]) if errors.size else 0.0,
    )


def _errors(a: np.ndarray, n: np.ndarray, floor: float) -> np.ndarray:
    """|a - n| / max(|a| + |n|, floor): relative where gradients are resolvable, absolute / floor below that."""
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def noise_floor(loss_value: float) -> float:
    """Gradients smaller than this cannot be resolved by central differences of a float64 loss
    (rounding in the loss is ~1e-11 |loss| for h = 1e-5); they are compared in absolute terms."""
    return 1e-4 * max(1.0, abs(loss_value))


def extrapolated_gradient(f: Callable[[], float], x: np.ndarray, h: float, indices: np.ndarray) -> np.ndarray:
    """d f / d x by Richardson's extrapolation of two central differences, (4 D(h) - D(2h)) / 3: the h^2
    terms of their errors cancel, so the step can stay large where a smaller one would drown in the
    loss's rounding (Winograd's transforms raise that rounding tenfold). Like :func:`numerical_gradient`."""
    return (4 * numerical_gradient(f, x, h, indices) - numerical_gradient(f, x, 2 * h, indices)) / 3


def one_sided_gradient(f: Callable[[], float], x: np.ndarray, h: float, indices: np.ndarray, side: int) -> np.ndarray:
    """d f / d x from one side only (``side`` +1: x, x+h, x+2h; -1: x, x-h, x-2h), second-order accurate:
    (-3 f(x) + 4 f(x + s h) - f(x + 2 s h)) / (2 s h). Like :func:`numerical_gradient`, in place and restored."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    centre = f()
    for i in indices:
        original = flat_x[i]
        flat_x[i] = original + side * h
        near = f()
        flat_x[i] = original + 2 * side * h
        far = f()
        flat_x[i] = original
        flat_g[i] = (-3 * centre + 4 * near - far) / (2 * side * h)
    return grad


def probe(
    f: Callable[[], float], x: np.ndarray, analytic: np.ndarray, indices, h: float, floor: float, recheck_above: float = 1e-6
) -> np.ndarray:
    """Numerical gradient at ``indices`` (all if None), robust to kinks.

    The loss of a network with ReLUs and max pooling is smooth only piecewise, and the analytic
    gradient is that of the piece ``x`` lies on. A central difference whose step crosses a kink (a
    ReLU at 0, two max-pool inputs within h of each other: in speedrun93's 28,800 block-1 windows a
    gap of 1e-6 is common) mixes two pieces' slopes. So an element that disagrees with ``analytic``
    is probed again with h / 10, then by extrapolation (where a curved loss needs a smaller step than
    its rounding allows), and then from each side alone (second-order one-sided differences): a kink
    lies on at most one side of ``x`` within reach, so one of them sees only its piece. The closest
    estimate is kept. A wrong backward pass disagrees with every estimate, whatever the step.
    """
    numeric = numerical_gradient(f, x, h, indices)
    flat_a, flat_n = np.asarray(analytic, np.float64).reshape(-1), numeric.reshape(-1)
    positions = np.arange(x.size) if indices is None else np.asarray(indices)
    for estimate in (
        lambda where: numerical_gradient(f, x, h / 10, where),
        lambda where: extrapolated_gradient(f, x, h, where),
        lambda where: one_sided_gradient(f, x, h, where, +1),
        lambda where: one_sided_gradient(f, x, h, where, -1),
    ):
        suspects = positions[_errors(flat_a[positions], flat_n[positions], floor) > recheck_above]
        if not suspects.size:
            break
        other = estimate(suspects).reshape(-1)
        better = _errors(flat_a[suspects], other[suspects], floor) < _errors(flat_a[suspects], flat_n[suspects], floor)
        flat_n[suspects[better]] = other[suspects[better]]
    return numeric


def _sample(size: int, limit: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """All positions (None) when ``limit`` allows, else ``limit`` distinct random flat positions."""
    if limit is None or size <= limit:
        return None
    return np.sort(rng.choice(size, limit, replace=False))


def _reset_randomness(module, seed: int) -> None:
    # Layers that draw random numbers (dropout) get the same generator state before every forward
    # pass, so the numerical probes and the analytic pass see the same masks.
    for _, layer in module.named_modules():
        if hasattr(layer, "_rng"):
            layer._rng = np.random.default_rng(seed)


def check_layer(
    layer, input_shape: tuple[int, ...], batch: int = 2, seed: int = 0, h: float = 1e-5, max_elements: int | None = None
) -> list[TensorCheck]:
    """Gradients of ``sum(layer(x) * R)`` w.r.t. x and every parameter, analytic vs numerical, in float64.

    ``layer`` is built here for per-sample ``input_shape``; its parameters are perturbed away from
    their initial values (ones, zeros, identity) so that every term of the backward pass matters.
    ``max_elements`` probes at most that many random elements per tensor (each costs two forward passes).
    """
    rng = np.random.default_rng(seed)
    out_shape = layer.build(tuple(input_shape), rng, np.float64)
    for value in layer.params.values():
        value += 0.3 * rng.standard_normal(value.shape)
    x = rng.standard_normal((batch, *input_shape))
    projection = rng.standard_normal((batch, *out_shape))

    def loss() -> float:
        _reset_randomness(layer, seed)
        return float(np.sum(layer.forward(x) * projection))

    floor = noise_floor(loss())
    dx = layer.backward(projection.copy())
    analytic = {"input": dx, **{name: layer.grads[name].copy() for name in layer.params}}
    results = []
    for name, value in [("input", x), *layer.params.items()]:
        indices = _sample(value.size, max_elements, rng)
        numeric = probe(loss, value, analytic[name], indices, h, floor)
        results.append(_compare(layer.name, name, analytic[name], numeric, indices, floor))
    return results


def check_model(
    model,
    x: np.ndarray,
    labels: np.ndarray,
    loss_fn=None,
    seed: int = 0,
    h: float = 1e-5,
    max_elements: int | None = None,
) -> list[TensorCheck]:
    """End to end through ``loss_fn`` (``(logits, labels) -> (loss, dlogits)``; default softmax
    cross-entropy): every parameter and the input, for a float64 ``model``."""
    from cifar_scratch.nn.losses import CrossEntropy

    loss_fn = loss_fn or CrossEntropy()
    rng = np.random.default_rng(seed)

    def loss() -> float:
        _reset_randomness(model, seed)
        return float(loss_fn(model.forward(x), labels)[0])

    _reset_randomness(model, seed)
    loss_value, dlogits = loss_fn(model.forward(x), labels)
    floor = noise_floor(loss_value)
    dx = model.backward(dlogits)
    grads = {name: g.copy() for name, g in model.grads.items()}
    results = []
    for name, value, analytic in [("input", x, dx), *((n, v, grads[n]) for n, v in model.params.items())]:
        layer, _, tensor = name.partition(".") if name != "input" else ("model", "", "input")
        indices = _sample(value.size, max_elements, rng)
        numeric = probe(loss, value, analytic, indices, h, floor)
        results.append(_compare(layer, tensor, analytic, numeric, indices, floor))
    return results
