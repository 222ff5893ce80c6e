"""Optimizers against hand-computed updates."""

import numpy as np
import pytest

from cifar_scratch.builders import build_optimizer
from cifar_scratch.kinds.optimizers import AdamSpec, AdamWSpec, SGDSpec
from cifar_scratch.nn.layers import Dense
from cifar_scratch.nn.model import Sequential


def tiny_model(value=1.0):
    """dense1.weight (1, 1) and dense1.bias (1,), both set to ``value``."""
    model = Sequential([Dense(1)])
    model.build((1,), np.random.default_rng(0))
    for array in model.params.values():
        array[...] = value
    return model


def run(spec, grads, value=1.0, lr=0.1, name="dense1.weight"):
    model = tiny_model(value)
    array = model.params[name]
    opt = build_optimizer(spec, model)
    history = []
    for g in grads:
        grad = {n: np.full_like(p, g) for n, p in model.params.items()}
        before = {n: v.copy() for n, v in grad.items()}
        opt.step(grad, lr)
        assert all(np.array_equal(grad[n], before[n]) for n in grad), "the optimizer must not modify gradients"
        history.append(float(array.flat[0]))
    assert model.params[name] is array and array.dtype == np.float32  # updated in place, still float32
    return history


def test_sgd_plain():
    assert run(SGDSpec(name="sgd"), [0.5]) == pytest.approx([0.95])


def test_sgd_momentum():
    # v1 = 1 -> p = 0.9;  v2 = 0.9 * 1 + 1 = 1.9 -> p = 0.9 - 0.19 = 0.71
    assert run(SGDSpec(name="sgd", momentum=0.9), [1.0, 1.0]) == pytest.approx([0.9, 0.71])


def test_sgd_nesterov():
    # v1 = 1, step uses g + mu * v1 = 1.9 -> 0.81; v2 = 1.9, step 1 + 0.9 * 1.9 = 2.71 -> 0.81 - 0.271
    assert run(SGDSpec(name="sgd", momentum=0.9, nesterov=True), [1.0, 1.0]) == pytest.approx([0.81, 0.539])


def test_l2_penalty_and_decoupled_decay():
    # l2: g' = g + l2 * p = 0.5 + 0.1 * 2 = 0.7 -> 2 - 0.07
    assert run(SGDSpec(name="sgd", l2=0.1), [0.5], value=2.0) == pytest.approx([1.93])
    # decoupled: p * (1 - lr * wd) - lr * g = 2 * 0.99 - 0.05
    assert run(SGDSpec(name="sgd", weight_decay=0.1), [0.5], value=2.0) == pytest.approx([1.93])
    # biases are not decayed
    assert run(SGDSpec(name="sgd", l2=0.1, weight_decay=0.1), [0.5], value=2.0, name="dense1.bias") == pytest.approx([1.95])


def reference_adam(grads, p, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


def test_adam_first_step_is_lr_sized_and_matches_reference():
    grads = [0.3, -1.2, 0.05, 2.0]
    got = run(AdamSpec(name="adam"), grads, lr=0.01)
    assert got[0] == pytest.approx(1.0 - 0.01, abs=1e-6)
    assert got == pytest.approx(reference_adam(grads, 1.0, 0.01), abs=1e-6)


def test_adamw_matches_reference():
    grads = [0.3, -1.2, 0.05]
    got = run(AdamWSpec(name="adamw", weight_decay=0.1), grads, value=2.0, lr=0.01)
    assert got == pytest.approx(reference_adam(grads, 2.0, 0.01, wd=0.1), abs=1e-6)


def test_state_round_trip():
    model = tiny_model()
    opt = build_optimizer(SGDSpec(name="sgd", momentum=0.9), model)
    opt.step({n: np.ones_like(p) for n, p in model.params.items()}, 0.1)
    other = build_optimizer(SGDSpec(name="sgd", momentum=0.9), tiny_model())
    other.load_state_arrays(opt.state_arrays(), opt.steps)
    assert other.steps == 1 and other.state_arrays()["velocity/dense1.weight"].flat[0] == 1.0


def test_finished_names_the_parameters_the_next_step_will_not_update():
    from cifar_scratch.optim.optimizers import SGD, Hyper

    params = {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}
    opt = SGD(params, {"a": Hyper(until_step=2)})
    grads = {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)}
    assert opt.finished() == set()
    opt.step(grads, 0.1)
    assert opt.finished() == set()
    opt.step(grads, 0.1)
    assert opt.finished() == {"a"}
    before = params["a"].copy()
    opt.step({"b": grads["b"]}, 0.1)  # a finished parameter needs no gradient
    assert np.array_equal(params["a"], before) and params["b"][0] < 1.0 - 0.25


# --------------------------------------------------------------------------- Muon
def newton_schulz_reference(matrix, steps):
    """What the iteration does to each singular value: U diag(p^steps(s / |G|_F)) V^T, in float64."""
    from cifar_scratch.optim.optimizers import NEWTON_SCHULZ

    a, b, c = NEWTON_SCHULZ
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    s = s / np.linalg.norm(s)
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return u @ np.diag(s) @ vt


@pytest.mark.parametrize("shape", [(3, 3, 4, 6), (20, 7), (7, 20)], ids=["kernel", "tall", "wide"])
def test_orthogonalize_moves_every_singular_value_towards_one_and_keeps_the_singular_vectors(shape):
    from cifar_scratch.optim.optimizers import orthogonalize

    update = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = orthogonalize(update, steps=5)
    assert out.shape == shape and out.dtype == np.float32
    matrix = update.reshape(-1, shape[-1])  # outputs last, the engine's layout
    np.testing.assert_allclose(out.reshape(-1, shape[-1]), newton_schulz_reference(matrix, 5), atol=2e-5)
    singular = np.linalg.svd(out.reshape(-1, shape[-1]), compute_uv=False)
    assert 0.6 < singular.min() and singular.max() < 1.25  # near 1, not exactly (see NEWTON_SCHULZ)
    np.testing.assert_allclose(orthogonalize(10 * update, 5), out, atol=1e-6)  # the gradient's scale does not matter


def two_layer_model():
    """dense1 (3 -> 4) and dense2 (4 -> 2), with biases, seeded."""
    model = Sequential([Dense(4), Dense(2)])
    model.build((3,), np.random.default_rng(1))
    return model


def test_muon_orthogonalises_the_chosen_weights_and_gives_the_rest_sgd():
    from cifar_scratch.kinds.optimizers import MuonSpec
    from cifar_scratch.optim.optimizers import orthogonalize

    spec = MuonSpec(
        name="muon", lr=0.1, momentum=0.6, ns_steps=4, normalize_weights=True,
        orthogonalize="dense1.weight", fallback_lr=0.5, fallback_momentum=0.9, fallback_nesterov=True,
    )  # fmt: skip
    model = two_layer_model()
    start = {n: p.copy() for n, p in model.params.items()}
    opt = build_optimizer(spec, model)
    assert opt.orthogonal == {"dense1.weight"}
    rng = np.random.default_rng(2)
    grads = [{n: rng.standard_normal(p.shape).astype(np.float32) for n, p in model.params.items()} for _ in range(2)]
    for g in grads:
        before = {n: v.copy() for n, v in g.items()}
        opt.step(g, 0.1)
        assert all(np.array_equal(g[n], before[n]) for n in g), "the optimizer must not modify gradients"

    # dense1.weight: Nesterov momentum 0.6, rescaled to norm sqrt(4 outputs), then the orthogonalised step
    w, v = start["dense1.weight"].copy(), 0
    for g in grads:
        v = 0.6 * v + g["dense1.weight"]
        w = w * np.sqrt(4) / np.linalg.norm(w)
        w = w - 0.1 * orthogonalize((g["dense1.weight"] + 0.6 * v).astype(np.float32), 4)
    np.testing.assert_allclose(model.params["dense1.weight"], w, atol=1e-6)
    # dense2.weight: Nesterov SGD at fallback_lr, momentum 0.9
    w, v = start["dense2.weight"].copy(), 0
    for g in grads:
        v = 0.9 * v + g["dense2.weight"]
        w = w - 0.5 * (g["dense2.weight"] + 0.9 * v)
    np.testing.assert_allclose(model.params["dense2.weight"], w, atol=1e-6)
    assert all(p.dtype == np.float32 for p in model.params.values())


def test_muon_orthogonalises_convolution_kernels_by_default_and_refuses_vectors():
    from cifar_scratch.errors import ConfigError
    from cifar_scratch.kinds.optimizers import MuonSpec
    from cifar_scratch.nn.layers import Conv2D, Flatten

    model = Sequential([Conv2D(4), Flatten(), Dense(2)])
    model.build((6, 6, 3), np.random.default_rng(0))
    assert build_optimizer(MuonSpec(name="muon"), model).orthogonal == {"conv2d1.weight"}
    with pytest.raises(ConfigError, match=r"optimizer.orthogonalize: only weights of 2 or more dimensions .* conv2d1.bias"):
        build_optimizer(MuonSpec(name="muon", orthogonalize="*"), model)
    with pytest.raises(ConfigError, match="optimizer.orthogonalize: 'head' matches no trainable parameter"):
        build_optimizer(MuonSpec(name="muon", orthogonalize="head"), model)
