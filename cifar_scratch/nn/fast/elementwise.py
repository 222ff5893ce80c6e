"""Fast elementwise kernels: the same functions as :mod:`cifar_scratch.nn.reference`, block by block.

Each kernel walks its arrays in blocks of :data:`parallel.BLOCK_ELEMENTS` in the thread pool, with
its chain of ufuncs writing into ``out=`` buffers, so the temporaries stay in cache and every core
works; GELU keeps its derivative, computed while ``x`` is in cache, instead of ``x`` itself.
Results equal the reference's (tests/nn/test_kernels.py); why and how much faster: docs/engine.md.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.nn.fast import parallel
from cifar_scratch.nn.reference import ERF_A, ERF_P, GELU_A, GELU_C


def column_sums(flat: np.ndarray) -> np.ndarray:
    """(M, C) -> (C,) sums, as a BLAS matrix-vector product: several times faster than ``sum(axis=0)``
    for tall, narrow arrays such as per-channel sums over N*H*W pixels."""
    return np.ones(flat.shape[0], flat.dtype) @ flat


def channel_rows(rows: int, *vectors: np.ndarray | None) -> list[np.ndarray | None]:
    """(C,) vectors -> (rows, C) copies (None stays None), for a pass over blocks of ``rows`` rows of
    an (M, C) array. NumPy broadcasts a (C,) operand one row of C elements at a time, so with few
    channels a per-channel multiply runs at about half the speed of a flat one; against a block-sized
    copy it is a flat pass over two arrays, with the same results."""
    return [None if v is None else np.tile(v, (rows, 1)) for v in vectors]


def _zeros(x: np.ndarray) -> np.ndarray:
    """Zeros for one block of ``x``: NumPy's ``maximum`` against a scalar 0 runs about 3 times slower
    than against an array of zeros (docs/measurements.md)."""
    return np.zeros(min(x.size, parallel.BLOCK_ELEMENTS), x.dtype)


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


def gelu_forward(x: np.ndarray, keep_slope: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (PyTorch ``approximate="tanh"``).

    The cache is the derivative at ``x`` (None without ``keep_slope``, as in evaluation), computed here
    while ``x`` and the tanh are in cache: backward is one multiplication, and the pass keeps one array
    instead of ``x`` and the tanh. Block by block in the thread pool.
    """
    dtype = x.dtype.type

    def work(xs: np.ndarray, o: np.ndarray, slope: np.ndarray | None = None) -> None:
        squares = np.multiply(xs, xs, out=slope)
        t = squares * dtype(GELU_A)
        t += dtype(1.0)
        t *= xs
        t *= dtype(GELU_C)
        np.tanh(t, out=t)
        np.add(t, dtype(1.0), out=o)
        o *= xs
        o *= dtype(0.5)
        if slope is not None:
            # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2); d holds x^2 so far
            d = squares
            d *= dtype(3 * GELU_A)
            d += dtype(1.0)
            d *= xs
            d *= dtype(0.5 * GELU_C)
            o_plus = dtype(1.0) + t  # 1 + t
            t *= t
            np.subtract(dtype(1.0), t, out=t)  # 1 - t^2
            d *= t
            o_plus *= dtype(0.5)
            d += o_plus

    out, *slope = _blockwise(work, x, outputs=2 if keep_slope else 1)
    return out, (slope[0] if keep_slope else None)


def gelu_erf_forward(x: np.ndarray, keep_slope: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """GELU, erf form: x Phi(x), Phi the normal CDF (PyTorch's default, ``approximate="none"``).

    NumPy has no erf. With a = |x|, g = exp(-x^2 / 2) and t = 1 / (1 + p a / sqrt 2), the lower tail
    is q = Phi(-a) = 0.5 R(t) g (A&S 7.1.26, within 1.5e-7), so x Phi(x) = max(x, 0) - a q for either
    sign. The cached slope is the exact derivative of that function: Phi + x (c t^2 R'(t) g + a q),
    c = p / (2 sqrt 2), so numerical gradient checks hold to rounding. Constant factors are folded
    into the polynomials' coefficients: every ufunc pass counts, and some cost several (``exp``
    against ``exp2``, ``copysign`` against two bitwise passes, ``maximum`` against a scalar:
    docs/measurements.md). Block by block in the thread pool, like :func:`gelu_forward`.
    """
    dtype = x.dtype.type
    tail = [dtype(0.5 * a) for a in ERF_A]  # 0.5 R(t)
    slope_c = ERF_P / (2 * np.sqrt(2.0))
    tail_slope = [dtype(slope_c * (k + 1) * a) for k, a in enumerate(ERF_A)]  # c R'(t)
    to_base_2 = dtype(-0.5 / np.log(2.0))  # exp(-x^2 / 2) = 2^(x^2 * to_base_2)
    bits = np.dtype(f"i{x.dtype.itemsize}")  # the float's bits as an integer
    sign = bits.type(np.iinfo(bits).min)  # the sign bit alone
    zeros = _zeros(x)

    def work(xs: np.ndarray, o: np.ndarray, slope: np.ndarray | None = None) -> None:
        a = np.abs(xs)
        t = a * dtype(ERF_P / np.sqrt(2.0))
        t += dtype(1.0)
        np.divide(dtype(1.0), t, out=t)  # not np.reciprocal: several times slower here
        q = t * tail[4]  # 0.5 R(t) by Horner
        for coefficient in tail[3::-1]:
            q += coefficient
            q *= t
        g = np.square(xs)
        g *= to_base_2
        np.exp2(g, out=g)
        q *= g  # q = Phi(-|x|), at most 0.5
        np.maximum(xs, zeros[: xs.size], out=o)
        a *= q  # a q
        o -= a
        if slope is not None:
            d = t * tail_slope[4]  # c R'(t) by Horner
            for coefficient in tail_slope[3:0:-1]:
                d += coefficient
                d *= t
            d += tail_slope[0]
            d *= t
            d *= t
            d *= g
            d += a  # dPhi/dx, even in x
            d *= xs
            # Phi = q below zero and 1 - q from zero up: 0.5 + (0.5 - q) with the sign of x. As
            # 0.5 - q >= 0, OR-ing x's sign bit into it gives that sign (t, now free, holds the bits)
            np.subtract(dtype(0.5), q, out=q)
            signs = t.view(bits)
            np.bitwise_and(xs.view(bits), sign, out=signs)
            np.bitwise_or(q.view(bits), signs, out=q.view(bits))
            d += q
            np.add(d, dtype(0.5), out=slope)

    out, *slope = _blockwise(work, x, outputs=2 if keep_slope else 1)
    return out, (slope[0] if keep_slope else None)


def gelu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dout * GELU'(x), the cache being the slope GELU'(x) that :func:`gelu_forward` kept (``keep_slope``)."""
    if cache is None:
        raise ValueError("gelu_backward: the forward pass kept no slope (keep_slope=False, as in evaluation)")
    (dx,) = _blockwise(lambda s, d, o: np.multiply(d, s, out=o), cache, dout)
    return dx
