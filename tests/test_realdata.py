"""Training on the shared CIFAR-10 JPEG copy (../shared/data). Select with ``-m realdata``; CI runs them."""

import json
import os

import pytest

from cifar_scratch.config import load_config
from cifar_scratch.evaluate import evaluate_checkpoint
from cifar_scratch.training.run import start_run
from tests.conftest import REPO, SHARED_JPEG

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_JPEG.exists(), reason=f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPEG}"),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # Reuse the repository's data cache when there is one: decoding 50,000 JPEGs takes ~45 s.
    return REPO / "data" if os.access(REPO, os.W_OK) else tmp_path_factory.mktemp("data")


def test_mlp3class_trains_well_above_chance(tmp_path, data_dir):
    config = load_config(REPO / "configs" / "mlp3class.yaml", [f"data.source={SHARED_JPEG}", "training.epochs=3"])
    result = start_run(config, data_dir, progress=False, runs_dir=tmp_path)
    assert result.metrics["class_names"] == ["airplane", "automobile", "bird"]
    assert result.metrics["test_accuracy"] > 0.70  # chance is 1/3
    out_dir, metrics = evaluate_checkpoint(result.run_dir, "test", data_dir, progress=False)
    assert metrics["samples"] == 1500 and metrics["accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert json.loads((out_dir / "confusion_matrix.json").read_text())["class_names"] == ["airplane", "automobile", "bird"]
