"""The shipped examples run as a newcomer runs them."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_custom_layer_example_script_trains_stops_early_and_predicts(tmp_path):
    script = REPO / "examples" / "custom_layer" / "train_swish.py"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout, whatever is installed
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("epoch 1: val_accuracy ")
    assert any("val_accuracy reached 0.95" in line for line in lines), result.stdout
    assert lines[-1].startswith("predicted: [") and (tmp_path / "runs").is_dir()
    run = next((tmp_path / "runs").iterdir())
    assert (run / "code" / "swish.py").read_text() == (REPO / "examples" / "custom_layer" / "swish.py").read_text()
