"""The reference kernels: every operation of the engine as the math, in plain NumPy.

cs231n style: ``forward(x, ...) -> (out, cache)`` keeps what the gradient needs, ``backward(dout,
cache)`` returns the gradients. Shapes are per batch: N samples, images NHWC (height, width,
channels), kernels (kh, kw, C, F). Kernels keep the dtype they are given (float32 in training,
float64 in gradient checks) and never modify their inputs, the incoming gradient included.

This is the file to read first, and to step through in a debugger: ``--engine reference`` trains
with these functions. :mod:`cifar_scratch.nn.fast` holds faster versions of some of them, with the
same signatures and the same results (tests/nn/test_kernels.py holds each equal to its reference).
Arguments that only the fast versions need (``workspace``, and ``keep_slope``, ``keep_winners`` and
``keep_cache``, False in evaluation) are accepted here too, so a layer can call either.
"""

from __future__ import annotations

import math

import numpy as np

from cifar_scratch.nn.shapes import output_size, pair, pool_geometry, resolve_padding


# --------------------------------------------------------------------------- dense
def dense_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, tuple]:
    """x: (N, D), weight: (D, M), bias: (M,) or None -> out = x @ weight + bias: (N, M)."""
    out = x @ weight
    if bias is not None:
        out += bias
    return out, (x, weight)


def dense_backward(dout: np.ndarray, cache: tuple, input_grad: bool = True):
    """dout: (N, M) -> dx = dout @ weight.T: (N, D) (None unless ``input_grad``), dweight = x.T @ dout: (D, M),
    dbias = sum over samples: (M,)."""
    x, weight = cache
    return (dout @ weight.T if input_grad else None), x.T @ dout, dout.sum(axis=0)


# --------------------------------------------------------------------------- activations (any shape)
def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(x, 0)."""
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """The gradient passes where the input (the cache) was positive."""
    return dout * (cache > 0)


def leaky_relu_forward(x: np.ndarray, alpha: float) -> tuple[np.ndarray, tuple]:
    """x where x > 0, alpha x elsewhere."""
    positive = x > 0
    return np.where(positive, x, x * alpha), (positive, alpha)


def leaky_relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    positive, alpha = cache
    return np.where(positive, dout, dout * alpha)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """tanh' = 1 - tanh^2."""
    return dout * (1 - out * out)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1 / (1 + exp(-x)), written as 0.5 (1 + tanh(x / 2)): the same function, never overflowing."""
    out = 0.5 * (1 + np.tanh(0.5 * x))
    return out, out


def sigmoid_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """sigmoid' = sigmoid (1 - sigmoid)."""
    return dout * out * (1 - out)


#: sqrt(2 / pi) and the cubic coefficient of GELU's tanh form; sqrt(2). Python floats, which keep an
#: array's dtype (a NumPy float64 scalar would turn float32 arithmetic into float64).
GELU_C, GELU_A, SQRT2 = math.sqrt(2.0 / math.pi), 0.044715, math.sqrt(2.0)


def gelu_forward(x: np.ndarray, keep_slope: bool = True) -> tuple[np.ndarray, tuple]:
    """GELU, tanh form (PyTorch's ``approximate="tanh"``): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    t = np.tanh(GELU_C * (x + GELU_A * x**3))
    return 0.5 * x * (1 + t), ("tanh", x)


#: Abramowitz & Stegun 7.1.26: erf(z) = 1 - R(t) exp(-z^2) for z >= 0, t = 1 / (1 + p z),
#: R(t) = a1 t + a2 t^2 + ... + a5 t^5; absolute error at most 1.5e-7 (about float32's resolution).
ERF_P = 0.3275911
ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(z: np.ndarray) -> np.ndarray:
    """erf by A&S 7.1.26 (NumPy has none) for z >= 0, extended to z < 0 by erf(-z) = -erf(z)."""
    t = 1 / (1 + ERF_P * np.abs(z))
    r = sum(a * t ** (k + 1) for k, a in enumerate(ERF_A))
    upper = 1 - r * np.exp(-z * z)
    return np.where(z >= 0, upper, -upper)


def erf_slope(z: np.ndarray) -> np.ndarray:
    """d erf / dz of *this approximation* (not 2/sqrt(pi) exp(-z^2)), so that gradient checks hold to
    rounding: for z >= 0, d/dz [1 - R(t) e^(-z^2)] = (p t^2 R'(t) + 2 z R(t)) e^(-z^2); it is even in z."""
    a = np.abs(z)
    t = 1 / (1 + ERF_P * a)
    r = sum(c * t ** (k + 1) for k, c in enumerate(ERF_A))
    r_slope = sum((k + 1) * c * t**k for k, c in enumerate(ERF_A))
    return (ERF_P * t * t * r_slope + 2 * a * r) * np.exp(-a * a)


def gelu_erf_forward(x: np.ndarray, keep_slope: bool = True) -> tuple[np.ndarray, tuple]:
    """GELU, erf form (PyTorch's default): x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 the normal CDF."""
    return x * 0.5 * (1 + erf(x / SQRT2)), ("erf", x)


def gelu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dout * GELU'(x), for either form."""
    form, x = cache
    if form == "tanh":
        t = np.tanh(GELU_C * (x + GELU_A * x**3))
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * x * x)
    else:  # d/dx [x Phi(x)] = Phi(x) + x Phi'(x), Phi'(x) = erf'(x / sqrt 2) / (2 sqrt 2)
        z = x / SQRT2
        slope = 0.5 * (1 + erf(z)) + x * erf_slope(z) / (2 * SQRT2)
    return (dout * slope).astype(dout.dtype, copy=False)


# --------------------------------------------------------------------------- dropout
def dropout_forward(x: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout: each unit is kept with probability 1 - rate and scaled by 1 / (1 - rate), so
    evaluation (the identity) needs no rescaling."""
    keep = 1.0 - rate
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    mask = (rng.random(x.shape, dtype=dtype) < keep) * dtype.type(1.0 / keep)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return dout * mask


# --------------------------------------------------------------------------- convolution
def conv2d_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride=1, padding="same", workspace=None, keep_cache=True
):
    """x (N, H, W, C), weight (kh, kw, C, F), bias (F,) or None -> out (N, Ho, Wo, F):

        out[n, y, x, f] = bias[f] + sum over i, j, c of padded_x[n, y sy + i, x sx + j, c] weight[i, j, c, f]

    One matrix product per kernel offset (i, j): the input pixels that offset sees, (N, Ho, Wo, C),
    times weight[i, j], (C, F). ``padding``: ``same`` (Keras), ``valid`` or N pixels on every side.
    Without ``keep_cache`` (evaluation: no backward pass follows) the cache is None.
    """
    (kh, kw, _, _), (sy, sx) = weight.shape, pair(stride)
    (top, bottom), (left, right) = (resolve_padding(padding, k, s, n) for k, s, n in zip((kh, kw), (sy, sx), x.shape[1:3]))
    ho, wo = output_size(x.shape[1], kh, sy, top, bottom), output_size(x.shape[2], kw, sx, left, right)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = np.zeros((x.shape[0], ho, wo, weight.shape[3]), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i : i + sy * (ho - 1) + 1 : sy, j : j + sx * (wo - 1) + 1 : sx, :] @ weight[i, j]
    if bias is not None:
        out += bias
    return out, ((padded, weight, (sy, sx), (top, left), x.shape, bias is not None) if keep_cache else None)


def conv2d_backward(dout: np.ndarray, cache: tuple, input_grad: bool = True):
    """dout (N, Ho, Wo, F) -> dx (N, H, W, C) (None unless ``input_grad``), dweight (kh, kw, C, F), dbias (F,)
    (None for a convolution without a bias).

    For each kernel offset: dweight[i, j] = the pixels it saw, as rows, transposed times dout;
    the pixels it saw receive dout @ weight[i, j].T. The padding's share of the gradient is dropped.
    """
    padded, weight, (sy, sx), (top, left), x_shape, has_bias = cache
    (kh, kw, c, f), (_, ho, wo, _) = weight.shape, dout.shape
    dpadded = np.zeros_like(padded) if input_grad else None
    dweight = np.empty_like(weight)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(i, i + sy * (ho - 1) + 1, sy), slice(j, j + sx * (wo - 1) + 1, sx), slice(None))
            dweight[i, j] = padded[window].reshape(-1, c).T @ dout.reshape(-1, f)
            if input_grad:
                dpadded[window] += dout @ weight[i, j].T
    dx = dpadded[:, top : top + x_shape[1], left : left + x_shape[2], :] if input_grad else None
    return dx, dweight, (dout.sum(axis=(0, 1, 2)) if has_bias else None)


# --------------------------------------------------------------------------- pooling
def _pool_windows(x_shape, size, stride) -> list[tuple]:
    """One index per window offset (i, j), row-major: x[index] is (N, Ho, Wo, C), the offset's pixel of every window."""
    size = pair(size)
    stride = pair(stride) if stride is not None else size
    ho, wo = pool_geometry(x_shape[1:3], size, stride)
    return [
        (slice(None), slice(i, i + stride[0] * (ho - 1) + 1, stride[0]), slice(j, j + stride[1] * (wo - 1) + 1, stride[1]))
        for i in range(size[0])
        for j in range(size[1])
    ]


def maxpool_forward(x: np.ndarray, size=2, stride=None, keep_winners: bool = True) -> tuple[np.ndarray, tuple | None]:
    """x (N, H, W, C) -> (N, Ho, Wo, C), the maximum of each size x size window (stride defaults to size;
    windows that do not fit are dropped)."""
    windows = _pool_windows(x.shape, size, stride)
    out = x[windows[0]].copy()
    for window in windows[1:]:
        out = np.maximum(out, x[window])
    return out, ((x, out, windows) if keep_winners else None)


def maxpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each window's gradient goes to one input: its first maximum in row-major order, as in PyTorch
    (after a ReLU, windows of equal zeros are common, and a gradient shared among them would be wrong)."""
    if cache is None:
        raise ValueError("maxpool_backward: the forward pass kept nothing (keep_winners=False, as in evaluation)")
    x, out, windows = cache
    dx = np.zeros_like(x, dtype=dout.dtype)
    routed = np.zeros(out.shape, bool)  # windows whose gradient has found its input
    for window in windows:
        first = (x[window] == out) & ~routed
        dx[window] += dout * first
        routed |= first
    return dx


def avgpool_forward(x: np.ndarray, size=2, stride=None) -> tuple[np.ndarray, tuple]:
    """x (N, H, W, C) -> (N, Ho, Wo, C), the mean of each window."""
    windows = _pool_windows(x.shape, size, stride)
    out = x[windows[0]].copy()
    for window in windows[1:]:
        out += x[window]
    out *= x.dtype.type(1.0 / len(windows))
    return out, (x.shape, windows)


def avgpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Every input of a window gets an equal share of its gradient."""
    x_shape, windows = cache
    share = dout * dout.dtype.type(1.0 / len(windows))
    dx = np.zeros(x_shape, dout.dtype)
    for window in windows:
        dx[window] += share
    return dx


def global_avgpool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """x (N, H, W, C) -> (N, C), the mean over all pixels."""
    return x.mean(axis=(1, 2), dtype=x.dtype), x.shape


def global_avgpool_backward(dout: np.ndarray, x_shape: tuple) -> np.ndarray:
    n, h, w, c = x_shape
    dx = np.empty(x_shape, dout.dtype)
    dx[...] = (dout * dout.dtype.type(1.0 / (h * w)))[:, None, None, :]
    return dx


def global_maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """x (N, H, W, C) -> (N, C), the maximum over all pixels; its first occurrence gets the gradient."""
    flat = x.reshape(x.shape[0], -1, x.shape[3])
    index = flat.argmax(axis=1)
    return np.take_along_axis(flat, index[:, None, :], axis=1)[:, 0, :], (index, x.shape)


def global_maxpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    index, x_shape = cache
    dx = np.zeros((x_shape[0], x_shape[1] * x_shape[2], x_shape[3]), dout.dtype)
    np.put_along_axis(dx, index[:, None, :], dout[:, None, :], axis=1)
    return dx.reshape(x_shape)


# --------------------------------------------------------------------------- batch normalisation
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
    """x (..., C) -> gamma (x - mean) / sqrt(var + eps) + beta, per channel (the last axis).

    Training: the batch's mean and biased variance, over every axis but the last; the running
    statistics (C,) are updated in place, PyTorch's way: running = (1 - momentum) running +
    momentum batch statistic, with the unbiased variance. Evaluation: the running statistics.
    ``gamma``/``beta`` None: no scale/shift (``affine: false``).
    """
    axes = tuple(range(x.ndim - 1))
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        count = x.size // x.shape[-1]
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * count / max(count - 1, 1) * var
    else:
        mean, var = running_mean, running_var
    std = np.sqrt(var + x.dtype.type(eps))
    xhat = (x - mean) / std
    out = xhat if gamma is None else gamma * xhat
    if beta is not None:
        out = out + beta
    return out.astype(x.dtype, copy=False), ((xhat, std, gamma) if training else None)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """dout (..., C) -> dx (same shape), dgamma (C,), dbeta (C,) (None without a scale).

    With dxhat = gamma dout and m values per channel: dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / std.
    """
    xhat, std, gamma = cache
    axes = tuple(range(dout.ndim - 1))
    dbeta, dgamma = dout.sum(axis=axes), (dout * xhat).sum(axis=axes)
    dxhat = dout if gamma is None else dout * gamma
    dx = (dxhat - dxhat.mean(axis=axes) - xhat * (dxhat * xhat).mean(axis=axes)) / std
    return dx.astype(dout.dtype, copy=False), (dgamma if gamma is not None else None), dbeta


# --------------------------------------------------------------------------- losses
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
