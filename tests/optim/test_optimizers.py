"""Optimizers against hand-computed updates."""

import numpy as np
import pytest

from cifar_scratch.builders import build_optimizer
from cifar_scratch.config import AdamSpec, AdamWSpec, SGDSpec
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
