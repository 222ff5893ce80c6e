"""Pure forward/backward kernels, cs231n style: ``forward -> (out, cache)``, ``backward(dout, cache)``.

Kernels keep the dtype they are given (float32 in training, float64 in gradient checks) and never
modify their inputs, including the incoming gradient ``dout``.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.nn import parallel


def dense_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, tuple]:
    """x: (N, D), weight: (D, M), bias: (M,) or None -> out: (N, M)."""
    out = x @ weight
    if bias is not None:
        out += bias
    return out, (x, weight)


def dense_backward(dout: np.ndarray, cache: tuple, input_grad: bool = True):
    """dout: (N, M) -> dx: (N, D) (None unless ``input_grad``), dweight: (D, M), dbias: (M,)."""
    x, weight = cache
    return (dout @ weight.T if input_grad else None), x.T @ dout, dout.sum(axis=0)


def column_sums(flat: np.ndarray) -> np.ndarray:
    """(M, C) -> (C,) sums, as a BLAS matrix-vector product: several times faster than ``sum(axis=0)``
    for tall, narrow arrays such as per-channel sums over N*H*W pixels."""
    return np.ones(flat.shape[0], flat.dtype) @ flat


def _blockwise(kernel, *inputs: np.ndarray, outputs: int = 1) -> list[np.ndarray]:
    """Elementwise work block by block in the thread pool: ``kernel(*input_blocks, *output_blocks)``
    over the flattened arrays, each block of ``parallel.BLOCK_ELEMENTS``, so a chain of ufuncs keeps
    its temporaries in cache. -> ``outputs`` new arrays shaped like ``inputs[0]``."""
    results = [np.empty_like(inputs[0]) for _ in range(outputs)]
    flats = [a.reshape(-1) for a in (*inputs, *results)]
    parallel.for_blocks(lambda block: kernel(*(f[block] for f in flats)), flats[0].size, parallel.BLOCK_ELEMENTS)
    return results


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any shape -> same shape; block by block in the thread pool (a pass over memory, like GELU's)."""
    zero = x.dtype.type(0)
    (out,) = _blockwise(lambda xs, o: np.maximum(xs, zero, out=o), x)
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dout where the output was positive, 0 elsewhere; block by block in the thread pool."""
    zero = cache.dtype.type(0)
    (dx,) = _blockwise(lambda d, c, o: np.multiply(d, c > zero, out=o), dout, cache)
    return dx


def leaky_relu_forward(x: np.ndarray, alpha: float) -> tuple[np.ndarray, tuple]:
    positive = x > 0
    return np.where(positive, x, x * alpha), (positive, alpha)


def leaky_relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    positive, alpha = cache
    return np.where(positive, dout, dout * alpha)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return dout * (1 - cache * cache)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) but never overflows for large |x|.
    out = 0.5 * (1 + np.tanh(0.5 * x))
    return out, out


def sigmoid_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return dout * cache * (1 - cache)


_GELU_C = float(np.sqrt(2.0 / np.pi))


def gelu_forward(x: np.ndarray, keep_slope: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (PyTorch ``approximate="tanh"``).

    NumPy has no erf; the tanh form differs from the erf form by < 1e-3 and has an exact derivative.
    The cache is the derivative at ``x`` (None without ``keep_slope``, as in evaluation), computed here
    while ``x`` and the tanh are in cache: backward is one multiplication, and the pass keeps one array
    instead of ``x`` and the tanh. Block by block in the thread pool.
    """
    dtype = x.dtype.type

    def work(xs: np.ndarray, o: np.ndarray, slope: np.ndarray | None = None) -> None:
        squares = np.multiply(xs, xs, out=slope)
        t = squares * dtype(0.044715)
        t += dtype(1.0)
        t *= xs
        t *= dtype(_GELU_C)
        np.tanh(t, out=t)
        np.add(t, dtype(1.0), out=o)
        o *= xs
        o *= dtype(0.5)
        if slope is not None:
            # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2); d holds x^2 so far
            d = squares
            d *= dtype(3 * 0.044715)
            d += dtype(1.0)
            d *= xs
            d *= dtype(0.5 * _GELU_C)
            o_plus = dtype(1.0) + t  # 1 + t
            t *= t
            np.subtract(dtype(1.0), t, out=t)  # 1 - t^2
            d *= t
            o_plus *= dtype(0.5)
            d += o_plus

    out, *slope = _blockwise(work, x, outputs=2 if keep_slope else 1)
    return out, (slope[0] if keep_slope else None)


#: Abramowitz & Stegun 7.1.26: erf(z) = 1 - R(t) exp(-z^2), R(t) = a1 t + a2 t^2 + ... + a5 t^5,
#: t = 1 / (1 + p z), z >= 0, absolute error at most 1.5e-7 (about float32's resolution).
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def gelu_erf_forward(x: np.ndarray, keep_slope: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """GELU, erf form: x Phi(x), Phi the normal CDF (PyTorch's default, ``approximate="none"``).

    NumPy has no erf. With a = |x|, g = exp(-x^2 / 2) and t = 1 / (1 + p a / sqrt 2), the lower tail
    is q = Phi(-a) = 0.5 R(t) g (A&S 7.1.26, within 1.5e-7), so x Phi(x) = max(x, 0) - a q for either
    sign. The cached slope is the exact derivative of that function: Phi + x (c t^2 R'(t) g + a q),
    c = p / (2 sqrt 2), so numerical gradient checks hold to rounding. Block by block in the thread
    pool, like :func:`gelu_forward`; two to four times its time (docs/measurements.md).
    """
    dtype = x.dtype.type
    a1, a2, a3, a4, a5 = _ERF_A

    def work(xs: np.ndarray, o: np.ndarray, slope: np.ndarray | None = None) -> None:
        a = np.abs(xs)
        t = a * dtype(_ERF_P / np.sqrt(2.0))
        t += dtype(1.0)
        np.divide(dtype(1.0), t, out=t)  # not np.reciprocal: several times slower here
        q = t * dtype(a5)  # R(t) by Horner
        for coefficient in (a4, a3, a2, a1):
            q += dtype(coefficient)
            q *= t
        g = np.square(xs)
        g *= dtype(-0.5)
        np.exp(g, out=g)
        q *= g
        q *= dtype(0.5)  # q = Phi(-|x|), at most 0.5
        np.add(xs, a, out=o)
        o *= dtype(0.5)  # max(x, 0)
        a *= q  # a q
        o -= a
        if slope is not None:
            d = t * dtype(5 * a5)  # R'(t) = a1 + 2 a2 t + ... + 5 a5 t^4
            for coefficient in (4 * a4, 3 * a3, 2 * a2):
                d += dtype(coefficient)
                d *= t
            d += dtype(a1)
            d *= t
            d *= t
            d *= g
            d *= dtype(_ERF_P / (2 * np.sqrt(2.0)))
            d += a  # dPhi/dx, even in x
            d *= xs
            # Phi = q below zero and 1 - q from zero up: q + [x >= 0] (1 - 2 q)
            upper = np.multiply(q, dtype(-2.0))
            upper += dtype(1.0)
            upper *= xs >= 0
            upper += q
            np.add(upper, d, out=slope)

    out, *slope = _blockwise(work, x, outputs=2 if keep_slope else 1)
    return out, (slope[0] if keep_slope else None)


def gelu_backward(dout: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """dout * GELU'(x), ``slope`` being the cache of :func:`gelu_forward` with ``keep_slope``."""
    if slope is None:
        raise ValueError("gelu_backward: the forward pass kept no slope (keep_slope=False, as in evaluation)")
    (dx,) = _blockwise(lambda s, d, o: np.multiply(d, s, out=o), slope, dout)
    return dx


def dropout_forward(x: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout: kept units are scaled by 1 / (1 - rate), so evaluation needs no rescaling."""
    keep = 1.0 - rate
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    mask = (rng.random(x.shape, dtype=dtype) < keep) * dtype.type(1.0 / keep)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return dout * cache


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against (smoothed) one-hot labels.

    logits: (N, K) float, labels: (N,) int in [0, K) -> (loss, dlogits: (N, K)).
    With smoothing s the target is (1 - s) * one_hot + s / K, as in Szegedy et al. and PyTorch.
    The log-sum-exp is shifted by the row maximum, so huge logits do not overflow.
    """
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_sum
    target = np.full_like(logits, label_smoothing / k)
    target[np.arange(n), labels] += 1.0 - label_smoothing
    loss = -float((target * log_probs).sum()) / n
    dlogits = (np.exp(log_probs) - target) / logits.dtype.type(n)
    return loss, dlogits


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits) against the true labels, without label smoothing:
    logits (N, K), labels (N,) -> the loss every split reports, so training and validation compare."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(axis=1))
    return -float(log_probs.mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, K) probabilities, rows summing to 1."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
