"""Fast convolution and max pooling on NHWC arrays: the same functions as :mod:`cifar_scratch.nn.reference`.

The convolution is im2col + one GEMM: each kernel offset's pixels are gathered as one strided copy
into columns (N*Ho*Wo, kh*kw*C), whose product with the (kh*kw*C, F) weight matrix *is* the NHWC
output. Blocks of images gather their columns and multiply them at once, in the thread pool
(:mod:`cifar_scratch.nn.fast.parallel`), so the columns never leave the caches. The input gradient of
a stride-1 convolution is itself a convolution (of dout with the flipped kernel) and reuses im2col;
for other strides col2im, the transpose of the gather, does one strided ``+=`` per kernel offset.
Never ``np.add.at``, never a loop over images or pixels. A :class:`Workspace` lets a layer keep its
zero-bordered input copy between steps. Stride-1 3x3 convolutions ('same' or 'valid') can go by
Winograd instead (:mod:`cifar_scratch.nn.fast.winograd`), as :func:`use_algorithm` says. Max pooling
keeps which window offset won instead of its input.

Why NHWC, and what each of these choices measured: docs/engine.md.
"""

from __future__ import annotations

import math

import numpy as np

from cifar_scratch.nn.fast import parallel, winograd
from cifar_scratch.nn.fast.elementwise import column_sums
from cifar_scratch.nn.shapes import conv_geometry, pair, pool_geometry

#: How stride-1 3x3 convolutions ('same' or 'valid') are computed (``training.conv_algorithm``): im2col
#: always; Winograd F(4x4, 3x3) or F(5x5, 3x3) (winograd.tile_size) for each of them; or auto, Winograd where it measured faster
#: (winograd.pays).
#: Every other convolution goes by im2col, whatever the choice.
ALGORITHMS = ("im2col", "winograd", "auto")
_algorithm = "im2col"


def use_algorithm(name: str) -> str:
    """Compute stride-1 3x3 convolutions by ``name`` (one of :data:`ALGORITHMS`) from now on;
    -> the previous choice. A backward pass follows the method its forward pass took."""
    global _algorithm
    if name not in ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {name!r}; algorithms: {', '.join(ALGORITHMS)}")
    previous, _algorithm = _algorithm, name
    return previous


def _winograd(kernel, stride, pads, in_hw, out_hw, c: int, f: int) -> bool:
    if _algorithm == "im2col" or not winograd.applies(kernel, stride, pads, in_hw, out_hw):
        return False
    return _algorithm == "winograd" or winograd.pays(c, f)


class Workspace:
    """Scratch arrays kept by name between calls; a different shape or dtype replaces the array (never grows)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def zeros_once(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An array that was zero when made; callers rely on untouched regions staying zero."""
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.zeros(shape, dtype)
        return array


def _span(offset: int, pad: int, stride: int, in_size: int, out_size: int) -> tuple[slice, slice] | None:
    """Output positions o whose input o*stride + offset - pad lies inside the image, and those inputs."""
    first = max(0, -(-(pad - offset) // stride))
    last = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    if last <= first:
        return None
    start = first * stride + offset - pad
    return slice(first, last), slice(start, start + (last - first - 1) * stride + 1, stride)


def _offsets(kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int], in_hw, out_hw):
    """For every kernel offset (i, j) with any valid pixel: (i, j, out rows, out cols, in rows, in cols)."""
    for i in range(kernel[0]):
        rows = _span(i, pads[0], stride[0], in_hw[0], out_hw[0])
        if rows is None:
            continue
        for j in range(kernel[1]):
            cols = _span(j, pads[1], stride[1], in_hw[1], out_hw[1])
            if cols is not None:
                yield i, j, rows[0], cols[0], rows[1], cols[1]


#: im2col values per block: 1 MB of float32. The forward and backward passes gather the columns of a
#: few images at a time and multiply them at once, so the columns never leave the caches; a whole
#: batch's columns (850 MB for airbench's first 3x3 layer at batch 1024) would go through memory twice.
COLUMN_BLOCK = 1 << 18
#: Blocks per unit of pool work; each unit adds its blocks' weight gradients into one partial sum.
BLOCKS_PER_UNIT = 8


def _source(x: np.ndarray, kernel, stride, pads, out_hw, workspace: Workspace | None, name: str) -> np.ndarray:
    """x itself, or x copied into a zero-bordered buffer big enough for every window. With a workspace
    the buffer is reused and its border, written only when the buffer is made, stays zero; without
    one the buffer is new and each block of images zeroes its own border beside the copy."""
    n, h, w, c = x.shape
    (top, left), (sy, sx) = pads, stride
    need_h, need_w = (out_hw[0] - 1) * sy + kernel[0], (out_hw[1] - 1) * sx + kernel[1]
    if top == 0 and left == 0 and need_h <= h and need_w <= w:
        return x
    shape = (n, max(need_h, top + h), max(need_w, left + w), c)
    source = workspace.zeros_once(f"{name}.padded", shape, x.dtype) if workspace else np.empty(shape, x.dtype)

    def work(images: slice) -> None:
        block = source[images]
        if workspace is None:
            block[:, :top] = 0
            block[:, top + h :] = 0
            block[:, top : top + h, :left] = 0
            block[:, top : top + h, left + w :] = 0
        np.copyto(block[:, top : top + h, left : left + w, :], x[images])

    parallel.for_blocks(work, n, parallel.rows_per_block(math.prod(shape[1:])))
    return source


def _windows(source: np.ndarray, kernel, stride, out_hw) -> np.ndarray:
    """Read-only view (N, Ho, Wo, kh, kw, C) of every window: [n, oy, ox, i, j, c] = source[n, oy*sy+i, ox*sx+j, c]."""
    s = source.strides
    return np.lib.stride_tricks.as_strided(
        source,
        (source.shape[0], *out_hw, *kernel, source.shape[3]),
        (s[0], s[1] * stride[0], s[2] * stride[1], s[1], s[2], s[3]),
        writeable=False,
    )


def _gather(windows: np.ndarray, images: slice) -> np.ndarray:
    """The im2col rows of some images: (images * Ho * Wo, kh * kw * C), one strided copy (NumPy's inner
    loop then runs over kw*C contiguous values, 3-4x faster than one copy per kernel offset)."""
    cols = np.empty(windows[images].shape, windows.dtype)
    np.copyto(cols, windows[images])
    return cols.reshape(-1, math.prod(windows.shape[3:]))


def im2col(x: np.ndarray, kernel, stride, pads, out_hw) -> np.ndarray:
    """x (N, H, W, C) -> columns (N, Ho, Wo, kh, kw, C): entry [n, oy, ox, i, j, c] = padded x[n, oy*sy+i, ox*sx+j, c].

    ``pads`` = (top, left); the bottom/right padding follows from ``out_hw``. The convolution kernels
    gather these columns block by block instead; the whole array serves tests and benchmarks.
    """
    return _gather(_windows(_source(x, kernel, stride, pads, out_hw, None, ""), kernel, stride, out_hw), slice(None)).reshape(
        x.shape[0], *out_hw, *kernel, x.shape[3]
    )


def _add_windows(dx: np.ndarray, dout: np.ndarray, weight2d: np.ndarray, kernel, offsets) -> None:
    """dx (n, H, W, C) of some images from their dout (n, Ho, Wo, F) (col2im): the column gradients
    dout @ W^T (n, Ho, Wo, kh, kw, C), each added into the window it came from."""
    dcols = (dout.reshape(-1, dout.shape[3]) @ weight2d.T).reshape(-1, *dout.shape[1:3], *kernel, dx.shape[3])
    dx[...] = 0
    for i, j, out_rows, out_cols, in_rows, in_cols in offsets:
        dx[:, in_rows, in_cols, :] += dcols[:, out_rows, out_cols, i, j, :]


def _images_per_block(windows_shape) -> int:
    return max(1, COLUMN_BLOCK // math.prod(windows_shape[1:]))


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride=1,
    padding: str | int = "same",
    workspace: Workspace | None = None,
    keep_cache: bool = True,
) -> tuple[np.ndarray, tuple | None]:
    """x (N, H, W, C), weight (kh, kw, C, F), bias (F,) or None -> out (N, Ho, Wo, F).

    Blocks of images go to the thread pool, each gathering its im2col rows and multiplying them by
    the (kh*kw*C, F) weight matrix with single-threaded BLAS; or by Winograd (:func:`use_algorithm`),
    which keeps the input's tile transforms for the weight gradient. Without ``keep_cache``
    (evaluation) the cache is None.
    """
    kernel, stride = weight.shape[:2], pair(stride)
    pads, out_hw = conv_geometry(x.shape[1:3], kernel, stride, padding)
    n, f = x.shape[0], weight.shape[3]
    weight2d = weight.reshape(-1, f)
    if kernel == (1, 1) and stride == (1, 1) and pads == (0, 0):  # a dense layer over pixels
        out = x.reshape(-1, x.shape[3]) @ weight2d
        if bias is not None:
            out += bias
        return out.reshape(n, *out_hw, f), (("pointwise", bias is not None, x, weight) if keep_cache else None)
    if _winograd(kernel, stride, pads, x.shape[1:3], out_hw, x.shape[3], f):
        # The weight gradient needs the input only as V: keeping V instead of x costs 1.25 x's bytes
        # more and saves transforming it again (docs/measurements.md).
        kept = winograd.frequencies_buffer(x.shape, pads[0], x.dtype) if keep_cache else None
        out = winograd.forward(x, weight, bias, pads[0], kept)
        return out, (("winograd", bias is not None, kept, weight, pads) if keep_cache else None)
    windows = _windows(_source(x, kernel, stride, pads, out_hw, workspace, "x"), kernel, stride, out_hw)
    out = np.empty((n, *out_hw, f), x.dtype)

    def work(images: slice) -> None:
        block = out[images].reshape(-1, f)
        np.matmul(_gather(windows, images), weight2d, out=block)
        if bias is not None:
            block += bias

    parallel.for_blocks(work, n, parallel.even_blocks(n, _images_per_block(windows.shape)), single_threaded_blas=True)
    return out, (("im2col", bias is not None, x, windows, weight, stride, pads) if keep_cache else None)


def conv2d_backward(dout: np.ndarray, cache: tuple, input_grad: bool = True):
    """dout (N, Ho, Wo, F) -> dx (N, H, W, C) (None unless ``input_grad``), dweight (kh, kw, C, F), dbias (F,)
    (None for a convolution without a bias: its sum is a pass over dout).

    The weight gradient sums per-unit partials in a fixed order, so its bits depend on the shapes
    only, never on the number of workers.
    """
    method, has_bias, *kept = cache  # what the forward pass of that method kept
    dout2d = dout.reshape(-1, dout.shape[3])
    dbias = column_sums(dout2d) if has_bias else None
    if method == "winograd":
        v, weight, pads = kept
        return (*winograd.backward(v, dout, weight, pads[0], input_grad), dbias)
    if method == "pointwise":
        x, weight = kept
        dx = (dout2d @ weight.reshape(-1, weight.shape[3]).T).reshape(x.shape) if input_grad else None
        return dx, (x.reshape(-1, x.shape[3]).T @ dout2d).reshape(weight.shape), dbias
    x, windows, weight, stride, pads = kept
    kernel, f, x_shape = weight.shape[:2], weight.shape[3], x.shape
    weight2d = weight.reshape(-1, f)
    n = dout.shape[0]
    back_pads = (kernel[0] - 1 - pads[0], kernel[1] - 1 - pads[1])
    # For stride 1, dx is the correlation of dout with the flipped, transposed kernel ("full" padding):
    # gathering dout's windows and one GEMM with K = kh*kw*F beat a GEMM to (kh*kw*C) column
    # gradients followed by their scatter-add (col2im) on every airbench layer. Not for valid
    # convolutions: there the full correlation would run over a wider border of zeros than the forward.
    full = input_grad and stride == (1, 1) and all(0 <= back <= pad for back, pad in zip(back_pads, pads))
    if full:
        flipped = weight[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, x_shape[3])
        dout_windows = _windows(
            # A new buffer, not the workspace: it is needed only during this call, and one kept per
            # layer would hold 0.6 GB between steps at speedrun93's batch of 1024.
            _source(dout, kernel, (1, 1), back_pads, x_shape[1:3], None, "dout"),
            kernel,
            (1, 1),
            x_shape[1:3],
        )
    elif input_grad:
        offsets = list(_offsets(kernel, stride, pads, x_shape[1:3], dout.shape[1:3]))
    dx = np.empty(x_shape, dout.dtype) if input_grad else None
    per_block, per_unit = parallel.units_of_blocks(n, _images_per_block(windows.shape), BLOCKS_PER_UNIT)
    partials = np.empty((math.ceil(n / per_unit), weight2d.shape[0], f), dout.dtype)

    def work(unit: slice) -> None:
        partial = partials[unit.start // per_unit]
        for start in range(unit.start, unit.stop, per_block):
            images = slice(start, min(start + per_block, unit.stop))
            block_dout = dout[images].reshape(-1, f)
            if start == unit.start:
                np.matmul(_gather(windows, images).T, block_dout, out=partial)
            else:
                partial += _gather(windows, images).T @ block_dout
            if full:
                np.matmul(_gather(dout_windows, images), flipped, out=dx[images].reshape(-1, x_shape[3]))
            elif input_grad:
                _add_windows(dx[images], dout[images], weight2d, kernel, offsets)

    parallel.for_blocks(work, n, per_unit, single_threaded_blas=True)
    return dx, partials.sum(axis=0).reshape(weight.shape), dbias


# --------------------------------------------------------------------------- pooling
def _window_slices(size, stride, out_hw):
    for i in range(size[0]):
        for j in range(size[1]):
            yield (
                slice(None),
                slice(i, i + (out_hw[0] - 1) * stride[0] + 1, stride[0]),
                slice(j, j + (out_hw[1] - 1) * stride[1] + 1, stride[1]),
                slice(None),
            )


def _pool_windows(in_hw, size, stride) -> tuple[tuple[int, int], tuple[int, int], list[tuple]]:
    """-> (size, stride, one index tuple per window offset); ``stride`` defaults to ``size``."""
    size = pair(size)
    stride = pair(stride) if stride is not None else size
    return size, stride, list(_window_slices(size, stride, pool_geometry(in_hw, size, stride)))


def maxpool_forward(x: np.ndarray, size=2, stride=None, keep_winners: bool = True) -> tuple[np.ndarray, tuple]:
    """x (N, H, W, C) -> (N, Ho, Wo, C), max over each window.

    The cache keeps which window offset won (uint8 for up to 256 offsets), not ``x``: a quarter of
    the bytes of the output and a sixteenth of the input's for 2x2 windows, which is most of what a
    network's forward pass keeps for backward after its first convolution. Without ``keep_winners``
    (evaluation) there is nothing to keep and no backward.
    """
    size, stride, windows = _pool_windows(x.shape[1:3], size, stride)
    out = np.empty((x.shape[0], *x[windows[0]].shape[1:]), x.dtype)
    winner = np.empty(out.shape, np.uint8 if len(windows) <= 256 else np.int32) if keep_winners else None

    def work(images: slice) -> None:
        o, xs = out[images], x[images]
        np.copyto(o, xs[windows[0]])
        if not keep_winners:
            for window in windows[1:]:
                np.maximum(o, xs[window], out=o)
            return
        won = winner[images]
        won[...] = 0
        larger, step = np.empty(o.shape, bool), np.empty(o.shape, won.dtype)
        for offset, window in enumerate(windows[1:], 1):
            # Strictly larger: ties keep the first maximum in row-major order, as PyTorch routes them.
            np.greater(xs[window], o, out=larger)
            np.maximum(o, xs[window], out=o)
            # won = offset where larger: offsets only grow, so a maximum does it in integer ufuncs
            # (a masked copy is several times slower)
            np.multiply(larger, won.dtype.type(offset), out=step)
            np.maximum(won, step, out=won)

    # Blocks of images sized by their output: every call here is over an output-sized array, and on
    # two threads input-sized blocks (a quarter of the images for 2x2 windows) spent their time
    # handing the GIL back and forth (docs/measurements.md).
    parallel.for_blocks(work, x.shape[0], parallel.rows_per_block(math.prod(out.shape[1:])))
    return out, (winner, x.shape, windows, size, stride)


def maxpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each window's gradient goes to one input: its first maximum in row-major order, as in PyTorch
    (after a ReLU, windows of equal zeros are common; sharing the gradient among them would be wrong)."""
    winner, in_shape, windows, size, stride = cache
    if winner is None:
        raise ValueError("maxpool_backward: the forward pass kept no winners (keep_winners=False, as in evaluation)")
    disjoint = stride[0] >= size[0] and stride[1] >= size[1]
    # Only windows that tile the input exactly (stride == size, no rows or columns left over) write
    # every input; with gaps between windows (stride > size) or a remainder, the rest must be zero.
    tiled = stride == size and winner.shape[1] * size[0] == in_shape[1] and winner.shape[2] * size[1] == in_shape[2]
    dx = np.empty(in_shape, dout.dtype)

    def work(images: slice) -> None:
        won, douts, dxs = winner[images], dout[images], dx[images]
        if not tiled:
            dxs[...] = 0
        hit = np.empty(won.shape, bool)
        for offset, window in enumerate(windows):
            np.equal(won, offset, out=hit)
            if disjoint:  # every input is in one window: write, do not accumulate
                np.multiply(douts, hit, out=dxs[window])
            else:
                dxs[window] += douts * hit

    parallel.for_blocks(work, in_shape[0], parallel.rows_per_block(math.prod(winner.shape[1:])))  # as forward
    return dx
