"""cifar-scratch export --format onnx: the network, its normalisation and softmax, run in onnxruntime."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import cifar_scratch as cs
from cifar_scratch.cli import app
from cifar_scratch.data import Normalizer
from cifar_scratch.inference.export import INPUT, model_to_onnx
from cifar_scratch.nn.reference import softmax
from tests.conftest import REPO, digits_tree

onnx = pytest.importorskip("onnx", reason="ONNX export is an optional extra: pip install onnx")
ort = pytest.importorskip("onnxruntime", reason="the round trip runs the model in onnxruntime: pip install onnxruntime")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def round_trip(run, images):
    """(our probabilities, onnxruntime's) of uint8 ``images`` through the run's exported model."""
    result = invoke("export", run.path)
    assert result.exit_code == 0, result.output
    path = run.path / "export" / "model.onnx"
    assert result.output.strip().splitlines()[-1] == str(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return run.predict(images), session.run(None, {INPUT: images.astype(np.float32)})[0]


def test_an_mlp_round_trips_through_onnxruntime(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(digits_tree(epochs=2)))
    run = cs.train(tmp_path / "tiny.yaml", runs_dir=tmp_path / "runs")
    images = np.random.default_rng(0).integers(0, 256, (200, 8, 8, 1), dtype=np.uint8)
    ours, theirs = round_trip(run, images)
    assert theirs.shape == (200, 10) and np.abs(ours - theirs).max() <= 1e-5
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))


def every_kind_tree() -> dict:
    """A model with every layer kind that exports, in image and vector form."""
    return {
        "data": {"dataset": "digits"},
        "model": {
            "layers": [
                {"type": "conv2d", "filters": 6, "kernel": [2, 3], "stride": [1, 2], "padding": "same"},
                {"type": "batchnorm"},
                {"type": "gelu", "approximate": "none"},
                {"type": "residual", "layers": [{"type": "conv2d", "filters": 8, "padding": 1}, "relu"]},
                {"type": "maxpool2d", "size": 2, "stride": 1},
                {"type": "leaky_relu", "alpha": 0.2},
                {"type": "avgpool2d", "size": [2, 1]},
                {"type": "residual", "layers": [{"type": "conv2d", "filters": 8}, "tanh"], "shortcut": "identity"},
                {"type": "sequential", "layers": [{"type": "conv2d", "filters": 5, "padding": "valid"}, "sigmoid"]},
                "flatten",
                {"type": "dense", "units": 12},
                {"type": "batchnorm", "affine": False},
                "gelu",
                {"type": "dropout", "rate": 0.3},
                {"type": "scale", "factor": 0.5},
                {"type": "dense"},
            ]
        },
    }


@pytest.mark.parametrize("head", ["flatten", "global_avgpool", "global_maxpool"])
def test_every_exportable_layer_kind_gives_the_engines_probabilities(head):
    tree = every_kind_tree()
    tree["model"]["layers"][9] = head
    model = cs.build_model(tree, input_shape=(9, 11, 3))
    rng = np.random.default_rng(1)
    for name, value in {**model.params, **model.buffers}.items():
        value[...] = (np.abs if "running_var" in name else lambda v: v)(value + 0.3 * rng.standard_normal(value.shape))
    normalizer = Normalizer(np.array([120.0, 110.0, 100.0], np.float32), np.array([0.02, 0.025, 0.03], np.float32))
    proto = model_to_onnx(model.eval(), normalizer, [str(i) for i in range(10)])
    images = rng.integers(0, 256, (16, 9, 11, 3), dtype=np.uint8)
    ours = softmax(model.forward(normalizer(images)))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {INPUT: images.astype(np.float32)})[0]
    assert np.abs(ours - theirs).max() <= 1e-5


def test_a_layer_without_an_onnx_mapping_is_refused_by_name(tmp_path):
    tree = digits_tree(epochs=1)
    tree["model"]["layers"][2] = {"type": str(REPO / "examples" / "custom_layer" / "swish.py") + ":Swish"}
    (tmp_path / "swish.yaml").write_text(yaml.safe_dump(tree))
    run = cs.train(tmp_path / "swish.yaml", runs_dir=tmp_path / "runs")
    result = invoke("export", run.path)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("error: swish1 (model.layers.2): the swish layer has no ONNX mapping;")


@pytest.mark.slow
def test_resnet_small_round_trips_through_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 456)
    images = rng.integers(0, 256, (456, 32, 32, 3), dtype=np.uint8)
    images[np.arange(456), labels, :, 0] = 255  # something to learn: a bright red row per class
    tree = yaml.safe_load((REPO / "configs" / "resnet_small.yaml").read_text())
    tree["data"] = {"dataset": "npz", "val_fraction": 0.1}
    tree["training"] |= {"epochs": 1, "batch_size": 64, "tta": "none"}
    run = cs.train(
        tree, data=(images[:256], labels[:256], images[256:], labels[256:]), runs_dir=tmp_path / "runs", data_dir=tmp_path
    )
    assert run.metrics["steps"] >= 3, "a few steps of training: batch-norm statistics and weights moved"
    ours, theirs = round_trip(run, images[256:])
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))


@pytest.mark.slow
def test_safetensors_holds_the_weights_under_the_pytorch_twins_names(tmp_path):
    torch = pytest.importorskip("torch", reason="the twin's names come from PyTorch: pip install torch==2.13.0")
    safetensors = pytest.importorskip("safetensors.numpy", reason="pip install safetensors")
    from safetensors import safe_open

    from cifar_scratch.diagnostics.torch_reference import build_torch_model, to_torch_input

    tree = every_kind_tree()
    tree["data"] |= {"val_fraction": 0.2, "test_fraction": 0.2}
    tree["model"]["layers"] = [layer for layer in tree["model"]["layers"] if layer not in ("gelu",)]
    tree["training"] = {"epochs": 1, "batch_size": 64}
    run = cs.train(tree, runs_dir=tmp_path / "runs")
    result = invoke("export", run.path, "--format", "safetensors", "--out", tmp_path / "weights.safetensors")
    assert result.exit_code == 0, result.output
    weights = safetensors.load_file(str(tmp_path / "weights.safetensors"))
    with safe_open(str(tmp_path / "weights.safetensors"), "np") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["class_names"]) == [str(i) for i in range(10)]
    assert json.loads(metadata["normalize"])["mean"] == pytest.approx(run.load_model()[1].mean.tolist())

    model, normalizer = run.load_model()
    twin, _ = build_torch_model(model)  # a fresh twin: its state_dict takes the file whole
    twin.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()}, strict=True)
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    with torch.no_grad():
        theirs = twin.eval()(to_torch_input(normalizer(images))).numpy()
    assert np.abs(model.forward(normalizer(images)) - theirs).max() <= 1e-4
