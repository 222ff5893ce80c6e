"""Optimizer kinds are records: every name the config takes builds its own optimizer (none falls through
to another), and a new kind is one record."""

from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from cifar_scratch.builders import build_model, build_optimizer
from cifar_scratch.config import ModelConfig, RunConfig, build_config
from cifar_scratch.errors import ConfigError
from cifar_scratch.kinds.optimizers import (
    OPTIMIZER_KINDS,
    OptimizerKind,
    register_optimizer,
    trained_parameters,
    unregister_optimizer,
)
from cifar_scratch.optim.optimizers import SGD, Adam, Muon, Optimizer
from cifar_scratch.options import MAX_LR, Float, Section


def tiny_model():
    config = ModelConfig.model_validate({"layers": [{"type": "conv2d", "filters": 2}, "flatten", {"type": "dense"}]})
    return build_model(config, (4, 4, 1), 3, np.random.default_rng(0))


@pytest.mark.parametrize(("name", "expected"), [("sgd", SGD), ("adam", Adam), ("adamw", Adam), ("muon", Muon)])
def test_every_configurable_name_builds_its_own_optimizer(name, expected):
    spec = RunConfig.model_validate({"model": {"layers": ["flatten", "dense"]}, "optimizer": {"name": name}}).optimizer
    optimizer = build_optimizer(spec, tiny_model())
    assert type(optimizer) is expected
    if name == "adamw":  # AdamW's decoupled decay lives in the weights' hyperparameters
        assert optimizer.hyper["conv2d1.weight"].weight_decay == spec.weight_decay > 0


def test_the_config_takes_exactly_the_registered_names():
    with pytest.raises(ConfigError, match=r"optimizer: unknown name 'lion'; choose from 'sgd', 'adam', 'adamw', 'muon'"):
        build_config({"model": {"layers": ["flatten", "dense"]}, "optimizer": {"name": "lion"}})
    assert list(OPTIMIZER_KINDS) == ["sgd", "adam", "adamw", "muon"]


class SignSGD(Optimizer):
    """w -= lr * sign(g): the update of Lion without its momentum, for a test."""

    def update(self, name, param, grad, lr):
        param -= lr * np.sign(grad)


class SignSGDOptions(Section):
    name: Literal["signsgd"]
    lr: Float = Field(0.001, gt=0.0, le=MAX_LR)
    groups: list = []


def test_a_new_optimizer_kind_is_one_record():
    register_optimizer(
        OptimizerKind(
            SignSGDOptions, lambda spec, model, steps: SignSGD(*trained_parameters(spec, model, steps))
        )  # the whole record
    )
    try:
        config = build_config({"model": {"layers": ["flatten", "dense"]}, "optimizer": {"name": "signsgd", "lr": 0.5}})
        model = tiny_model()
        optimizer = build_optimizer(config.optimizer, model)
        before = model.params["dense1.weight"].copy()
        optimizer.step({name: np.ones_like(value) for name, value in model.params.items()}, 0.5)
        assert np.array_equal(model.params["dense1.weight"], before - np.float32(0.5))
    finally:
        unregister_optimizer("signsgd")
    with pytest.raises(ConfigError, match="unknown name 'signsgd'"):
        build_config({"model": {"layers": ["flatten", "dense"]}, "optimizer": {"name": "signsgd"}})
