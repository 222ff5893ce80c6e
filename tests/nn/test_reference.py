"""Kernels, both engines: hand-computed values, float64 gradient checks on odd shapes, dtype preservation.
(tests/nn/test_kernels.py holds every fast kernel equal to its reference over random cases.)"""

import numpy as np
import pytest

from cifar_scratch.nn import kernels
from cifar_scratch.nn import reference as F
from cifar_scratch.nn.fast.elementwise import column_sums
from cifar_scratch.nn.finite_differences import numerical_gradient, relative_error

TOL = 1e-7


def check_input_gradient(forward, backward, x, rng):
    """Loss = sum(out * dout) so that dLoss/dout = dout; compare backward with central differences."""
    out, cache = forward(x)
    dout = rng.standard_normal(out.shape)
    dout_before = dout.copy()
    dx = backward(dout, cache)
    assert np.array_equal(dout, dout_before), "backward must not modify the incoming gradient"
    numeric = numerical_gradient(lambda: float((forward(x)[0] * dout).sum()), x)
    assert relative_error(dx, numeric) < TOL


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_dense_values():
    x = np.array([[1.0, 2.0]])
    w = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    out, _ = F.dense_forward(x, w, np.array([0.5, 0.0, 0.0]))
    assert np.allclose(out, [[5.5, 2.0, 0.0]])


def test_dense_gradients(rng):
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    out, cache = F.dense_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.dense_backward(dout, cache)
    loss = lambda: float((F.dense_forward(x, w, b)[0] * dout).sum())  # noqa: E731
    assert relative_error(dx, numerical_gradient(loss, x)) < TOL
    assert relative_error(dw, numerical_gradient(loss, w)) < TOL
    assert relative_error(db, numerical_gradient(loss, b)) < TOL


@pytest.mark.parametrize("engine", list(kernels.ENGINES))
@pytest.mark.parametrize(
    "name,options",
    [("relu", ()), ("leaky_relu", (0.1,)), ("tanh", ()), ("sigmoid", ()), ("gelu", ()), ("gelu_erf", ())],
)
def test_activation_gradients(engine, name, options, rng):
    K = kernels.ENGINES[engine]
    forward = lambda v: getattr(K, f"{name}_forward")(v, *options)  # noqa: E731
    backward = getattr(K, f"{name.removesuffix('_erf')}_backward")
    x = rng.standard_normal((3, 5, 7))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink of relu-like functions
    check_input_gradient(forward, backward, x, rng)


def test_activation_values():
    x = np.array([-2.0, 0.0, 3.0])
    assert np.allclose(F.relu_forward(x)[0], [0, 0, 3])
    assert np.allclose(F.leaky_relu_forward(x, 0.1)[0], [-0.2, 0, 3])
    assert np.allclose(F.sigmoid_forward(x)[0], 1 / (1 + np.exp(-x)))
    assert np.allclose(F.tanh_forward(x)[0], np.tanh(x))


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, _ = F.sigmoid_forward(np.array([-1000.0, 1000.0], dtype=np.float32))
    assert out.tolist() == [0.0, 1.0]


def test_dropout_is_inverted_and_seeded(rng):
    x = np.ones((2000, 50), dtype=np.float32)
    out, mask = F.dropout_forward(x, 0.25, np.random.default_rng(0))
    assert out.dtype == np.float32
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    assert abs(out.mean() - 1.0) < 0.01  # expectation preserved
    again, _ = F.dropout_forward(x, 0.25, np.random.default_rng(0))
    assert np.array_equal(out, again)
    check_input_gradient(
        lambda v: F.dropout_forward(v, 0.3, np.random.default_rng(5)), F.dropout_backward, rng.standard_normal((4, 9)), rng
    )


def test_cross_entropy_hand_computed():
    logits = np.array([[2.0, 1.0, 0.1]])
    probs = np.exp(logits) / np.exp(logits).sum()
    loss, dlogits = F.softmax_cross_entropy(logits, np.array([0]))
    assert loss == pytest.approx(-np.log(probs[0, 0]))
    assert np.allclose(dlogits, probs - [1, 0, 0])


def test_cross_entropy_label_smoothing_matches_formula():
    logits = np.array([[0.5, -1.0, 2.0, 0.0]])
    s, k = 0.2, 4
    log_probs = logits - np.log(np.exp(logits).sum())
    target = np.full(k, s / k)
    target[2] += 1 - s
    loss, _ = F.softmax_cross_entropy(logits, np.array([2]), s)
    assert loss == pytest.approx(-(target * log_probs).sum())


def test_cross_entropy_gradient_and_stability(rng):
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    loss, dlogits = F.softmax_cross_entropy(logits, labels, 0.1)
    numeric = numerical_gradient(lambda: F.softmax_cross_entropy(logits, labels, 0.1)[0], logits)
    assert relative_error(dlogits, numeric) < TOL
    huge = np.array([[1000.0, 0.0], [-1000.0, 1000.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = F.softmax_cross_entropy(huge, np.array([0, 1]))
    assert np.isfinite(loss) and loss == pytest.approx(0.0) and grad.dtype == np.float32


@pytest.mark.parametrize("engine", list(kernels.ENGINES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_keep_dtype(engine, dtype, rng):
    K = kernels.ENGINES[engine]
    x = rng.standard_normal((4, 6)).astype(dtype)
    w = rng.standard_normal((6, 3)).astype(dtype)
    out, cache = K.dense_forward(x, w, np.zeros(3, dtype))
    results = [out, *K.dense_backward(out, cache)]
    for name, options in (("relu", ()), ("tanh", ()), ("sigmoid", ()), ("leaky_relu", (0.01,)), ("gelu", ()), ("gelu_erf", ())):
        y, cache = getattr(K, f"{name}_forward")(x, *options)
        results += [y, getattr(K, f"{name.removesuffix('_erf')}_backward")(y, cache)]
    images = rng.standard_normal((2, 5, 6, 3)).astype(dtype)
    y, cache = K.conv2d_forward(images, rng.standard_normal((3, 3, 3, 2)).astype(dtype), np.zeros(2, dtype))
    results += [y, *K.conv2d_backward(y, cache)]
    for name in ("maxpool", "avgpool", "global_avgpool", "global_maxpool"):
        y, cache = getattr(K, f"{name}_forward")(images)
        results += [y, getattr(K, f"{name}_backward")(y, cache)]
    y, cache = K.batchnorm_forward(images, np.ones(3, dtype), np.zeros(3, dtype), np.zeros(3, dtype), np.ones(3, dtype), True)
    results += [y, *K.batchnorm_backward(y, cache)]
    results.append(K.softmax_cross_entropy(out, np.array([0, 1, 2, 0]), 0.1)[1])
    results.append(K.softmax(out))
    assert all(r.dtype == dtype for r in results), [r.dtype for r in results]


def test_column_sums_match_numpy_and_keep_dtype():
    flat = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    sums = column_sums(flat)
    assert sums.dtype == np.float32 and sums.shape == (7,)
    assert np.allclose(sums, flat.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-4)
