"""`cifar-scratch gradcheck`: passes on every layer type and shipped config, fails on a broken layer."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cifar_scratch.cli import app
from cifar_scratch.diagnostics.gradcheck import check_layer_types, make_layer
from cifar_scratch.kinds.layers import LAYER_KINDS
from cifar_scratch.nn import fast
from cifar_scratch.nn.finite_differences import check_layer, probe
from tests.conftest import REPO

runner = CliRunner()
#: The shipped configs whose data is here; my_photos.yaml reads the user's own folder (checked in
#: tests/data/test_photos.py on a folder the test makes).
SHIPPED = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if p.name != "my_photos.yaml")


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_every_layer_type_passes_in_float64(kind):
    for row in check_layer_types([kind]):
        assert row.max_relative_error < 1e-6, row


def test_layer_option_checks_all_types_without_a_config(tmp_path):
    result = runner.invoke(app, ["gradcheck", "--json", str(tmp_path / "g.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "g.json").read_text())
    kinds = {row["layer"].split("(")[0].split(" ")[0] for row in report["layers"]}
    assert kinds == set(LAYER_KINDS) and report["failed"] == 0
    assert "passed: 0 of" in result.output


def test_a_broken_backward_is_caught(monkeypatch):
    """A wrong input gradient (10% too large) must fail the check and give exit code 1."""
    monkeypatch.setattr(fast, "relu_backward", lambda dout, cache: 1.1 * dout * (cache > 0))
    result = runner.invoke(app, ["gradcheck", "--layer", "relu"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "FAILED: 1 of 1" in result.output
    assert "error:" not in result.output, "a failed check is a result, not an internal error"


def test_a_broken_convolution_weight_gradient_is_caught(monkeypatch):
    original = fast.conv2d_backward

    def off_by_one(dout, cache, input_grad=True):
        dx, dweight, dbias = original(dout, cache, input_grad)
        return dx, np.roll(dweight, 1, axis=2), dbias  # gradients attributed to the wrong input channel

    monkeypatch.setattr(fast, "conv2d_backward", off_by_one)
    rows = check_layer(make_layer("conv2d", {"filters": 3}), (5, 6, 2), batch=2)
    assert {r.tensor: r.max_relative_error > 1e-6 for r in rows} == {"input": False, "weight": True, "bias": False}


@pytest.mark.slow
@pytest.mark.parametrize("engine, algorithm", [("fast", "im2col"), ("fast", "winograd"), ("reference", "im2col")])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_passes_as_a_user_runs_it(name, engine, algorithm):
    """The command with its defaults (20 elements per tensor per layer, 10 end to end), as a user runs it,
    on both kernel engines and with every 3x3 convolution by Winograd: a check run with fewer probes
    passed speedrun93 while the user's default run failed on a max-pool near-tie, and Winograd's rounding
    failed fast_cnn until the numerical side extrapolated."""
    result = runner.invoke(
        app, ["gradcheck", str(REPO / "configs" / name), f"training.conv_algorithm={algorithm}", "--engine", engine]
    )
    assert result.exit_code == 0, result.output
    assert "end to end through the loss" in result.output
    assert "passed: 0 of" in result.output and f"({engine} kernels)" in result.output


def test_a_kink_within_the_step_is_not_a_failure_but_a_wrong_slope_is():
    """f(x) = max(x, 5e-7) at x = 0: its slope there is 0 (the constant piece), but central differences
    with h = 1e-5 or 1e-6 straddle the kink (0.475, 0.25); the one-sided difference from below sees 0.
    f(x) = 2x with a claimed slope of 1 disagrees with every estimate."""
    x = np.zeros(1)
    kinked = probe(lambda: max(float(x[0]), 5e-7), x, np.zeros(1), None, 1e-5, 1e-8)
    assert abs(kinked[0]) < 1e-9
    wrong = probe(lambda: 2 * float(x[0]), x, np.ones(1), None, 1e-5, 1e-8)
    assert wrong[0] == pytest.approx(2.0)


def test_unknown_layer_type_is_a_clear_error():
    result = runner.invoke(app, ["gradcheck", "--layer", "conv3d"])
    assert result.exit_code == 1 and "unknown layer type 'conv3d'" in result.output


@pytest.mark.parametrize("name", ["cifar_cnn.yaml", "fast_cnn.yaml", "fashion_cnn.yaml", "mlp10.yaml"])
def test_against_torch(name, tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    result = runner.invoke(
        app,
        ["gradcheck", str(REPO / "configs" / name), "--layer", "dense", "--against", "torch", "--json", str(tmp_path / "g.json")],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "g.json").read_text())["torch"]
    tensors = {(r["layer"], r["tensor"]) for r in rows}
    assert ("model", "logits") in tensors and ("model", "input") in tensors
    assert all(r["relative_diff"] < 1e-4 for r in rows)


def test_against_torch_in_float64_leaves_no_rounding(tmp_path):
    """speedrun93 (whitened stem, frozen scales, GELU, scale layer) agrees with PyTorch to float64 rounding.

    With GELU's tanh form: the shipped erf form's erf is an approximation within 1.5e-7 (its own test,
    tests/nn/test_layers.py), which would hide rounding differences behind it."""
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    shipped = (REPO / "configs" / "speedrun93.yaml").read_text()
    assert "approximate: none" in shipped
    config = tmp_path / "speedrun93_tanh.yaml"
    config.write_text(shipped.replace("approximate: none", "approximate: tanh"))  # gradcheck reads no data
    out = tmp_path / "g.json"
    args = ["gradcheck", str(config), "--layer", "dense", "--against", "torch"]
    result = runner.invoke(app, [*args, "--torch-dtype", "float64", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "against PyTorch (float64" in result.output
    rows = json.loads(out.read_text())["torch"]
    assert len(rows) > 30 and max(r["relative_diff"] for r in rows) < 1e-10
    assert runner.invoke(app, [*args, "--torch-dtype", "float16"]).exit_code == 2
