"""A run killed anywhere, SIGKILL or SIGTERM, including its last seconds, is brought to the same
complete state by ``--resume`` as an uninterrupted run: bit for bit, with every file in place."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar_scratch.training.checkpoint import load_checkpoint
from tests.conftest import REPO, RUN_FOLDER_FILES, digits_tree

pytestmark = pytest.mark.slow

TIMES = ("train_time_s", "epoch_time", "elapsed")


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "cifar_scratch", *map(str, args), "--quiet"]


def launch(command, env):
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def without_times(value):
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def state_of(run_dir: Path) -> tuple[dict, dict, dict]:
    arrays, meta = load_checkpoint(run_dir / "checkpoints" / "last.npz")
    meta["config"]["output"].pop("runs_dir")  # each trial has its own folder
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return arrays, without_times(meta), without_times(metrics)


def wait_for(predicate, process, timeout=60.0) -> bool:
    """Poll every millisecond until ``predicate()`` or the process ends."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.001)
    return False


@pytest.fixture
def setup(tmp_path):
    # Clipped steps (the norm of the first ones is above 0.5) and random draws must survive every kill too.
    tree = digits_tree(plots=True, epochs=5, batch_size=16, grad_clip={"max_norm": 0.5})  # killed while drawing too
    tree["data"]["augment"] = {"flip": True, "translate": 1}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "CIFAR_SCRATCH_DATA": str(tmp_path / "data"), "PYTHONHASHSEED": "0"}
    reference = subprocess.run(
        cli("train", config, "--runs-dir", tmp_path / "reference"), capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert reference.returncode == 0, reference.stderr
    return config, env, Path(reference.stdout.strip().splitlines()[-1])


# Where each trial strikes: a seeded random moment after the run folder appears, or a moment inside
# the finishing window (metrics.json written, plots not yet; or the first plot written).
TRIALS = [
    (signal.SIGKILL, "random"),
    (signal.SIGTERM, "random"),
    (signal.SIGKILL, "random"),
    (signal.SIGTERM, "random"),
    (signal.SIGKILL, "metrics.json"),
    (signal.SIGTERM, "metrics.json"),
    (signal.SIGKILL, "plots/loss.png"),
    (signal.SIGTERM, "plots/loss.png"),
]


def test_killed_anywhere_resumes_to_the_uninterrupted_result(setup, tmp_path):
    config, env, reference_dir = setup
    expected_arrays, expected_meta, expected_metrics = state_of(reference_dir)
    rng = np.random.default_rng(2026)
    finishing_hits = 0
    for trial, (signum, trigger) in enumerate(TRIALS):
        runs = tmp_path / f"trial{trial}"
        process = launch(cli("train", config, "--runs-dir", runs), env)
        folder_made = wait_for(lambda: any(runs.glob("*/checkpoints/last.npz")), process)
        assert folder_made, process.communicate()[1]
        (run_dir,) = runs.iterdir()
        if trigger == "random":
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            wait_for(lambda: (run_dir / trigger).exists(), process)
            finishing_hits += process.poll() is None
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        if process.returncode not in (0, -signal.SIGKILL):  # SIGTERM: saved and exited 143, or it had finished
            assert process.returncode == 143 and "Traceback" not in err, err
            assert "resume with: cifar-scratch train --resume" in err, err
        for attempt in range(5):  # resume (killing some resumes too) until the run is complete
            resumed = launch(cli("train", "--resume", run_dir), env)
            if attempt == 0 and trial % 2 == 0:
                time.sleep(rng.uniform(0.5, 2.0))
                resumed.send_signal(signal.SIGKILL)
                resumed.communicate(timeout=60)
                continue
            out, err = resumed.communicate(timeout=300)
            if resumed.returncode == 0:
                break
            assert resumed.returncode == 2 and "already finished" in err, err  # the first process had completed
            break
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "completed", (trial, info)
        names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")}
        assert set(RUN_FOLDER_FILES) <= names, (trial, set(RUN_FOLDER_FILES) - names)
        assert not [n for n in names if n.endswith(".tmp")], names  # temporaries of killed writes are cleaned up
        arrays, meta, metrics = state_of(run_dir)
        assert arrays.keys() == expected_arrays.keys()
        for name, value in expected_arrays.items():
            assert np.array_equal(arrays[name], value), (trial, name)
        assert meta == expected_meta, trial
        assert metrics == expected_metrics, trial
    assert finishing_hits >= 2, "the finishing window was never hit; the test lost its point"


def test_double_ctrl_c_early_says_what_was_saved(setup, tmp_path):
    config, env, _ = setup
    runs = tmp_path / "double"
    process = launch(cli("train", config, "--runs-dir", runs), env)
    assert wait_for(lambda: any(runs.glob("*/checkpoints/last.npz")), process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted by SIGINT" in err
    (run_dir,) = runs.iterdir()
    # Either the first signal was handled at a step boundary before the second came, or the second
    # stopped the run at once; both say what the checkpoint holds and how to go on.
    assert "resume with: cifar-scratch train --resume" in err and "step" in err, err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    done = subprocess.run(cli("train", "--resume", run_dir), capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr


def scalars_of(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for ``logdir``: tag -> [(step, value)], read by tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def test_tensorboard_shows_every_scalar_once_across_kills(tmp_path):
    """Runs killed mid-training (SIGTERM, SIGKILL) and resumed log into TensorBoard exactly what an
    uninterrupted one does: the points a killed session logged after its checkpoint are on disk (the
    writer flushes every few events) and must be hidden, the others kept."""
    pytest.importorskip("tensorboard", reason="the tensorboard reader (test extra) checks the event files")
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(digits_tree(epochs=30, batch_size=4)))  # thousands of steps: time to strike
    env = {**os.environ, "CIFAR_SCRATCH_DATA": str(tmp_path / "data"), "PYTHONHASHSEED": "0"}
    reference = subprocess.run(
        cli("train", config, "--tensorboard", "--runs-dir", tmp_path / "reference"),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    expected = scalars_of(Path(reference.stdout.strip().splitlines()[-1]) / "tensorboard")
    assert {"loss/step", "lr/step", "loss/train", "accuracy/val", "health/grad_norm/dense1", "final/test_accuracy"} <= set(
        expected
    )
    assert len(expected["loss/step"]) == len({step for step, _ in expected["loss/step"]}) == 30 * 288  # 288 steps per epoch
    rng = np.random.default_rng(27)
    for trial, signum in enumerate((signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)):
        runs = tmp_path / f"tb{trial}"
        process = launch(cli("train", config, "--tensorboard", "--runs-dir", runs), env)
        history = lambda: next(iter(runs.glob("*/history.csv")), None)  # noqa: E731
        assert wait_for(lambda: history() is not None and len(history().read_text().splitlines()) > 2 + trial, process)
        time.sleep(rng.uniform(0.0, 0.2))
        process.send_signal(signum)
        process.communicate(timeout=120)
        assert process.returncode in (-signal.SIGKILL, 143), (trial, process.returncode)  # stopped mid-run
        (run_dir,) = runs.iterdir()
        resumed = subprocess.run(
            cli("train", "--resume", run_dir), capture_output=True, text=True, env=env, cwd=REPO, timeout=300
        )
        assert resumed.returncode == 0, resumed.stderr
        assert len(list((run_dir / "tensorboard").iterdir())) == 2  # one event file per session
        found = scalars_of(run_dir / "tensorboard")
        assert found.keys() == expected.keys(), (trial, found.keys() ^ expected.keys())
        for tag, points in expected.items():
            if tag.startswith("time/") or tag == "final/train_time_s":
                assert [s for s, _ in found[tag]] == [s for s, _ in points], (trial, tag)
            else:
                assert found[tag] == points, (trial, tag)
