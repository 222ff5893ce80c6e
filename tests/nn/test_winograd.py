"""Winograd F(4x4, 3x3) and F(5x5, 3x3) in float32 against a float64 direct convolution, within a
stated bound; their transforms; which layers take it, in which tiles; and a backward pass that follows
its forward pass. (Its float64 equality with the
reference convolution, and the planted-bug check of that sweep, are in test_kernels.py.)"""

import numpy as np
import pytest

from cifar_scratch.nn import reference
from cifar_scratch.nn.fast import conv, winograd
from cifar_scratch.nn.layers import Conv2D

#: The largest float32 error accepted, relative to the largest value of the float64 result. The
#: transforms' entries reach 5 (B) and 8 (A) and amplify rounding: on the speedrun nets' shapes the
#: largest error measured was 1.1e-5 here (1.6e-5 at batch 1024, benchmarks/conv_shapes.py), against
#: 7e-7 for im2col: one decimal digit lost, as Lavin & Gray report for F(4x4, 3x3). F(5x5)'s point -1/2
#: keeps it at the same order (7.8e-6 at most here on 15x15 layers). A wrong transform
#: entry, a tile off by a pixel or a missing border gives errors of order one.
BOUND = 5e-5


def _errors(n, h, w, c, f, rng, padding="same") -> list[float]:
    x, weight, bias = (
        rng.standard_normal((n, h, w, c)),
        rng.standard_normal((3, 3, c, f)) / np.sqrt(9 * c),
        rng.standard_normal(f),
    )
    exact, cache = reference.conv2d_forward(x, weight, bias, 1, padding)
    dout = rng.standard_normal(exact.shape)
    exact_grads = reference.conv2d_backward(dout, cache)
    previous = conv.use_algorithm("winograd")
    try:
        out, cache = conv.conv2d_forward(*(a.astype(np.float32) for a in (x, weight, bias)), 1, padding)
        assert cache[0] == "winograd"
        grads = conv.conv2d_backward(dout.astype(np.float32), cache)
    finally:
        conv.use_algorithm(previous)
    assert all(a.dtype == np.float32 for a in (out, *grads))
    return [float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip((out, *grads), (exact, *exact_grads))]


@pytest.mark.parametrize(
    "shape, padding",
    [
        ((2, 31, 31, 24, 64), "same"),
        ((2, 15, 15, 64, 128), "same"),
        ((4, 7, 7, 128, 128), "same"),
        ((8, 3, 3, 256, 256), "same"),
        ((4, 8, 8, 64, 128), "valid"),  # cifar_cnn's 'valid' layers
        ((4, 6, 6, 128, 128), "valid"),
        ((2, 16, 16, 32, 32), "valid"),
        ((3, 5, 5, 16, 16), "valid"),  # 3x3 outputs: tiles overhang, and the input's tile overlaps dx
        ((2, 13, 9, 8, 24), "same"),  # not square, and more filters than channels
        ((3, 7, 7, 16, 16), "valid"),  # 5x5 outputs in one 5x5 tile, which overlaps dx by 2 pixels
        ((2, 17, 17, 16, 24), "valid"),  # 15x15 outputs, F(5x5)
    ],
)
def test_float32_winograd_is_within_the_bound_of_a_float64_direct_convolution(shape, padding):
    errors = _errors(*shape, np.random.default_rng(0), padding)
    assert max(errors) < BOUND, errors


@pytest.mark.parametrize("m, size", [(4, 7), (5, 15)])
def test_the_bound_catches_a_transform_entry_off_by_a_thousandth(monkeypatch, m, size):
    assert winograd.tile_size((size, size)) == m
    input_t, kernel_t, output_t = winograd._transforms(m, np.dtype(np.float32))
    broken = input_t.copy()
    broken[1, 2] *= 1.001
    monkeypatch.setattr(winograd, "_transforms", lambda tile, dtype: (broken, kernel_t, output_t))
    assert max(_errors(2, size, size, 16, 16, np.random.default_rng(0))) > BOUND


def test_toom_cook_gives_lavin_and_grays_f4_matrices_and_f5_convolves_exactly():
    bt, g, at = winograd.exact_transforms(4)
    assert np.array_equal(
        bt,
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
    )
    assert np.array_equal(
        g,
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
    )
    assert np.array_equal(at, [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
    rng = np.random.default_rng(0)
    for m in winograd.POINTS:
        bt, g, at = winograd.exact_transforms(m)
        d, kernel = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
        direct = [[np.sum(d[i : i + 3, j : j + 3] * kernel) for j in range(m)] for i in range(m)]
        assert np.allclose(at @ ((g @ kernel @ g.T) * (bt @ d @ bt.T)) @ at.T, direct, rtol=0, atol=1e-12), m
        ones = np.zeros((m + 2) ** 2)
        ones[winograd.bias_frequency(m)] = 1
        assert np.array_equal(at @ ones.reshape(m + 2, m + 2) @ at.T, np.ones((m, m))), "the bias's frequency"


@pytest.mark.parametrize(
    "out_hw, m", [((31, 31), 4), ((15, 15), 5), ((7, 7), 4), ((3, 3), 4), ((5, 5), 5), ((8, 8), 4), ((16, 16), 4), ((5, 8), 5)]
)
def test_each_layer_takes_the_tiles_with_fewer_transformed_values(out_hw, m):
    """15x15 in 4x4 tiles: 16 of 36 values, 13% of them for outputs that are dropped; in 5x5 tiles, 9 of 49."""
    assert winograd.tile_size(out_hw) == m


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, algorithm, method",
    [
        ((7, 7, 128), 3, 1, "same", "auto", "winograd"),  # 128 x 128 channels: it pays
        ((31, 31, 24), 3, 1, "same", "auto", "winograd"),  # 24 x 128: it pays
        ((32, 32, 3), 3, 1, "same", "auto", "im2col"),  # 3 input channels: it does not
        ((8, 8, 64), 3, 1, "valid", "auto", "winograd"),
        ((31, 31, 24), 3, 1, "same", "winograd", "winograd"),
        ((8, 8, 128), 3, 2, "same", "winograd", "im2col"),  # stride 2: Winograd does not apply
        ((8, 8, 128), 3, 1, 2, "winograd", "im2col"),  # 2 pixels of padding
        ((8, 8, 128), 5, 1, "same", "winograd", "im2col"),
        ((7, 7, 128), 3, 1, "same", "im2col", "im2col"),
    ],
)
def test_which_convolutions_take_winograd(shape, kernel, stride, padding, algorithm, method):
    layer = Conv2D(128, kernel, stride, padding)
    layer.build(shape, np.random.default_rng(0))
    previous = conv.use_algorithm(algorithm)
    try:
        layer.forward(np.zeros((1, *shape), np.float32))
    finally:
        conv.use_algorithm(previous)
    assert layer._cache[1][0] == method


def test_a_backward_pass_follows_the_method_of_its_forward_pass():
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((2, 6, 6, 3)), rng.standard_normal((3, 3, 3, 2))
    dout = rng.standard_normal((2, 6, 6, 2))
    previous = conv.use_algorithm("winograd")
    try:
        _, cache = conv.conv2d_forward(x, weight, None)
    finally:
        conv.use_algorithm(previous)
    dx, dweight, _ = conv.conv2d_backward(dout, cache)  # now im2col is the choice: the cache says Winograd
    assert all(map(np.array_equal, (dx, dweight), winograd.backward(winograd.input_frequencies(x), dout, weight)))


def test_the_weight_gradient_uses_the_transforms_that_the_forward_pass_kept():
    """Winograd's forward pass keeps the V of its input, not the input, for the weight gradient: the same
    bits as transforming the input again, over several blocks and units of work (31x31: 2 images per
    block). In evaluation (keep_cache=False) neither face keeps anything; without a bias there is no
    bias gradient to sum."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 31, 31, 16)).astype(np.float32)
    weight = (rng.standard_normal((3, 3, 16, 8)) / 12).astype(np.float32)
    dout = rng.standard_normal((37, 31, 31, 8)).astype(np.float32)
    previous = conv.use_algorithm("winograd")
    try:
        out, cache = conv.conv2d_forward(x, weight, None)
        evaluated, nothing = conv.conv2d_forward(x, weight, None, keep_cache=False)
    finally:
        conv.use_algorithm(previous)
    assert cache[2].shape == (36, 37 * 8 * 8, 16)  # V, not x (31x31 in 4x4 tiles)
    _, dweight, dbias = conv.conv2d_backward(dout, cache)
    assert dbias is None
    assert np.array_equal(dweight, winograd.backward(winograd.input_frequencies(x), dout, weight, input_grad=False)[1])
    assert nothing is None and np.array_equal(evaluated, out)
    assert reference.conv2d_forward(x[:1], weight, None, keep_cache=False)[1] is None


def test_an_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown convolution algorithm 'fft'; algorithms: im2col, winograd, auto"):
        conv.use_algorithm("fft")


def test_the_config_offers_exactly_the_engines_algorithms():
    import typing

    from cifar_scratch.config.schema import TrainingConfig
    from cifar_scratch.nn import kernels

    assert typing.get_args(TrainingConfig.model_fields["conv_algorithm"].annotation) == kernels.CONV_ALGORITHMS
