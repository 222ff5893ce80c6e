"""The run folder: created atomically, its files by name, its run.json, lock and history."""

import json
import multiprocessing

import pytest

from cifar_scratch.errors import CheckpointError, UserError
from cifar_scratch.runs.folder import HISTORY_FIELDS, RunFolder


def create_run_dir(runs_dir, name, now=None):
    return RunFolder.create(runs_dir, name, now).path


def test_same_second_gets_distinct_folders(tmp_path):
    now = 1_800_000_000.0
    made = [create_run_dir(tmp_path, "sweep", now=now) for _ in range(3)]
    assert len(set(made)) == 3
    assert [p.name.split("_", 1)[1] for p in made] == ["sweep", "sweep-2", "sweep-3"]
    assert all((p / "checkpoints").is_dir() and (p / "plots").is_dir() for p in made)


def _make(args):
    return str(create_run_dir(*args))


def test_parallel_processes_never_share_a_folder(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = pool.map(_make, [(tmp_path, "par", 1_800_000_000.0)] * 8)
    assert len(set(made)) == 8


def test_the_folder_owns_its_layout_run_json_lock_and_history(tmp_path):
    folder = RunFolder.create(tmp_path, "x")
    assert folder.last == folder.path / "checkpoints" / "last.npz" and folder.config.name == "config.yaml"
    assert folder.read_info() == {} and not folder.looks_like_a_run()
    folder.update_info({"status": "running"})
    folder.update_info({"error": None})
    assert json.loads(folder.info.read_text()) == {"status": "running", "error": None} and folder.looks_like_a_run()
    with folder.lock():
        assert folder.is_locked()
        with pytest.raises(UserError, match="another process is training this run"), folder.lock():
            pass
    assert not folder.is_locked()
    rows = [dict(zip(HISTORY_FIELDS, (1, 0.5, 0.75, None, None, 0.1, 3.5, 2.0)))]
    folder.write_history(rows)
    expected = {"epoch": 1.0, "train_loss": 0.5, "train_accuracy": 0.75, "lr": 0.1, "grad_norm": 3.5, "epoch_time": 2.0}
    assert folder.read_history() == [expected]
    folder.info.write_text("{broken")
    with pytest.raises(CheckpointError, match="run.json is damaged"):
        folder.read_info()
    assert folder.read_info_or_empty() == {}
    folder.record_failure("failed", "boom")  # rewritten whole, a damaged run.json notwithstanding
    assert json.loads(folder.info.read_text())["error"] == "boom"
