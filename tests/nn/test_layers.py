"""Layers and the sequential model: shapes, modes, gradients through the whole stack, summary."""

import numpy as np
import pytest

from cifar_scratch.builders import build_model
from cifar_scratch.config import ModelConfig
from cifar_scratch.errors import ConfigError
from cifar_scratch.nn.finite_differences import numerical_gradient, relative_error
from cifar_scratch.nn.layers import Dense, Dropout, Flatten
from cifar_scratch.nn.model import Sequential
from cifar_scratch.nn.reference import softmax_cross_entropy


def model_config(*layers):
    return ModelConfig.model_validate({"layers": list(layers)})


def test_dense_layer_shapes_and_init():
    layer = Dense(5, init="he_normal")
    assert layer.build((300,), np.random.default_rng(0)) == (5,)
    assert layer.params["weight"].shape == (300, 5) and layer.params["weight"].dtype == np.float32
    assert layer.params["bias"].shape == (5,) and not layer.params["bias"].any()
    # He: std = sqrt(2 / fan_in)
    big = Dense(400)
    big.build((1000,), np.random.default_rng(0))
    assert big.params["weight"].std() == pytest.approx(np.sqrt(2 / 1000), rel=0.02)
    xavier = Dense(400, init="xavier_uniform")
    xavier.build((1000,), np.random.default_rng(0))
    limit = np.sqrt(6 / 1400)
    assert np.abs(xavier.params["weight"]).max() <= limit and xavier.params["weight"].std() == pytest.approx(
        limit / np.sqrt(3), rel=0.02
    )
    torch_like = Dense(400, init="torch_default")  # nn.Linear's default: uniform within 1/sqrt(fan_in)
    torch_like.build((1000,), np.random.default_rng(0))
    weight = torch_like.params["weight"]
    assert np.abs(weight).max() <= 1 / np.sqrt(1000) and weight.std() == pytest.approx(1 / np.sqrt(3000), rel=0.02)


def test_dense_without_bias_and_flat_input_required():
    layer = Dense(3, bias=False)
    layer.build((4,), np.random.default_rng(0))
    assert set(layer.params) == {"weight"}
    layer.forward(np.ones((2, 4), np.float32))
    layer.backward(np.ones((2, 3), np.float32))
    assert set(layer.grads) == {"weight"}
    with pytest.raises(ValueError, match="flatten"):
        Dense(3).build((4, 4), np.random.default_rng(0))


def test_flatten_round_trip():
    layer = Flatten()
    assert layer.build((3, 5, 2), None) == (30,)
    x = np.arange(2 * 30, dtype=np.float32).reshape(2, 3, 5, 2)
    assert layer.forward(x).shape == (2, 30)
    assert np.array_equal(layer.backward(layer.forward(x)), x)


def test_dropout_train_vs_eval():
    layer = Dropout(0.5)
    layer.build((10,), np.random.default_rng(0))
    x = np.ones((4, 10), np.float32)
    assert not np.array_equal(layer.forward(x), x)
    layer.training = False
    assert layer.forward(x) is x
    assert layer.backward(x) is x


def test_model_names_params_and_modes():
    rng = np.random.default_rng(0)
    model = build_model(
        model_config("flatten", {"type": "dense", "units": 6}, "relu", {"type": "dropout", "rate": 0.5}, {"type": "dense"}),
        (2, 3, 1),
        4,
        rng,
    )
    assert list(model.params) == ["dense1.weight", "dense1.bias", "dense2.weight", "dense2.bias"]
    assert model.output_shape == (4,)
    model.eval()
    x = rng.standard_normal((5, 2, 3, 1)).astype(np.float32)
    assert np.array_equal(model.forward(x), model.forward(x))  # eval: no dropout noise
    model.train()
    assert all(layer.training for layer in model.layers)


def test_whole_model_gradients_float64():
    """End to end through the loss, every parameter and the input, against central differences."""
    rng = np.random.default_rng(3)
    model = build_model(
        model_config(
            "flatten",
            {"type": "dense", "units": 7, "init": "xavier_normal"},
            "tanh",
            {"type": "dense", "units": 5},
            {"type": "leaky_relu", "alpha": 0.2},
            {"type": "dense", "units": 6},
            "sigmoid",
            {"type": "dense"},
        ),
        (3, 2, 1),
        3,
        rng,
        dtype=np.float64,
    )
    x = rng.standard_normal((4, 3, 2, 1))
    labels = np.array([0, 2, 1, 2])

    def loss():
        return softmax_cross_entropy(model.forward(x), labels, 0.1)[0]

    _, dlogits = softmax_cross_entropy(model.forward(x), labels, 0.1)
    dx = model.backward(dlogits)
    for name, param in model.params.items():
        assert relative_error(model.grads[name], numerical_gradient(loss, param)) < 1e-7, name
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-7


def test_build_model_checks_units():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"model.layers.2.units: the last dense layer must output one score per class \(3\)"):
        build_model(model_config("flatten", {"type": "dense", "units": 4}, {"type": "dense", "units": 5}), (4,), 3, rng)
    with pytest.raises(ConfigError, match="model.layers.1.units: required"):
        build_model(model_config("flatten", {"type": "dense"}, {"type": "dense"}), (4,), 3, rng)
    with pytest.raises(ConfigError, match="flatten"):
        build_model(model_config({"type": "dense"}), (2, 2), 3, rng)


def test_load_state_dict_checks_names_and_shapes():
    rng = np.random.default_rng(0)
    model = build_model(model_config("flatten", {"type": "dense"}), (4,), 3, rng)
    weight = model.params["dense1.weight"]
    model.load_state_dict({"dense1.weight": np.ones((4, 3)), "dense1.bias": np.zeros(3)})
    assert model.params["dense1.weight"] is weight and weight.dtype == np.float32 and (weight == 1).all()
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({"dense1.weight": np.ones((4, 3))})
    with pytest.raises(ValueError, match="shape"):
        model.load_state_dict({"dense1.weight": np.ones((3, 3)), "dense1.bias": np.zeros(3)})


def test_summary_counts_parameters():
    model = build_model(
        model_config(
            "flatten", {"type": "dense", "units": 128}, "relu", {"type": "dense", "units": 64}, "relu", {"type": "dense"}
        ),
        (32, 32, 3),
        3,
        np.random.default_rng(0),
    )
    text = model.summary()
    assert "dense1 (Dense)" in text and "(None, 128)" in text
    assert f"Trainable params: {3072 * 128 + 128 + 128 * 64 + 64 + 64 * 3 + 3:,}" in text
    assert "Non-trainable params: 0" in text


def test_sequential_accepts_layer_objects():
    model = Sequential([Flatten(), Dense(2)])
    model.build((2, 2), np.random.default_rng(0))
    assert [layer.name for layer in model.layers] == ["flatten1", "dense1"]


def test_training_backward_stops_at_the_first_trained_layer():
    model = build_model(
        model_config("flatten", {"type": "dense", "units": 4}, "relu", {"type": "dense"}), (2, 3, 1), 3, np.random.default_rng(0)
    )
    assert model.first_to_train() == 1
    x = np.random.default_rng(1).standard_normal((5, 2, 3, 1)).astype(np.float32)
    _, dlogits = softmax_cross_entropy(model.forward(x), np.array([0, 1, 2, 0, 1]))
    full = model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.grads.items()}
    assert full.shape == x.shape
    model.forward(x)  # a backward pass releases the caches it used
    assert model.backward(dlogits, input_grad=False) is None
    assert all(np.array_equal(grads[k], v) for k, v in model.grads.items()), "parameter gradients are the same"


def test_whitening_filters_decorrelate_every_patch(monkeypatch):
    from cifar_scratch.nn import init
    from cifar_scratch.nn.init import patch_moment, whitening

    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((3, 3)) + 2 * np.eye(3)
    smooth = rng.standard_normal((40, 9, 10, 3)).cumsum(axis=2)  # neighbouring pixels correlated
    images = (smooth @ mixing + 0.5).astype(np.float32)  # channels correlated, and not centred
    moment = patch_moment(images, (2, 2))
    windows = np.lib.stride_tricks.sliding_window_view(images, (2, 2), axis=(1, 2))
    flat = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12).astype(np.float64)  # every patch, (kh, kw, C)
    assert len(flat) == 40 * 8 * 9 and np.allclose(moment, flat.T @ flat / len(flat), rtol=1e-12)
    monkeypatch.setattr(init, "WHITENING_CHUNK", 7)  # chunking changes nothing but rounding
    assert np.allclose(patch_moment(images, (2, 2)), moment, rtol=1e-12)

    weight = whitening(moment, (2, 2), 24, eps=0.0)
    assert weight.shape == (2, 2, 3, 24) and weight.dtype == np.float32
    responses = flat @ weight.reshape(12, 24).astype(np.float64)
    assert np.allclose(responses[:, :12].T @ responses[:, :12] / len(flat), np.eye(12), atol=1e-5)  # uncentred, as airbench
    assert np.array_equal(weight[..., 12:], -weight[..., :12])
    damped = flat @ whitening(moment, (2, 2), 12, eps=1.0).reshape(12, 12).astype(np.float64)
    power = (damped**2).mean(axis=0)  # eigenvalue / (eigenvalue + eps): the largest eigenvalue comes first
    assert np.all(np.diff(power) < 0)
    with pytest.raises(ValueError, match="gives 12 filters, or 24"):
        whitening(moment, (2, 2), 16)


def test_backward_stops_short_of_parameters_that_finished_training():
    model = build_model(
        model_config({"type": "conv2d", "filters": 3, "kernel": 2, "trainable": ["bias"]}, "relu", "flatten", {"type": "dense"}),
        (4, 4, 2),
        3,
        np.random.default_rng(0),
    )
    x = np.random.default_rng(1).standard_normal((5, 4, 4, 2)).astype(np.float32)
    _, dlogits = softmax_cross_entropy(model.forward(x), np.array([0, 1, 2, 0, 1]))
    model.backward(dlogits, input_grad=False)
    assert model.first_to_train() == 0
    before = {k: v.copy() for k, v in model.grads.items()}
    assert model.first_to_train(skip={"conv2d1.bias"}) == 3
    model.layers[0].grads["bias"][...] = np.nan  # stays untouched: backward no longer reaches the stem
    model.forward(x)
    model.backward(dlogits, input_grad=False, skip={"conv2d1.bias"})
    assert np.array_equal(model.grads["dense1.weight"], before["dense1.weight"])
    assert np.isnan(model.grads["conv2d1.bias"]).all()


def test_skipped_parameters_reach_into_nested_blocks():
    model = build_model(
        model_config(
            {"type": "conv2d", "filters": 3, "kernel": 2, "trainable": False},
            {"type": "sequential", "name": "stem", "layers": [{"type": "conv2d", "filters": 3, "kernel": 2}, "relu"]},
            "flatten",
            {"type": "dense"},
        ),
        (5, 5, 2),
        3,
        np.random.default_rng(0),
    )
    assert model.first_to_train() == 1
    assert model.first_to_train(skip={"stem.conv2d1.weight", "stem.conv2d1.bias"}) == 3
    x = np.random.default_rng(1).standard_normal((4, 5, 5, 2)).astype(np.float32)
    _, dlogits = softmax_cross_entropy(model.forward(x), np.array([0, 1, 2, 0]))
    model.backward(dlogits, input_grad=False)
    full = model.grads["stem.conv2d1.weight"].copy()
    model.grads["stem.conv2d1.weight"][...] = np.nan
    model.forward(x)
    model.backward(dlogits, input_grad=False, skip={"stem.conv2d1.bias"})  # the weight still trains: reached
    assert np.array_equal(model.grads["stem.conv2d1.weight"], full)


def test_a_whitened_convolution_takes_its_kernel_from_the_data_it_adapts_to():
    from cifar_scratch.nn.init import patch_moment, whitening
    from cifar_scratch.nn.layers import Conv2D

    images = np.random.default_rng(0).standard_normal((6, 7, 7, 3)).astype(np.float32)
    whitened, plain = Conv2D(24, 2, padding="valid", init="whiten"), Conv2D(24, 2, padding="valid")
    for conv in (whitened, plain):
        conv.build((7, 7, 3), np.random.default_rng(1))
    before = plain.params["weight"].copy()
    whitened.adapt(images)
    plain.adapt(images)
    assert np.array_equal(whitened.params["weight"], whitening(patch_moment(images, (2, 2)), (2, 2), 24))
    assert np.array_equal(plain.params["weight"], before), "other inits keep their weights"
    with pytest.raises(ValueError, match="gives 12 filters, or 24"):
        odd = Conv2D(16, 2, padding="valid", init="whiten")
        odd.build((7, 7, 3), np.random.default_rng(1))
        odd.adapt(images)
