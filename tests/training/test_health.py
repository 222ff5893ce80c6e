"""Per-layer health: its figures, its warnings (naming the right layer), its state in checkpoints."""

import copy
import csv
import json

import numpy as np
import pytest

import cifar_scratch as cs
from cifar_scratch.errors import CheckpointError
from cifar_scratch.training.checkpoint import load_checkpoint, save_checkpoint
from cifar_scratch.training.health import HEALTH_FIELDS, _outliers
from cifar_scratch.training.run import resume_run
from cifar_scratch.training.trainer import Callback

# Three weight layers, so that each has two others to be compared with.
TREE = {
    "name": "health",
    "data": {"dataset": "digits", "val_fraction": 0.15, "test_fraction": 0.2},
    "model": {
        "layers": [
            "flatten",
            {"type": "dense", "units": 64},
            "relu",
            {"type": "dense", "units": 64},
            "relu",
            {"type": "dense", "units": 32},
            "relu",
            {"type": "dense"},
        ]
    },
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "training": {"epochs": 2, "batch_size": 32},
    "output": {"plots": False, "health_every": 3},
}


class NegativeBias(Callback):
    """Kills the second hidden layer: a bias of -50 before its ReLU."""

    def on_train_start(self, trainer):
        trainer.model.params["dense2.bias"][:] = -50.0


def train(tmp_path, tree, callbacks=()):
    return cs.train(tree, callbacks=callbacks, runs_dir=tmp_path / "runs")


def test_a_healthy_network_warns_of_nothing_and_writes_a_row_per_layer_and_epoch(tmp_path):
    run = train(tmp_path, TREE)
    assert run.metrics["warnings"] == []
    rows = list(csv.DictReader((run.path / "diagnostics.csv").open()))
    assert tuple(rows[0]) == HEALTH_FIELDS
    layers = ["dense1", "relu1", "dense2", "relu2", "dense3", "relu3", "dense4"]
    assert [(r["epoch"], r["layer"]) for r in rows] == [(str(e), name) for e in (1, 2) for name in layers]
    by = {(r["epoch"], r["layer"]): r for r in rows}
    assert by["1", "relu1"]["config"] == "model.layers.2" and by["1", "relu1"]["kind"] == "relu"
    assert by["1", "relu1"]["grad_norm"] == "" and float(by["1", "relu1"]["dead_fraction"]) < 0.5
    assert float(by["1", "relu1"]["act_mean"]) > 0 and float(by["1", "relu1"]["act_std"]) > 0
    assert by["1", "dense1"]["dead_fraction"] == "" and 1e-5 < float(by["1", "dense1"]["update_ratio"]) < 1e-1
    assert float(by["1", "dense4"]["grad_norm"]) > 0


def test_a_dead_layer_is_named_by_its_config_path_once(tmp_path):
    run = train(tmp_path, TREE, [NegativeBias()])
    dead = [w for w in run.metrics["warnings"] if "never positive" in w]
    # relu2 is dead, and so is relu3 behind it (its input is all zero): both named, each once
    assert [w.split(":")[0] for w in dead] == ["model.layers.4 (relu2)", "model.layers.6 (relu3)"]
    assert "100% of its units" in dead[0]


def test_a_layer_with_a_thousandfold_learning_rate_is_named(tmp_path):
    tree = copy.deepcopy(TREE)
    tree["optimizer"] = {"name": "sgd", "lr": 0.0005, "momentum": 0.9, "groups": [{"params": "dense3.*", "lr_scale": 1000}]}
    warnings = train(tmp_path, tree).metrics["warnings"]
    updates = [w for w in warnings if "moves its weights" in w]
    assert [w.split(":")[0] for w in updates] == ["model.layers.5 (dense3)"], warnings
    assert "x the median of the other weight layers" in updates[0]


def test_outliers_compare_each_value_with_the_median_of_the_others():
    values = {"a": 1.0, "b": 2.0, "c": 1.5, "d": 300.0, "e": 0.001}
    assert dict(_outliers(values)) == pytest.approx({"d": 300.0 / 1.25, "e": 0.001 / 1.75})
    assert list(_outliers({"a": 1.0, "b": 1e6})) == []  # one other: nothing to stand against


@pytest.mark.slow
def test_health_off_writes_no_diagnostics(tmp_path):
    tree = copy.deepcopy(TREE)
    tree["output"]["health"] = False
    run = train(tmp_path, tree)
    assert not (run.path / "diagnostics.csv").exists() and "warnings" not in run.metrics


@pytest.mark.slow
def test_damaged_health_state_is_a_clear_checkpoint_error(tmp_path):
    run = train(tmp_path, {**TREE, "training": {"epochs": 1, "batch_size": 32}})
    last = run.path / "checkpoints" / "last.npz"
    arrays, meta = load_checkpoint(last)
    meta["health"]["sums"].pop("dense1")
    meta.pop("format"), meta.pop("version")
    save_checkpoint(last, arrays, meta)
    with pytest.raises(CheckpointError, match="last.npz: checkpoint is damaged: layer health: its layers or columns"):
        resume_run(run.path, ["training.epochs=2"], None, progress=False)


@pytest.mark.slow
def test_health_leaves_training_bit_identical(tmp_path):
    on = train(tmp_path, TREE)
    off = train(tmp_path, {**TREE, "output": {"plots": False, "health": False}})
    a, _ = load_checkpoint(on.path / "checkpoints" / "last.npz")
    b, _ = load_checkpoint(off.path / "checkpoints" / "last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    history = [json.loads(line) for line in (on.path / "history.jsonl").read_text().splitlines()]
    assert all(row["grad_norm"] > 0 for row in history)


def test_a_layer_whose_kernel_is_frozen_is_not_judged_by_its_bias(tmp_path):
    """A frozen kernel with a trained bias (speedrun93's whitened stem): the bias starts at zero, so its
    update ratio is large and says nothing; only layers whose weights train are compared."""
    tree = copy.deepcopy(TREE)
    tree["model"]["layers"][1] = {"type": "dense", "units": 64, "trainable": ["bias"]}
    tree["optimizer"]["lr"] = 0.5
    run = train(tmp_path, tree)
    assert not [w for w in run.metrics["warnings"] if "dense1" in w], run.metrics["warnings"]
    rows = list(csv.DictReader((run.path / "diagnostics.csv").open()))
    assert float(rows[0]["update_ratio"]) > 0.1  # the bias did move a lot
