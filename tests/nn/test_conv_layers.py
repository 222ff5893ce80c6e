"""Convolution, pooling, batch norm, GELU: numerical gradients in float64, PyTorch in float32, behaviour."""

import numpy as np
import pytest

from cifar_scratch.nn import kernels
from cifar_scratch.nn.fast.conv import Workspace, conv2d_forward
from cifar_scratch.nn.finite_differences import check_layer
from cifar_scratch.nn.layers import (
    GELU,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool2D,
)
from cifar_scratch.nn.shapes import resolve_padding

# Odd, non-square shapes; every stride/padding/kernel variant.
CASES = [
    (lambda: Conv2D(4, kernel=3), (5, 7, 3)),
    (lambda: Conv2D(3, kernel=(2, 3), stride=2, padding="same"), (7, 6, 2)),
    (lambda: Conv2D(3, kernel=3, stride=2, padding="valid"), (7, 8, 2)),
    (lambda: Conv2D(4, kernel=3, padding="valid"), (6, 7, 2)),
    (lambda: Conv2D(3, kernel=3, padding=2, bias=False), (4, 5, 2)),
    (lambda: Conv2D(5, kernel=1), (3, 4, 3)),
    (lambda: Conv2D(3, kernel=2, stride=(1, 2), padding=1, init="dirac"), (5, 6, 3)),
    (lambda: MaxPool2D(2), (5, 7, 3)),
    (lambda: MaxPool2D(3, stride=2), (7, 6, 2)),
    (lambda: MaxPool2D((2, 3)), (4, 6, 3)),
    (lambda: AvgPool2D(2), (5, 7, 3)),
    (lambda: AvgPool2D((2, 3), stride=1), (4, 5, 2)),
    (lambda: GlobalAvgPool(), (3, 5, 4)),
    (lambda: GlobalMaxPool(), (3, 5, 4)),
    (lambda: BatchNorm(), (3, 5, 4)),
    (lambda: BatchNorm(), (7,)),
    (lambda: BatchNorm(affine=False), (3, 4, 2)),
    (lambda: GELU(), (3, 5, 2)),
    (lambda: GELU("none"), (3, 5, 2)),
]
IDS = [
    "conv3",
    "conv2x3-s2-same",
    "conv3-s2-valid",
    "conv3-valid",
    "conv3-pad2-nobias",
    "conv1x1",
    "conv2-s1x2-dirac",
    "maxpool2",
    "maxpool3-s2",
    "maxpool2x3",
    "avgpool2",
    "avgpool2x3-s1",
    "global_avg",
    "global_max",
    "bn-conv",
    "bn-dense",
    "bn-noaffine",
    "gelu",
    "gelu-erf",
]


@pytest.mark.parametrize("make,shape", CASES, ids=IDS)
def test_gradients_match_central_differences_in_float64(make, shape):
    layer = make()
    for check in check_layer(layer, shape, batch=3):
        assert check.max_relative_error < 1e-6, check


def test_same_padding_follows_keras():
    assert resolve_padding("same", 3, 1, 32) == (1, 1)
    assert resolve_padding("same", 3, 2, 32) == (0, 1)  # the odd pixel goes at the end
    assert resolve_padding("same", 2, 1, 5) == (0, 1)
    layer = Conv2D(8, kernel=3, stride=2)
    assert layer.build((32, 31, 3), np.random.default_rng(0)) == (16, 16, 8)
    assert Conv2D(8, padding="valid").build((32, 32, 3), np.random.default_rng(0)) == (30, 30, 8)


def test_dirac_convolution_is_the_identity():
    layer = Conv2D(3, kernel=3, init="dirac", bias=False)
    layer.build((6, 5, 3), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 6, 5, 3)).astype(np.float32)
    assert np.array_equal(layer.forward(x), x)


def test_maxpool_routes_ties_to_the_first_element_only():
    layer = MaxPool2D(2)
    layer.build((2, 2, 1), np.random.default_rng(0))
    x = np.zeros((1, 2, 2, 1), np.float32)  # all four tie, as after a ReLU
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 1, 1), np.float32))
    assert dx[0, :, :, 0].tolist() == [[1, 0], [0, 0]]


def test_fast_maxpool_and_gelu_keep_small_caches_for_backward_and_none_in_evaluation():
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    pool, gelu = MaxPool2D(2), GELU()
    pool.build((8, 8, 3), np.random.default_rng(0))
    gelu.build((8, 8, 3), np.random.default_rng(0))
    pool.forward(x)
    gelu.forward(x)
    (engine, pooled), (_, slope) = pool._cache, gelu._cache
    assert engine is kernels.ENGINES["fast"], "a layer keeps the kernels that made its cache"
    winners = pooled[0]
    assert winners.dtype == np.uint8 and winners.shape == (4, 4, 4, 3), "which offset won, not the input"
    assert slope.shape == x.shape and not any(isinstance(part, np.ndarray) for part in pooled[1:])
    pool.backward(np.ones((4, 4, 4, 3), np.float32))
    gelu.backward(np.ones_like(x))
    assert pool._cache is None and gelu._cache is None, "a backward pass releases what it used"
    pool.eval(), gelu.eval()
    pool.forward(x)
    gelu.forward(x)
    assert pool._cache is None and gelu._cache is None
    with pytest.raises(RuntimeError, match="backward without a training forward pass"):
        pool.backward(np.ones((4, 4, 4, 3), np.float32))
    with pytest.raises(RuntimeError, match="backward without a training forward pass"):
        gelu.backward(np.ones_like(x))


def test_batchnorm_running_statistics_and_eval_mode():
    layer = BatchNorm(momentum=0.1)
    layer.build((4, 4, 2), np.random.default_rng(0))
    x = (np.random.default_rng(0).standard_normal((8, 4, 4, 2)) * [2.0, 0.5] + [3.0, -1.0]).astype(np.float32)
    out = layer.forward(x)
    flat = x.reshape(-1, 2)
    assert np.allclose(out.reshape(-1, 2).mean(0), 0, atol=1e-5) and np.allclose(out.reshape(-1, 2).std(0), 1, atol=1e-3)
    assert np.allclose(layer.buffers["running_mean"], 0.1 * flat.mean(0), rtol=1e-5)
    assert np.allclose(layer.buffers["running_var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    layer.training = False
    before = {k: v.copy() for k, v in layer.buffers.items()}
    expected = (x - before["running_mean"]) / np.sqrt(before["running_var"] + 1e-5)
    assert np.allclose(layer.forward(x), expected, atol=1e-5)
    assert all(np.array_equal(before[k], layer.buffers[k]) for k in before), "eval mode leaves the statistics alone"


def test_float32_in_float32_out_and_inputs_untouched():
    rng = np.random.default_rng(0)
    for make, shape in CASES:
        layer = make()
        out_shape = layer.build(shape, rng)
        x = rng.standard_normal((2, *shape)).astype(np.float32)
        dout = rng.standard_normal((2, *out_shape)).astype(np.float32)
        x_copy, dout_copy = x.copy(), dout.copy()
        out = layer.forward(x)
        dx = layer.backward(dout)
        assert out.dtype == dx.dtype == np.float32, type(layer).__name__
        assert all(g.dtype == np.float32 for g in layer.grads.values())
        assert all(b.dtype == np.float32 for b in layer.buffers.values())
        assert np.array_equal(x, x_copy) and np.array_equal(dout, dout_copy), type(layer).__name__


def test_workspace_keeps_one_buffer_per_name():
    workspace = Workspace()
    weight = np.ones((3, 3, 2, 4), np.float32)
    for batch in (8, 8, 5, 8):
        conv2d_forward(np.ones((batch, 6, 6, 2), np.float32), weight, None, workspace=workspace)
        assert sorted(workspace._arrays) == ["x.padded"]
        assert workspace._arrays["x.padded"].shape == (batch, 8, 8, 2)
    # The buffer's padding border stays zero across reuse: results do not depend on earlier batches.
    x = np.random.default_rng(0).standard_normal((5, 6, 6, 2)).astype(np.float32)
    fresh, _ = conv2d_forward(x, weight, None)
    reused, _ = conv2d_forward(x, weight, None, workspace=workspace)
    assert np.array_equal(fresh, reused)


# --------------------------------------------------------------------------- PyTorch reference
try:
    import torch
except ImportError:  # PyTorch is an optional extra; only the reference comparisons below need it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (pip install torch==2.13.0)")


def _nchw(a):
    return torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), requires_grad=True)


def _torch_reference(layer, x):
    """The same operation built from torch.nn.functional with the layer's weights (NCHW)."""
    F = torch.nn.functional
    if isinstance(layer, Conv2D):
        weight = torch.tensor(layer.params["weight"].transpose(3, 2, 0, 1).copy(), requires_grad=True)
        bias = torch.tensor(layer.params["bias"], requires_grad=True) if "bias" in layer.params else None
        (top, bottom), (left, right) = (
            resolve_padding(layer.padding, layer.kernel[a], layer.stride[a], x.shape[1 + a]) for a in (0, 1)
        )
        xt = _nchw(x)
        out = F.conv2d(F.pad(xt, (left, right, top, bottom)), weight, bias, stride=layer.stride)
        return (
            xt,
            out,
            {"weight": (weight, lambda g: g.permute(2, 3, 1, 0)), **({"bias": (bias, lambda g: g)} if bias is not None else {})},
        )
    xt = _nchw(x) if x.ndim == 4 else torch.tensor(x, requires_grad=True)
    if isinstance(layer, MaxPool2D):
        return xt, F.max_pool2d(xt, layer.size, layer.stride), {}
    if isinstance(layer, AvgPool2D):
        return xt, F.avg_pool2d(xt, layer.size, layer.stride), {}
    if isinstance(layer, GlobalAvgPool):
        return xt, xt.mean(dim=(2, 3)), {}
    if isinstance(layer, GlobalMaxPool):
        return xt, xt.amax(dim=(2, 3)), {}
    if isinstance(layer, GELU):
        return xt, F.gelu(xt, approximate=layer.approximate), {}
    if isinstance(layer, BatchNorm):
        params = {}
        weight = bias = None
        if layer.affine:
            weight = torch.tensor(layer.params["weight"], requires_grad=True)
            bias = torch.tensor(layer.params["bias"], requires_grad=True)
            params = {"weight": (weight, lambda g: g), "bias": (bias, lambda g: g)}
        out = F.batch_norm(
            xt,
            torch.zeros(x.shape[-1]),
            torch.ones(x.shape[-1]),
            weight,
            bias,
            training=True,
            momentum=layer.momentum,
            eps=layer.eps,
        )
        return xt, out, params
    raise AssertionError(layer)


@needs_torch
@pytest.mark.parametrize("make,shape", CASES, ids=IDS)
def test_matches_pytorch_in_float32(make, shape):
    rng = np.random.default_rng(3)
    layer = make()
    out_shape = layer.build(shape, rng)
    for value in layer.params.values():
        value += (0.3 * rng.standard_normal(value.shape)).astype(np.float32)
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    dout = rng.standard_normal((4, *out_shape)).astype(np.float32)
    out = layer.forward(x)
    dx = layer.backward(dout)
    xt, out_t, params = _torch_reference(layer, x)
    to_torch = (lambda a: torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))) if out.ndim == 4 else torch.tensor
    out_t.backward(to_torch(dout))
    ours_out = out.transpose(0, 3, 1, 2) if out.ndim == 4 else out
    ours_dx = dx.transpose(0, 3, 1, 2) if dx.ndim == 4 else dx

    def close(a, b):
        scale = max(1.0, float(np.abs(b).max()))
        return float(np.abs(a - b).max()) / scale

    assert close(ours_out, out_t.detach().numpy()) < 1e-5
    assert close(ours_dx, xt.grad.numpy()) < 1e-4
    for name, (tensor, to_ours) in params.items():
        assert close(layer.grads[name], to_ours(tensor.grad).numpy()) < 1e-4, name


@pytest.mark.parametrize(
    "name,shape,trainable,frozen",
    [
        ("mnist_cnn", (28, 28, 1), 469_172, 0),
        ("fashion_cnn", (28, 28, 1), 467_818, 0),
        ("cifar_cnn", (32, 32, 3), 361_962, 384),
    ],
)
def test_keras_project_parameter_counts(name, shape, trainable, frozen):
    """The three Keras CNN project nets, rebuilt from our configs, report the project's parameter counts."""
    from cifar_scratch.builders import build_model
    from cifar_scratch.config import load_config
    from tests.conftest import REPO

    model = build_model(load_config(REPO / "configs" / f"{name}.yaml").model, shape, 10, np.random.default_rng(0))
    summary = model.summary()
    assert f"Trainable params: {trainable:,}" in summary and f"Non-trainable params: {frozen:,}" in summary
