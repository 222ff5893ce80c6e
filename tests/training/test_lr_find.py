"""The learning-rate range test: its suggestion, its stops, its files, and the command."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cifar_scratch.cli import app
from cifar_scratch.training.lr_find import suggest
from tests.conftest import digits_tree

runner = CliRunner()


def test_the_suggestion_falls_in_the_steep_part_of_a_synthetic_curve():
    lrs = np.geomspace(1e-6, 10, 100)
    x = np.log10(lrs)
    # Flat at 2.3 for small rates, a fall centred on 1e-2 (steepest there), a floor, then a blow-up past 1.
    loss = 2.3 - 1.5 / (1 + np.exp(-(x + 2) * 3)) + np.where(x > 0, 5 * x**2, 0)
    chosen = suggest(list(lrs), list(loss))
    assert 10**-2.3 < chosen < 10**-1.7
    steep = np.gradient(loss, x)
    assert steep[np.argmin(np.abs(lrs - chosen))] < 0.8 * steep.min()  # within the steepest part of the fall


def test_no_suggestion_for_a_curve_that_never_falls():
    lrs = list(np.geomspace(1e-6, 1, 50))
    assert suggest(lrs, list(np.linspace(2.3, 5.0, 50))) is None
    assert suggest(lrs[:5], [2.3] * 5) is None


@pytest.mark.slow
def test_lr_find_writes_its_own_folder_suggests_a_rate_and_repeats_itself(tmp_path):
    config = tmp_path / "tiny.yaml"
    tree = digits_tree(batch_size=32)
    tree["optimizer"]["groups"] = [{"params": "dense2.*", "lr_scale": 0.5}]
    config.write_text(yaml.safe_dump(tree))
    results = []
    for attempt in range(2):
        out = tmp_path / f"find{attempt}"
        result = runner.invoke(app, ["lr-find", str(config), "--out", str(out), "--end-lr", "1000"])
        assert result.exit_code == 0, result.output
        assert result.output.strip().splitlines()[-1] == str(out)
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "lr_find.json", "lr_find.png"]
        results.append(json.loads((out / "lr_find.json").read_text()))
    first, second = results
    assert first["losses"] == second["losses"] and first["suggestion"] == second["suggestion"]  # same seed, same curve
    assert first["lrs"][0] == pytest.approx(1e-7) and len(first["lrs"]) < 100
    assert "passed 4x its lowest" in first["stop_reason"]  # lr 1000 blows the network up before the ramp's end
    assert 1e-4 < first["suggestion"] < 1.0
    assert first["suggested_overrides"] == [f"optimizer.lr={first['suggestion']:.3g}"]
    assert f"suggested (steepest fall of the smoothed loss): optimizer.lr={first['suggestion']:.3g}" in result.output
    assert not (tmp_path / "runs").exists()  # never a run folder


@pytest.mark.slow
def test_lr_find_suggests_muons_fallback_rate_at_its_ratio(tmp_path):
    config = tmp_path / "tiny.yaml"
    tree = digits_tree(batch_size=32)
    tree["model"]["layers"] = [{"type": "conv2d", "filters": 4}, "relu", "flatten", {"type": "dense"}]
    tree["optimizer"] = {"name": "muon", "lr": 0.02, "fallback_lr": 0.01}
    config.write_text(yaml.safe_dump(tree))
    result = runner.invoke(app, ["lr-find", str(config), "--out", str(tmp_path / "f"), "--steps", "40", "-q"])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "f" / "lr_find.json").read_text())
    if found["suggestion"] is not None:
        lr, fallback = (float(o.split("=")[1]) for o in found["suggested_overrides"])
        assert fallback == pytest.approx(lr / 2, rel=0.01)


def test_lr_find_refuses_a_ramp_that_does_not_grow(tmp_path, digits_config):
    result = runner.invoke(app, ["lr-find", str(digits_config), "--start-lr", "1", "--end-lr", "0.1"])
    assert result.exit_code == 2 and "error: --start-lr must be below --end-lr" in result.output
