"""Training on real data: the shared CIFAR-10 JPEG copy (../shared/data) and Fashion-MNIST from Debian's
package. Select with ``-m realdata``; CI runs them (and installs the Fashion-MNIST package)."""

import json
import os

import pytest

from cifar_scratch.config import load_config
from cifar_scratch.inference.evaluate import evaluate_checkpoint
from cifar_scratch.training.run import start_run
from tests.conftest import REPO, SHARED_JPEG

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
needs_jpeg = pytest.mark.skipif(not SHARED_JPEG.exists(), reason=f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPEG}")
FASHION = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not os.path.isdir(FASHION) and os.environ.get("CIFAR_SCRATCH_REQUIRE_REALDATA") != "1",
    reason=f"Fashion-MNIST is not installed at {FASHION} (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # Reuse the repository's data cache when there is one: decoding 50,000 JPEGs takes ~10 s.
    return REPO / "data" if os.access(REPO, os.W_OK) else tmp_path_factory.mktemp("data")


@needs_jpeg
def test_mlp3class_trains_well_above_chance(tmp_path, data_dir):
    config = load_config(REPO / "configs" / "mlp3class.yaml", [f"data.source={SHARED_JPEG}", "training.epochs=3"])
    result = start_run(config, data_dir, progress=False, runs_dir=tmp_path)
    assert result.metrics["class_names"] == ["airplane", "automobile", "bird"]
    assert result.metrics["test_accuracy"] > 0.70  # chance is 1/3
    out_dir, metrics = evaluate_checkpoint(result.run_dir, "test", data_dir, progress=False)
    assert metrics["samples"] == 1500 and metrics["accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert json.loads((out_dir / "confusion_matrix.json").read_text())["class_names"] == ["airplane", "automobile", "bird"]


@needs_fashion
def test_fashion_mlp_and_cnn_learn(tmp_path):
    mlp = load_config(REPO / "configs" / "fashion_mlp.yaml", ["training.epochs=2"])
    result = start_run(mlp, tmp_path / "data", progress=False, runs_dir=tmp_path)
    assert result.metrics["test_accuracy"] > 0.83  # 10 classes; the full 30-epoch run reaches 90%
    # The CNN for one epoch on two classes (6,000 training images): the conv path end to end on real images.
    cnn = load_config(
        REPO / "configs" / "fashion_cnn.yaml",
        ["training.epochs=1", "data.classes=[Pullover, Coat]", "data.val_fraction=0.5", "model.layers.14.units=2"],
    )
    result = start_run(cnn, tmp_path / "data", progress=False, runs_dir=tmp_path)
    assert result.metrics["test_accuracy"] > 0.75  # chance is 1/2; pullovers and coats are the hardest pair
