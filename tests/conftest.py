"""Shared fixtures: a tiny offline config on scikit-learn's digits."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg-train.tar.gz"


#: What a completed run folder holds.
RUN_FOLDER_FILES = (
    "config.yaml",
    "run.json",
    "summary.txt",
    "history.csv",
    "history.jsonl",
    "metrics.json",
    "checkpoints/last.npz",
    "checkpoints/best.npz",
    "plots/loss.png",
    "plots/accuracy.png",
    "plots/lr.png",
    "plots/confusion_matrix.png",
    "plots/confusion_matrix_normalized.png",
    "plots/layers.png",
    "diagnostics.csv",
)


def digits_tree(plots: bool = False, **training) -> dict:
    """The tiny digits run. Without figures unless asked: they are 40% of the fast loop's time (0.2 s
    each), and only the tests about them need them."""
    return {
        "name": "tiny",
        "data": {"dataset": "digits", "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {
            "layers": ["flatten", {"type": "dense", "units": 16}, "relu", {"type": "dropout", "rate": 0.2}, {"type": "dense"}]
        },
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "l2": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "training": {"epochs": 4, "batch_size": 64, "seed": 7, **training},
        "output": {"plots": plots},
    }


@pytest.fixture
def digits_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(digits_tree()))
    return path


@pytest.fixture(autouse=True)
def forget_user_kinds():
    """A test's user layers, optimizers and losses (``file.py:Class``) leave the kinds' records, and so
    the schema, as they were: a later test (the generated config reference) must not see them."""
    yield
    from cifar_scratch.kinds import user
    from cifar_scratch.kinds.layers import LAYER_KINDS
    from cifar_scratch.kinds.losses import LOSS_KINDS
    from cifar_scratch.kinds.optimizers import OPTIMIZER_KINDS

    for kinds in (LAYER_KINDS, OPTIMIZER_KINDS, LOSS_KINDS):
        for name in [name for name in kinds if user.is_reference(name)]:
            kinds.unregister(name)
