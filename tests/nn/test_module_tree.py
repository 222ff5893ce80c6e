"""The module tree: nested names, residual blocks, frozen parameters, decay defaults, parameter groups."""

import numpy as np
import pytest

from cifar_scratch.builders import build_model, build_optimizer
from cifar_scratch.config import ModelConfig, build_config
from cifar_scratch.errors import ConfigError
from cifar_scratch.nn.finite_differences import check_model
from cifar_scratch.nn.reference import softmax_cross_entropy

RESNET = [
    {"type": "conv2d", "filters": 4},
    "batchnorm",
    "relu",
    {
        "type": "sequential",
        "name": "stage1",
        "layers": [
            {
                "type": "residual",
                "layers": [{"type": "conv2d", "filters": 4}, "batchnorm", "relu", {"type": "conv2d", "filters": 4}],
            },
            "relu",
        ],
    },
    {
        "type": "sequential",
        "name": "stage2",
        "layers": [
            {
                "type": "residual",
                "layers": [{"type": "conv2d", "filters": 6, "stride": 2}, "batchnorm", "relu", {"type": "conv2d", "filters": 6}],
            },
            "relu",
        ],
    },
    "global_avgpool",
    {"type": "dense"},
]


def model_of(layers, shape=(7, 6, 3), classes=3, dtype=np.float32):
    return build_model(ModelConfig.model_validate({"layers": layers}), shape, classes, np.random.default_rng(0), dtype=dtype)


def test_nested_names_and_shortcuts():
    model = model_of(RESNET)
    names = list(model.params)
    assert "stage1.residual1.conv2d1.weight" in names and "stage2.residual1.shortcut.weight" in names
    assert "stage1.residual1.shortcut.weight" not in names, "identity shortcut when the shape is kept"
    assert "stage2.residual1.batchnorm1.running_mean" in model.buffers
    assert model.output_shape == (3,)
    summary = model.summary()
    assert "  residual1 (Residual)" in summary and "    conv2d1 (Conv2D)" in summary


def test_residual_net_gradients_end_to_end_float64():
    model = model_of(RESNET, dtype=np.float64)
    rng = np.random.default_rng(1)
    for value in model.params.values():
        value += 0.1 * rng.standard_normal(value.shape)
    x = rng.standard_normal((3, 7, 6, 3))
    rows = check_model(model, x, np.array([0, 2, 1]), max_elements=6)
    assert max(row.max_relative_error for row in rows) < 1e-6, [(r.layer, r.tensor, r.max_relative_error) for r in rows]


def test_residual_shapes_that_cannot_match_are_config_errors():
    with pytest.raises(ConfigError, match="model.layers: .*residual1: the block maps .* an identity shortcut cannot add them"):
        model_of(
            [
                {"type": "residual", "shortcut": "identity", "layers": [{"type": "conv2d", "filters": 5}]},
                "flatten",
                {"type": "dense"},
            ]
        )
    with pytest.raises(ConfigError, match="residual1: the block maps .* a residual block needs images in and out"):
        model_of(["flatten", {"type": "residual", "layers": [{"type": "dense", "units": 4}]}, {"type": "dense"}])
    with pytest.raises(ConfigError, match="model.layers.0.layers.1.units: required"):
        model_of([{"type": "sequential", "layers": ["flatten", {"type": "dense"}]}, {"type": "dense"}])


def test_defaults_decay_only_weight_matrices_and_kernels():
    config = build_config({"model": {"layers": RESNET}, "optimizer": {"name": "sgd", "weight_decay": 0.01, "l2": 0.001}})
    model = model_of(RESNET)
    optimizer = build_optimizer(config.optimizer, model)
    for name, hyper in optimizer.hyper.items():
        kernel = name.endswith(".weight") and "batchnorm" not in name
        assert (hyper.weight_decay, hyper.l2) == ((0.01, 0.001) if kernel else (0.0, 0.0)), name


def test_groups_set_learning_rate_scale_and_decay_by_pattern():
    config = build_config(
        {
            "model": {"layers": RESNET},
            "optimizer": {
                "name": "sgd",
                "weight_decay": 0.01,
                "groups": [
                    {"params": "*batchnorm*.bias", "lr_scale": 64, "weight_decay": 0},
                    {"params": ["stage2.*"], "weight_decay": 0.05},
                ],
            },
        }
    )
    optimizer = build_optimizer(config.optimizer, model_of(RESNET))
    assert optimizer.hyper["stage2.residual1.batchnorm1.bias"].lr_scale == 64  # the first matching group wins
    assert optimizer.hyper["stage2.residual1.conv2d1.bias"].weight_decay == 0.05  # a group may decay biases
    assert optimizer.hyper["conv2d1.weight"].weight_decay == 0.01 and optimizer.hyper["conv2d1.weight"].lr_scale == 1
    bad = build_config({"model": {"layers": RESNET}, "optimizer": {"name": "adam", "groups": [{"params": "nothing.*"}]}})
    with pytest.raises(ConfigError, match="optimizer.groups.0.params: 'nothing.\\*' matches no trainable parameter"):
        build_optimizer(bad.optimizer, model_of(RESNET))
    adam = build_config(
        {"model": {"layers": RESNET}, "optimizer": {"name": "adam", "groups": [{"params": "*", "weight_decay": 0.1}]}}
    )
    with pytest.raises(ConfigError, match="optimizer.groups.0.weight_decay: adam has no decoupled weight decay"):
        build_optimizer(adam.optimizer, model_of(RESNET))


def test_frozen_parameters_never_change_and_others_do():
    layers = [{**RESNET[0], "trainable": False}, *RESNET[1:3], {**RESNET[3], "trainable": False}, *RESNET[4:]]
    config = build_config(
        {"model": {"layers": layers}, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}}
    )
    model = model_of(layers)
    optimizer = build_optimizer(config.optimizer, model)
    frozen = {n for n, (trainable, _) in model.parameter_flags().items() if not trainable}
    assert frozen == {n for n in model.params if n.startswith(("conv2d1.", "stage1."))}
    assert not frozen & set(optimizer.params), "the optimizer never sees a frozen parameter"
    before = {n: v.copy() for n, v in model.params.items()}
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.standard_normal((4, 7, 6, 3)).astype(np.float32)
        _, dlogits = softmax_cross_entropy(model.forward(x), rng.integers(0, 3, 4))
        model.backward(dlogits, input_grad=False)
        optimizer.step(model.grads, 0.1)
    for name, value in model.params.items():
        assert np.array_equal(value, before[name]) == (name in frozen), name
    assert "Non-trainable params:" in model.summary() and "frozen" in model.summary()


def test_trainable_list_freezes_the_other_parameters_of_a_layer():
    layers = [{"type": "conv2d", "filters": 3}, {"type": "batchnorm", "trainable": ["bias"]}, "flatten", {"type": "dense"}]
    config = build_config({"model": {"layers": layers}, "optimizer": {"name": "sgd", "lr": 0.5}})
    model = model_of(layers)
    optimizer = build_optimizer(config.optimizer, model)
    assert "batchnorm1.weight" not in optimizer.params and "batchnorm1.bias" in optimizer.params
    scale, shift = model.params["batchnorm1.weight"].copy(), model.params["batchnorm1.bias"].copy()
    rng = np.random.default_rng(0)
    for _ in range(3):
        _, dlogits = softmax_cross_entropy(
            model.forward(rng.standard_normal((4, 7, 6, 3)).astype(np.float32)), rng.integers(0, 3, 4)
        )
        model.backward(dlogits, input_grad=False)
        optimizer.step(model.grads, 0.5)
    assert np.array_equal(model.params["batchnorm1.weight"], scale) and (scale == 1).all()
    assert not np.array_equal(model.params["batchnorm1.bias"], shift)
    assert "batchnorm1 (BatchNorm, frozen: weight)" in model.summary()
    with pytest.raises(
        ConfigError, match="model.layers.3.trainable: dense has no parameter 'gamma' .its parameters: weight, bias."
    ):
        model_of([*layers[:3], {"type": "dense", "trainable": ["gamma"]}])


def test_gelu_form_comes_from_the_config_and_the_erf_form_passes_gradcheck():
    layers = [{"type": "conv2d", "filters": 4}, {"type": "gelu", "approximate": "none"}, "flatten", {"type": "dense"}]
    model = model_of(layers, dtype=np.float64)
    erf, tanh = model.layers[1], model_of(["gelu", "flatten", {"type": "dense"}]).layers[0]
    assert (erf.approximate, tanh.approximate) == ("none", "tanh")
    rng = np.random.default_rng(2)
    rows = check_model(model, rng.standard_normal((3, 7, 6, 3)), np.array([0, 2, 1]), max_elements=6)
    assert max(row.max_relative_error for row in rows) < 1e-6, [(r.layer, r.tensor, r.max_relative_error) for r in rows]
    with pytest.raises(ValueError, match="approximate"):
        ModelConfig.model_validate({"layers": [{"type": "gelu", "approximate": "erf"}]})
