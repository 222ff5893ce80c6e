"""Layer kinds are records: a new kind is one record in one place, and the config, the builder, the
summary, gradcheck and training all take it from there."""

import copy
from typing import Literal

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cifar_scratch.cli import app
from cifar_scratch.config import build_config
from cifar_scratch.errors import ConfigError
from cifar_scratch.kinds.layers import LAYER_KINDS, LayerKind, LayerOptions, register_layer, unregister_layer
from cifar_scratch.nn.layers import Layer
from cifar_scratch.options import Float
from cifar_scratch.training.run import start_run
from tests.conftest import digits_tree


class Swish(Layer):
    """x sigmoid(beta x), any shape (Ramachandran et al., 2017)."""

    kind = "swish"

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        s = 1 / (1 + np.exp(-self.beta * x))
        self._cache = (x, s) if self.training else None
        return x * s

    def backward(self, dout):
        x, s = self._cache
        self._cache = None
        return dout * (s + self.beta * x * s * (1 - s))


class SwishOptions(LayerOptions):
    type: Literal["swish"]
    beta: Float = 1.0


@pytest.fixture
def swish():
    kind = register_layer(LayerKind(SwishOptions, Swish, (({"beta": 1.5}, (3, 5, 2)),)))  # the whole record
    yield kind
    unregister_layer("swish")


def test_a_new_layer_kind_is_one_record_that_configs_train_check_and_summarise(swish, tmp_path):
    tree = digits_tree(epochs=1)
    tree["model"]["layers"] = [
        "flatten",
        {"type": "dense", "units": 16},
        {"type": "swish", "beta": 1.5},
        "swish",
        {"type": "dense"},
    ]
    config = build_config(tree)
    result = start_run(config, tmp_path / "data", progress=False, runs_dir=tmp_path / "runs")
    assert np.isfinite(result.metrics["test_accuracy"])
    summary = (result.run_dir / "summary.txt").read_text()
    assert "swish1 (Swish)" in summary and "swish2 (Swish)" in summary
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["model"]["layers"][2] == {
        "type": "swish",
        "trainable": True,
        "beta": 1.5,
    }
    with pytest.raises(ConfigError, match=r"model.layers.2.betaa: unknown key \(did you mean 'beta'\?\)"):
        build_config(copy.deepcopy(tree), ["model.layers.2.betaa=2"])
    checked = CliRunner().invoke(app, ["gradcheck", "--layer", "swish"])
    assert checked.exit_code == 0 and "swish(beta=1.5) (3, 5, 2)" in checked.output, checked.output
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tree))
    checked = CliRunner().invoke(app, ["gradcheck", str(tmp_path / "c.yaml")])
    assert checked.exit_code == 0 and "swish1" in checked.output and "passed: 0 of" in checked.output, checked.output


def test_an_unregistered_kind_is_refused_again_and_names_are_unique(swish):
    with pytest.raises(ValueError, match="registered already"):
        register_layer(LayerKind(SwishOptions, Swish, (({}, (3,)),)))
    unregister_layer("swish")
    try:
        with pytest.raises(ConfigError, match="model.layers.0: unknown type 'swish'"):
            build_config({"model": {"layers": ["swish", {"type": "dense"}]}})
    finally:
        register_layer(swish)


def test_every_built_in_kind_is_a_record_with_examples():
    assert {"dense", "conv2d", "batchnorm", "gelu", "sequential", "residual"} <= set(LAYER_KINDS)
    assert all(kind.examples for kind in LAYER_KINDS.values())
    assert all(kind.torch is not None for kind in LAYER_KINDS.values() if kind.module is not None)
