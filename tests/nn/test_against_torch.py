"""Differential tests: every layer type against PyTorch in float64 over seeded random shapes and options.

Each case draws a batch, an odd or non-square image, channels, kernel sizes 1-5 (non-square), strides
1-3, every padding mode, pooling windows with strides smaller, equal and larger than the window,
inputs with ties (max pooling), batch norm in both modes; it compares the forward pass and every
gradient (input and parameters) and, for batch norm, the running statistics.
"""

import numpy as np
import pytest

from cifar_scratch.nn import layers as L
from cifar_scratch.nn.shapes import resolve_padding

torch = pytest.importorskip("torch", reason="PyTorch is the reference here: pip install torch==2.13.0")
F = torch.nn.functional
CASES = 300
TOLERANCE = 1e-9  # float64 on both sides: only summation order differs


def nchw(x: np.ndarray):
    return torch.tensor(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x, dtype=torch.float64, requires_grad=True)


def nhwc(t) -> np.ndarray:
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def close(ours, theirs, what, tolerance=TOLERANCE):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    scale = max(1.0, float(np.abs(theirs).max(initial=0.0)))
    error = float(np.abs(ours - theirs).max(initial=0.0)) / scale
    assert error < tolerance, (what, error)


def run_layer(layer, x, rng):
    """Forward and backward ours; return (out, dx, grads, dout)."""
    layer.build(x.shape[1:], np.random.default_rng(0), np.float64)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout.copy())
    return out, dx, {k: v.copy() for k, v in layer.grads.items()}, dout


def image(rng, ties=False, min_side=1):
    n, h, w, c = rng.integers(1, 4), rng.integers(min_side, 10), rng.integers(min_side, 10), rng.integers(1, 5)
    if ties:  # few distinct values: many windows hold equal maxima
        return rng.integers(0, 3, (n, h, w, c)).astype(np.float64)
    return rng.standard_normal((n, h, w, c))


def test_conv2d_matches_torch():
    rng = np.random.default_rng(101)
    done = 0
    while done < CASES:
        x = image(rng)
        kernel = tuple(int(k) for k in rng.integers(1, 6, 2))
        stride = tuple(int(s) for s in rng.integers(1, 4, 2))
        padding = ["same", "valid", int(rng.integers(0, 4))][rng.integers(3)]
        layer = L.Conv2D(int(rng.integers(1, 5)), kernel, stride, padding, bias=bool(rng.integers(2)))
        try:
            layer.plan(x.shape[1:])
        except ValueError:  # the kernel does not fit this input: draw again
            continue
        out, dx, grads, dout = run_layer(layer, x, rng)
        (top, bottom), (left, right) = (resolve_padding(padding, kernel[a], stride[a], x.shape[1 + a]) for a in (0, 1))
        if padding == "same":
            assert out.shape[1:3] == tuple(-(-x.shape[1 + a] // stride[a]) for a in (0, 1))
        xt = nchw(x)
        weight = torch.tensor(np.ascontiguousarray(layer.params["weight"].transpose(3, 2, 0, 1)), requires_grad=True)
        bias = torch.tensor(layer.params["bias"], requires_grad=True) if layer.use_bias else None
        result = F.conv2d(F.pad(xt, (left, right, top, bottom)), weight, bias, stride)
        result.backward(torch.tensor(np.ascontiguousarray(dout.transpose(0, 3, 1, 2))))
        close(out, nhwc(result), "conv output")
        close(dx, nhwc(xt.grad), "conv input gradient")
        close(grads["weight"], weight.grad.numpy().transpose(2, 3, 1, 0), "conv weight gradient")
        if bias is not None:
            close(grads["bias"], bias.grad.numpy(), "conv bias gradient")
        done += 1


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch_for_every_stride(kind):
    rng = np.random.default_rng(202 if kind == "max" else 303)
    done = 0
    while done < CASES:
        x = image(rng, ties=kind == "max" and done % 2 == 0)
        size = tuple(int(k) for k in rng.integers(1, 5, 2))
        stride = tuple(int(s) for s in rng.integers(1, 5, 2))  # smaller, equal and larger than the window
        layer = (L.MaxPool2D if kind == "max" else L.AvgPool2D)(size, stride)
        try:
            layer.plan(x.shape[1:])
        except ValueError:
            continue
        out, dx, _, dout = run_layer(layer, x, rng)
        xt = nchw(x)
        pool = F.max_pool2d if kind == "max" else F.avg_pool2d
        result = pool(xt, size, stride)
        result.backward(torch.tensor(np.ascontiguousarray(dout.transpose(0, 3, 1, 2))))
        close(out, nhwc(result), f"{kind} pool output {size} {stride}")
        close(dx, nhwc(xt.grad), f"{kind} pool input gradient {size} {stride} {x.shape}")
        done += 1


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_global_pooling_matches_torch(kind):
    rng = np.random.default_rng(404)
    for case in range(CASES):
        x = image(rng, ties=kind == "max" and case % 2 == 0)
        layer = L.GlobalMaxPool() if kind == "max" else L.GlobalAvgPool()
        out, dx, _, dout = run_layer(layer, x, rng)
        xt = nchw(x)
        result = (F.adaptive_max_pool2d if kind == "max" else F.adaptive_avg_pool2d)(xt, 1).flatten(1)
        result.backward(torch.tensor(dout))
        close(out, result.detach().numpy(), "global pool output")
        if kind == "avg" or case % 2:  # PyTorch does not define which of equal maxima gets the gradient here
            close(dx, nhwc(xt.grad), "global pool input gradient")


def test_batchnorm_matches_torch_in_both_modes():
    rng = np.random.default_rng(505)
    for case in range(CASES):
        training, affine = bool(case % 2), bool(rng.integers(2)) or case < 10
        x = image(rng) if rng.integers(2) else rng.standard_normal((int(rng.integers(2, 9)), int(rng.integers(1, 6))))
        if training and np.prod(x.shape[:-1]) < 2:
            continue  # batch statistics need two values per channel (PyTorch refuses one)
        momentum, eps = float(rng.uniform(0.01, 1.0)), float(10.0 ** rng.uniform(-6, -1))
        layer = L.BatchNorm(momentum, eps, affine)
        layer.build(x.shape[1:], rng, np.float64)
        for value in [*layer.params.values(), layer.buffers["running_mean"]]:
            value[...] = rng.standard_normal(value.shape)
        layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, layer.buffers["running_var"].shape)
        running = {k: torch.tensor(v.copy()) for k, v in layer.buffers.items()}
        layer.training = training
        out = layer.forward(x)
        dout = rng.standard_normal(out.shape)
        xt = nchw(x)
        weight = torch.tensor(layer.params["weight"], requires_grad=True) if affine else None
        bias = torch.tensor(layer.params["bias"], requires_grad=True) if affine else None
        result = F.batch_norm(xt, running["running_mean"], running["running_var"], weight, bias, training, momentum, eps)
        result.backward(torch.tensor(dout.transpose(0, 3, 1, 2) if x.ndim == 4 else dout))
        close(out, nhwc(result), "batch norm output")
        close(layer.buffers["running_mean"], running["running_mean"].numpy(), "running mean")
        close(layer.buffers["running_var"], running["running_var"].numpy(), "running variance")
        if training:
            dx = layer.backward(dout.copy())
            close(dx, nhwc(xt.grad), "batch norm input gradient")
            if affine:
                close(layer.grads["weight"], weight.grad.numpy(), "batch norm weight gradient")
                close(layer.grads["bias"], bias.grad.numpy(), "batch norm bias gradient")


def test_dense_matches_torch():
    rng = np.random.default_rng(606)
    for _ in range(CASES):
        n, d, units, use_bias = int(rng.integers(1, 6)), int(rng.integers(1, 12)), int(rng.integers(1, 9)), bool(rng.integers(2))
        x = rng.standard_normal((n, d))
        layer = L.Dense(units, use_bias)
        out, dx, grads, dout = run_layer(layer, x, rng)
        xt = nchw(x)
        weight = torch.tensor(layer.params["weight"].T.copy(), requires_grad=True)
        bias = torch.tensor(layer.params["bias"], requires_grad=True) if use_bias else None
        result = F.linear(xt, weight, bias)
        result.backward(torch.tensor(dout))
        close(out, result.detach().numpy(), "dense output")
        close(dx, xt.grad.numpy(), "dense input gradient")
        close(grads["weight"], weight.grad.numpy().T, "dense weight gradient")
        if use_bias:
            close(grads["bias"], bias.grad.numpy(), "dense bias gradient")


ACTIVATIONS = {
    "relu": (lambda: L.ReLU(), F.relu),
    "leaky_relu": (lambda: L.LeakyReLU(0.07), lambda t: F.leaky_relu(t, 0.07)),
    "tanh": (lambda: L.Tanh(), torch.tanh),
    "sigmoid": (lambda: L.Sigmoid(), torch.sigmoid),
    "gelu": (lambda: L.GELU(), lambda t: F.gelu(t, approximate="tanh")),
    "gelu-erf": (lambda: L.GELU("none"), F.gelu),
    "flatten": (lambda: L.Flatten(), lambda t: t.permute(0, 2, 3, 1).flatten(1)),
    "scale": (lambda: L.Scale(0.125), lambda t: t * 0.125),
}


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_elementwise_layers_match_torch(kind):
    ours, theirs = ACTIVATIONS[kind]
    rng = np.random.default_rng(707)
    for _ in range(CASES):
        x = image(rng)
        x[rng.random(x.shape) < 0.1] = 0.0  # the kink of ReLU-like functions
        layer = ours()
        out, dx, _, dout = run_layer(layer, x, rng)
        xt = nchw(x)
        result = theirs(xt)
        result.backward(torch.tensor(dout.transpose(0, 3, 1, 2) if dout.ndim == 4 else dout))
        # The erf form's erf is A&S 7.1.26, within 1.5e-7 of the true one, and its slope (the exact
        # derivative of that approximation) within about 1e-6 of the true slope; everything else is exact.
        tolerance = 5e-6 if kind == "gelu-erf" else TOLERANCE
        close(out, nhwc(result) if result.ndim == 4 else result.detach().numpy(), f"{kind} output", tolerance)
        close(dx, nhwc(xt.grad), f"{kind} input gradient", tolerance)
