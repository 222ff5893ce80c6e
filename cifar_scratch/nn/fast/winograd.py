"""Winograd F(m x m, 3x3) convolution (Lavin & Gray, 2016) for stride-1 3x3 layers, 'same' or 'valid',
m = 4 or 5: 4x (m = 4) or 4.6x (m = 5) fewer multiplications than direct convolution, the same
results within float32 rounding.

The output is cut into m x m tiles. Each needs the n x n input tile around it (n = m + 2), d, and for a
3x3 kernel g

    out tile = A^T [ (G g G^T) * (B^T d B) ] A          (* multiplies element by element)

with constant matrices from interpolation at m + 1 points and infinity (:func:`exact_transforms`). For
F(4x4), per input channel c and filter f the 36 products (G g G^T) * (B^T d B) replace the 16 x 9 =
144 of direct convolution; summed over c, they are n^2 matrix products, one per frequency k:

    M[k] (tiles, F) = V[k] (tiles, C) @ U[k] (C, F),   V = B^T d B of every tile,  U = G g G^T.

Each layer takes the tile size that transforms fewer values (:func:`tile_size`): tiles overhang an
output whose sides m does not divide, and the overhang is computed for nothing. 15x15, the speedrun
nets' second size, takes 5x5 tiles; 31x31, 7x7 and 3x3 take 4x4.

Each transform m x m^T is two small GEMMs, one per side of the tile (:func:`_sandwich`): BLAS speed,
where twenty elementwise passes would be memory-bound (the F(2x2, 3x3) prototype lost that way), and
a third of the arithmetic of one GEMM with the dense Kronecker matrix (B^T (x) B^T, 36x36), which
it replaced (docs/measurements.md). The gradients (:func:`backward`) are the
forward pass transposed, both from dM = A dy A^T, the gradient of every tile's n^2 products:

- weight: dU[k] = sum over tiles of V[k]^T dM[k] (n^2 GEMMs whose inner dimension is the tiles), with
  V as the forward pass kept it; dW = G^T dU G;
- input: dV[k] = dM[k] U[k]^T, then B dV B^T is the gradient of every n x n input tile, added into the
  input where the tile was read. Its transforms run over the C input channels; dx as a convolution of
  dout by the turned kernel would transform dout's F channels, and for 'valid' layers more tiles.

Accuracy: the transforms' entries reach 5 (B) and 8 (A) for F(4x4), and they amplify rounding: in
float32 the largest error is about 1e-5 of the largest output, one decimal digit worse than im2col;
F(5x5)'s points keep it at that order (tests/nn/test_winograd.py states and checks the bound). Where
it pays (:func:`pays`): the mixing GEMMs' inner dimension is C, not 9C as in im2col, and with very few
channels the saved multiplications do not pay for the transforms (the per-shape table:
docs/measurements.md).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from cifar_scratch.nn.fast import parallel

#: The interpolation points of each output tile size m, infinity besides: F(m x m, 3x3) needs m + 2.
#: F(4x4) takes Lavin & Gray's; F(5x5) adds -1/2, whose float32 error measured lowest among 1/2, -1/2,
#: 3 and -3 (within 1.2x of F(4x4)'s, where 3 or -3 gave 30-45x).
POINTS = {4: (0, 1, -1, 2, -2), 5: (0, 1, -1, 2, -2, Fraction(-1, 2))}


def _polynomial(roots) -> list[Fraction]:
    """-> the coefficients, lowest power first, of the product of (x - r) over ``roots``."""
    coefficients = [Fraction(1)]
    for root in roots:
        coefficients = [a - root * b for a, b in zip([Fraction(0), *coefficients], [*coefficients, Fraction(0)])]
    return coefficients


@functools.cache
def exact_transforms(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (B^T (n, n), G (n, 3), A^T (m, n)), n = m + 2, of F(m x m, 3x3), by Toom-Cook at the points
    p of :data:`POINTS` and infinity, computed in exact fractions and then rounded once to float64:

    - A^T[i, j] = p_j^i: the output tile read off the product polynomial at each point;
    - G[j, k] = p_j^k / prod over l != j of (p_j - p_l): the kernel at each point, with the Lagrange
      denominator;
    - B^T row j: the coefficients of prod over l != j of (x - p_l), so that sum_j of each product
      times its Lagrange basis is the linear convolution.

    Infinity contributes the last row or column: the leading coefficient. For m = 4 these are Lavin &
    Gray's matrices, entry for entry (tests/nn/test_winograd.py).
    """
    points = [Fraction(p) for p in POINTS[m]]
    basis = [[p for p in points if p != q] for q in points]
    input_t = [[*_polynomial(others), Fraction(0)] for others in basis] + [_polynomial(points)]
    kernel_t = [[q**k / math.prod(q - p for p in others) for k in range(3)] for q, others in zip(points, basis)]
    kernel_t.append([Fraction(0), Fraction(0), Fraction(1)])
    output_t = [[*(q**i for q in points), Fraction(i == m - 1)] for i in range(m)]
    return tuple(np.array(rows, dtype=np.float64) for rows in (input_t, kernel_t, output_t))


def bias_frequency(m: int) -> int:
    """The frequency k = n i + j whose output transform A^T e_i e_j^T A is a tile of ones: i = j = the
    point 1, where A^T's column is all ones (tests/nn/test_winograd.py checks the bias's effect)."""
    one = POINTS[m].index(1)
    return (m + 2) * one + one


#: Transformed values per block of work, (m + 2)^2 for each tile: the mixing GEMMs need rows, and a
#: block's transformed tiles must stay in the caches. 128 tiles of F(4x4); F(5x5) blocks hold as many
#: values in 94 tiles (the sizes tried: docs/measurements.md).
VALUES_PER_BLOCK = 128 * 36


@functools.cache
def _transforms(m: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (B^T, G, A^T) of F(m x m, 3x3) in ``dtype``: the transforms of tiles, kernels and outputs."""
    return tuple(a.astype(dtype) for a in exact_transforms(m))


def _sandwich(m: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """m (p, q), x (q, q, ...) -> m x m^T over the first two axes, (p, p, ...), for every trailing index
    at once: one GEMM contracts the first axis, a batch of p GEMMs the second. Written into ``out``
    (p, p, ...) when given."""
    p, q = m.shape
    one_side = m @ x.reshape(q, -1)  # (p, q * rest)
    target = None if out is None else np.reshape(out, (p, p, -1), copy=False)
    return np.matmul(m, one_side.reshape(p, q, -1), out=target).reshape(p, p, *x.shape[2:])


def output_size(in_hw, pad: int) -> tuple[int, int]:
    """(H, W) of the input -> (Ho, Wo): a 3x3 kernel with ``pad`` pixels of zeros all round."""
    return tuple(size + 2 * pad - 2 for size in in_hw)


def applies(kernel, stride, pads, in_hw, out_hw) -> bool:
    """Whether a convolution is one this module computes: 3x3, stride 1, and the same padding p on every
    side, p = 1 ('same') or 0 ('valid')."""
    if tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or pads[0] != pads[1] or pads[0] not in (0, 1):
        return False
    return tuple(out_hw) == output_size(in_hw, pads[0])


def pays(c: int, f: int) -> bool:
    """Whether Winograd beat im2col for C -> F channels, measured over the forward and both gradients
    (benchmarks/conv_shapes.py, docs/measurements.md): with 16 channels or more on each side, at every
    shape of the shipped nets, on both CPU classes; with 3 input channels (an RGB image) the transforms
    cost more than the 27-long dot products they replace."""
    return min(c, f) >= 16


def tile_size(out_hw) -> int:
    """The output tile size m for an output of (Ho, Wo): of F(4x4) and F(5x5), the one with fewer
    transformed values, (m + 2)^2 per tile, over the tiles that cover the output (F(4x4) on a tie).
    Tiles overhang an output whose sides m does not divide, and the overhang is computed and dropped:
    on 15x15, F(4x4) takes 16 tiles of 36 values (13% of the outputs wasted), F(5x5) 9 of 49 (none)."""
    cost = {m: math.prod(-(-size // m) for size in out_hw) * (m + 2) ** 2 for m in POINTS}
    return min(cost, key=lambda m: (cost[m], m))


def kernel_frequencies(weight: np.ndarray, m: int) -> np.ndarray:
    """weight (3, 3, C, F) -> U ((m + 2)^2, C, F): G g G^T of F(m x m, 3x3) for every (c, f)."""
    _, kernel_t, _ = _transforms(m, weight.dtype)
    return _sandwich(kernel_t, weight).reshape(-1, *weight.shape[2:])


def _tiles(n: int, h: int, w: int) -> tuple[int, int, int, int]:
    """-> (tile size m (:func:`tile_size`), tile rows, tile columns, images per block of work) for N
    images of H x W outputs."""
    m = tile_size((h, w))
    th, tw = -(-h // m), -(-w // m)
    return m, th, tw, parallel.even_blocks(n, VALUES_PER_BLOCK // (m + 2) ** 2 // (th * tw))


def _input_frequencies(x: np.ndarray, pad: int, th: int, tw: int, m: int, out: np.ndarray | None = None) -> np.ndarray:
    """x (n, H, W, C) -> V (n'^2, n th tw, C), n' = m + 2: B^T d B of every n' x n' tile (stride m) of x
    with ``pad`` pixels of zeros on top and left and enough below and right for th x tw tiles; written
    into ``out`` (a view of :func:`frequencies_buffer`'s array) when given."""
    n, h, w, c = x.shape
    padded = np.empty((n, m * th + 2, m * tw + 2, c), x.dtype)
    padded[:, :pad] = 0
    padded[:, h + pad :] = 0
    padded[:, pad : h + pad, :pad] = 0
    padded[:, pad : h + pad, w + pad :] = 0
    padded[:, pad : h + pad, pad : w + pad] = x
    input_t, _, _ = _transforms(m, x.dtype)
    v = _sandwich(input_t, _gather_tiles(padded, m + 2, m, th, tw), out)
    return v.reshape((m + 2) ** 2, -1, c) if out is None else out


def _gather_tiles(images: np.ndarray, size: int, stride: int, th: int, tw: int) -> np.ndarray:
    """images (n, >= stride th + size - stride, >= stride tw + size - stride, C) -> a copy (size, size,
    n, th, tw, C) of every size x size tile at ``stride``: [i, j, n, ty, tx, c] = images[n, stride ty +
    i, stride tx + j, c], offsets first."""
    n, c, s = images.shape[0], images.shape[3], images.strides
    view = np.lib.stride_tricks.as_strided(
        images, (size, size, n, th, tw, c), (s[1], s[2], s[0], stride * s[1], stride * s[2], s[3])
    )
    tiles = np.empty(view.shape, images.dtype)
    np.copyto(tiles, view)
    return tiles


def _tile_regions(h: int, w: int, th: int, tw: int, m: int):
    """The output split by how its m x m tiles fit: -> for each of (full tiles, bottom strip, right
    strip, corner) that is not empty, (pixel rows, pixel columns, tile rows, tile columns, rows in a
    tile, columns in a tile). Only the last tile row and column may overhang H x W, so four regions,
    each one transposing copy between (N, H, W, F) and tiles (m, m, N, th, tw, F), cover any size."""
    full_h, full_w = h // m, w // m
    rows = [(slice(0, m * full_h), slice(0, full_h), m), (slice(m * full_h, h), slice(full_h, th), h - m * full_h)]
    cols = [(slice(0, m * full_w), slice(0, full_w), m), (slice(m * full_w, w), slice(full_w, tw), w - m * full_w)]
    for pixel_rows, tile_rows, a in rows:
        for pixel_cols, tile_cols, b in cols:
            if pixel_rows.stop > pixel_rows.start and pixel_cols.stop > pixel_cols.start:
                yield pixel_rows, pixel_cols, tile_rows, tile_cols, a, b


def _pixels(images: np.ndarray, pixel_rows: slice, pixel_cols: slice, a: int, b: int) -> np.ndarray:
    """A region of images (n, H, W, F) as a view (n, tile rows, a, tile columns, b, F), never a copy."""
    region = images[:, pixel_rows, pixel_cols]
    n, rows, cols, f = region.shape
    return np.reshape(region, (n, rows // a, a, cols // b, b, f), copy=False)


def _place_tiles(out: np.ndarray, tiles: np.ndarray, m: int) -> None:
    """tiles (>= a, >= b, n, th, tw, F), [a, b, n, ty, tx] the output pixel (m ty + a, m tx + b) -> out
    (n, H, W, F), dropping what overhangs. Four copies at most: each NumPy call is one the pool's other
    worker may wait on for the GIL (docs/measurements.md), where one per pixel of a tile made m^2."""
    th, tw = tiles.shape[3:5]
    for pixel_rows, pixel_cols, tile_rows, tile_cols, a, b in _tile_regions(*out.shape[1:3], th, tw, m):
        part = tiles[:a, :b, :, tile_rows, tile_cols]  # (a, b, n, rows, cols, F)
        np.copyto(_pixels(out, pixel_rows, pixel_cols, a, b), part.transpose(2, 3, 0, 4, 1, 5))


def _take_tiles(dout: np.ndarray, th: int, tw: int, m: int) -> np.ndarray:
    """dout (n, H, W, F) -> tiles (m, m, n, th, tw, F) as :func:`_place_tiles` would place them, zero
    where the tiles overhang H x W: the transpose of the placement, for the weight gradient."""
    n, h, w, f = dout.shape
    tiles = np.empty((m, m, n, th, tw, f), dout.dtype)
    for pixel_rows, pixel_cols, tile_rows, tile_cols, a, b in _tile_regions(h, w, th, tw, m):
        part = tiles[:, :, :, tile_rows, tile_cols]
        np.copyto(part[:a, :b].transpose(2, 3, 0, 4, 1, 5), _pixels(dout, pixel_rows, pixel_cols, a, b))
        part[a:] = 0
        part[:a, b:] = 0
    return tiles


def frequencies_buffer(x_shape: tuple[int, ...], pad: int, dtype) -> np.ndarray:
    """An empty ((m + 2)^2, N th tw, C) array in which :func:`forward` keeps the V of every tile of an
    (N, H, W, C) input, for :func:`backward`: (m + 2)^2 / m^2 times the input's bytes (2.25 for
    F(4x4)), plus padding to whole tiles."""
    m, th, tw, _ = _tiles(x_shape[0], *output_size(x_shape[1:3], pad))
    return np.empty(((m + 2) ** 2, x_shape[0] * th * tw, x_shape[3]), dtype)


def _of_images(v: np.ndarray, images: slice, tiles_per_image: int) -> np.ndarray:
    """The part of V (n'^2, N th tw, C) that holds the tiles of ``images``, a view."""
    return v[:, images.start * tiles_per_image : images.stop * tiles_per_image]


def input_frequencies(x: np.ndarray, pad: int = 1) -> np.ndarray:
    """x (N, H, W, C) -> V (n'^2, N th tw, C): the V of every tile, as :func:`forward` keeps it (a layer
    gets V from its forward pass; this serves tests and benchmarks). Blocks of images in the pool."""
    m, th, tw, per_block = _tiles(x.shape[0], *output_size(x.shape[1:3], pad))
    v = frequencies_buffer(x.shape, pad, x.dtype)

    def work(images: slice) -> None:
        _input_frequencies(x[images], pad, th, tw, m, _of_images(v, images, th * tw))

    parallel.for_blocks(work, x.shape[0], per_block, single_threaded_blas=True)
    return v


def forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, pad: int = 1, keep: np.ndarray | None = None
) -> np.ndarray:
    """x (N, H, W, C), weight (3, 3, C, F), bias (F,) or None -> out (N, H + 2 pad - 2, W + 2 pad - 2, F):
    a stride-1 3x3 convolution of x with ``pad`` pixels of zeros all round, in tiles of
    :func:`tile_size`, blocks of images in the thread pool. ``keep``: None, or an array from
    :func:`frequencies_buffer` that receives the input's V, for :func:`backward`."""
    n, (h, w), f = x.shape[0], output_size(x.shape[1:3], pad), weight.shape[3]
    m, th, tw, per_block = _tiles(n, h, w)
    _, _, output_t = _transforms(m, x.dtype)
    at_bias = bias_frequency(m)
    u = kernel_frequencies(weight, m)
    out = np.empty((n, h, w, f), x.dtype)

    def work(images: slice) -> None:
        target_v = None if keep is None else _of_images(keep, images, th * tw)
        mixed = np.matmul(_input_frequencies(x[images], pad, th, tw, m, target_v), u)  # (n'^2, tiles, F)
        if bias is not None:
            # Added at the frequency that reaches every output of its tile once: a pass over 1/n'^2 of
            # the frequencies instead of one over the output
            mixed[at_bias] += bias
        _place_tiles(out[images], _sandwich(output_t, mixed.reshape(m + 2, m + 2, -1, th, tw, f)), m)

    parallel.for_blocks(work, n, per_block, single_threaded_blas=True)
    return out


#: Blocks per unit of pool work; each unit adds its blocks' weight gradients into one partial sum.
BLOCKS_PER_UNIT = 4


def backward(v: np.ndarray, dout: np.ndarray, weight: np.ndarray, pad: int = 1, input_grad: bool = True):
    """V (n'^2, N th tw, C) of the input, as :func:`forward` kept it, dout (N, Ho, Wo, F) and weight (3,
    3, C, F) of a convolution with ``pad`` -> dx (N, Ho + 2 - 2 pad, Wo + 2 - 2 pad, C) (None unless
    ``input_grad``), dweight (3, 3, C, F).

    Both gradients start from dM = A dy A^T, the gradient of every tile's n'^2 products, taken once per
    block of images. dweight: dU[k] = sum over tiles of V[k]^T dM[k], then G^T dU G; units of blocks sum
    into partials that are added in a fixed order, so the bits depend on the shapes only, never on the
    number of workers. dx: dV[k] = dM[k] U[k]^T, the tiles' gradients B dV B^T, and each n' x n' tile
    added into the input where it was read (tiles overlap by 2 pixels). That is the forward pass
    transposed: its transforms run over C channels where dx as a convolution of dout would run over
    F, and it needs no more tiles than the forward pass ('valid' layers' dx as a convolution would
    need more).
    """
    n, h, w, f = dout.shape
    c, dtype = v.shape[-1], v.dtype
    m, th, tw, per_block = _tiles(n, h, w)
    input_t, kernel_t, output_t = _transforms(m, dtype)
    per_block, per_unit = parallel.units_of_blocks(n, per_block, BLOCKS_PER_UNIT)
    partials = np.empty((math.ceil(n / per_unit), (m + 2) ** 2, c, f), dtype)
    if input_grad:
        # (n'^2, F, C), contiguous: NumPy's batched matmul is slower against a transposed view
        u_t = np.ascontiguousarray(kernel_frequencies(weight, m).transpose(0, 2, 1))
        dx = np.empty((n, h + 2 - 2 * pad, w + 2 - 2 * pad, c), dtype)

    def work(unit: slice) -> None:
        partial = partials[unit.start // per_unit]
        for start in range(unit.start, unit.stop, per_block):
            images = slice(start, min(start + per_block, unit.stop))
            tiles = _take_tiles(dout[images], th, tw, m)
            dmixed = _sandwich(output_t.T, tiles).reshape((m + 2) ** 2, -1, f)  # A dy A^T of every tile
            frequencies = _of_images(v, images, th * tw).transpose(0, 2, 1)  # (n'^2, C, tiles)
            if start == unit.start:
                np.matmul(frequencies, dmixed, out=partial)
            else:
                partial += frequencies @ dmixed
            if input_grad:
                dtiles = _sandwich(input_t.T, np.matmul(dmixed, u_t).reshape(m + 2, m + 2, -1, th, tw, c))  # B dV B^T
                _add_input_tiles(dx[images], dtiles, pad, m)

    parallel.for_blocks(work, n, per_unit, single_threaded_blas=True)
    du = partials.sum(axis=0)  # (n'^2, C, F)
    return (dx if input_grad else None), _sandwich(kernel_t.T, du.reshape(m + 2, m + 2, c, f))


def _add_input_tiles(dx: np.ndarray, dtiles: np.ndarray, pad: int, m: int) -> None:
    """dtiles (m + 2, m + 2, n, th, tw, C), the gradient of every input tile read at stride m from the
    input with ``pad`` pixels of zeros -> dx (n, H, W, C), the sum over the tiles that read each pixel.
    dtiles is scratch: it is overwritten.

    Pixel (i, j) of tile (ty, tx) is input pixel (m ty + i - pad, m tx + j - pad): rows and columns
    pad .. pad + m - 1 of a tile, its core, hold pixels that no other tile's core holds, and each other
    row or column is one of a neighbour's core. Those are added into the neighbour first, in tile space,
    where each addition is a long strided pass; then the cores are placed as the forward pass places
    output tiles, and what lies past the last cores (only without padding) from the last tiles.
    """
    th, tw = dtiles.shape[3:5]

    def at(axis: int, offset: int, tiles: slice) -> tuple:  # offset along axis 0 or 1, tiles along axis + 3
        index = [slice(None)] * 6
        index[axis], index[axis + 3] = offset, tiles
        return tuple(index)

    for axis in (1, 0):  # columns over all rows, then rows over all columns: a corner takes both steps
        for i in range(pad):  # before the core: the previous tile's core, at i + m
            dtiles[at(axis, i + m, slice(None, -1))] += dtiles[at(axis, i, slice(1, None))]
        for i in range(pad + m, m + 2):  # past the core: the next tile's core, at i - m
            dtiles[at(axis, i - m, slice(1, None))] += dtiles[at(axis, i, slice(None, -1))]

    def spans(size: int, tiles: int) -> list[tuple[slice, slice, slice]]:
        # (pixels, offsets in a tile, tiles): the cores, then the last tile's rest past them
        cores = (slice(0, min(size, m * tiles)), slice(pad, pad + m), slice(None))
        return [cores, (slice(m * tiles, size), slice(pad + m, pad + size - m * tiles + m), slice(tiles - 1, tiles))]

    for pixel_rows, rows, tile_rows in spans(dx.shape[1], th):
        for pixel_cols, cols, tile_cols in spans(dx.shape[2], tw):
            if pixel_rows.stop > pixel_rows.start and pixel_cols.stop > pixel_cols.start:
                _place_tiles(dx[:, pixel_rows, pixel_cols], dtiles[rows, cols, :, tile_rows, tile_cols], m)
