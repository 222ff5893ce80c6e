"""Sweeps: the spec, its jobs, the ledger, and the ``sweep`` and ``runs`` commands on digits runs."""

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
from typer.testing import CliRunner

from cifar_scratch import sweeps
from cifar_scratch.cli import app
from cifar_scratch.errors import ConfigError
from tests.conftest import REPO, digits_tree

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def write_spec(tmp_path, parameters, base=None, **extra) -> Path:
    if base is None:
        base = tmp_path / "tiny.yaml"
        base.write_text(yaml.safe_dump(digits_tree(epochs=2)))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(base), "parameters": parameters, **extra}))
    return path


def ledger(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "jobs.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- spec and jobs
@pytest.mark.parametrize(
    "spec, message",
    [
        ({"parameters": {"optimizer.lr": {"distribution": "uniform", "min": 0.1, "max": 0.2}}}, "parameters: grid needs values"),
        ({"method": "random", "parameters": {"optimizer.lr": {"values": [1]}}}, "run_cap: random search needs run_cap"),
        ({"parameters": {"optimizer.lr": {"values": [1], "distribution": "uniform"}}}, "parameters.optimizer.lr: give either"),
        ({"parameters": {"a": {"distribution": "log_uniform", "min": 0, "max": 1}}}, "parameters.a: log_uniform needs min > 0"),
        ({"parameters": {"a": {"distribution": "uniform", "min": 2, "max": 1}}}, "parameters.a: min must be below max"),
        ({"metric": {"name": "accuracy"}, "parameters": {"a": {"values": [1]}}}, "metric.name:"),
        ({"method": "bayes", "parameters": {"a": {"values": [1]}}}, "run_cap: bayes search needs run_cap"),
        ({"method": "hyperband", "parameters": {"a": {"values": [1]}}}, "method:"),
        ({"paramters": {"a": {"values": [1]}}}, "paramters: unknown key"),
    ],
)
def test_bad_specs_are_one_line_per_problem(tmp_path, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": "x.yaml", **spec}))
    with pytest.raises(ConfigError) as caught:
        sweeps.load_spec(path)
    assert any(line.startswith(message) for line in caught.value.lines), caught.value.lines


def test_grid_varies_the_last_parameter_fastest_and_random_is_fixed_by_the_seed(tmp_path):
    grid = sweeps.SweepSpec(base="b", parameters={"a": {"values": [1, 2]}, "b": {"values": ["x", "y"]}})
    assert [job.params for job in sweeps.expand_jobs(grid)] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert sweeps.expand_jobs(grid)[1].overrides == ["a=1", "b=y"]
    spec = {
        "base": "b",
        "method": "random",
        "run_cap": 50,
        "parameters": {
            "lr": {"distribution": "log_uniform", "min": 1e-4, "max": 1e-1},
            "units": {"distribution": "int_uniform", "min": 8, "max": 12},
            "act": {"values": ["relu", "gelu"]},
        },
    }
    first = [job.params for job in sweeps.expand_jobs(sweeps.SweepSpec(**spec))]
    assert first == [job.params for job in sweeps.expand_jobs(sweeps.SweepSpec(**spec))]
    assert first != [job.params for job in sweeps.expand_jobs(sweeps.SweepSpec(**spec, seed=1))]
    assert all(1e-4 <= p["lr"] <= 1e-1 and p["units"] in range(8, 13) and p["act"] in ("relu", "gelu") for p in first)
    assert {p["units"] for p in first} == set(range(8, 13))  # both ends reachable


def test_a_typo_in_a_swept_key_stops_the_sweep_before_any_job_runs(tmp_path):
    spec = write_spec(tmp_path, {"optimizer.lrr": {"values": [0.1]}})
    result = invoke("sweep", spec, "--out", tmp_path / "sweep")
    assert result.exit_code == 2
    assert result.output.startswith("error: parameters.optimizer.lrr: unknown key (did you mean 'lr'?)")
    assert not (tmp_path / "sweep").exists()


# --------------------------------------------------------------------------- running
@pytest.mark.slow
def test_sweep_runs_every_job_records_it_and_skips_it_the_second_time(tmp_path):
    spec = write_spec(tmp_path, {"optimizer.lr": {"values": [0.05, 0.1]}, "training.seed": {"values": [0, 1]}})
    folder = tmp_path / "sweep"
    result = invoke("sweep", spec, "-j", "2", "--out", folder)
    assert result.exit_code == 0, result.output
    assert "4 jobs, 0 done, 4 to run; 2 at a time, 1 thread each" in result.output
    events = ledger(folder)
    assert sorted(e["job"] for e in events if e["status"] == "completed") == [0, 1, 2, 3]
    rows = (folder / "results.csv").read_text().splitlines()
    assert rows[0].startswith("job,status,optimizer.lr,training.seed,val_accuracy,")
    assert len(rows) == 5 and all(",completed," in row for row in rows[1:])
    assert sorted(d.name.split("_", 1)[1] for d in (folder / "runs").iterdir()) == [f"sweep-00{i}" for i in range(4)]
    info = json.loads((folder / "runs" / [e for e in events if e["job"] == 3][-1]["run_dir"] / "run.json").read_text())
    assert info["overrides"][:2] == ["optimizer.lr=0.1", "training.seed=1"]
    assert "best val_accuracy:" in result.output

    again = invoke("sweep", spec, "--out", folder)
    assert again.exit_code == 0 and "4 jobs, 4 done, 0 to run" in again.output
    assert len(ledger(folder)) == len(events)

    # The sweep died after job 3 finished but before recording it: its run says completed, nothing reruns
    lines = (folder / "jobs.jsonl").read_text().splitlines()
    last_done = max(i for i, line in enumerate(lines) if '"completed"' in line)
    (folder / "jobs.jsonl").write_text("\n".join(lines[:last_done] + lines[last_done + 1 :]) + "\n")
    recovered = invoke("sweep", spec, "--out", folder)
    assert recovered.exit_code == 0 and "4 jobs, 4 done, 0 to run" in recovered.output

    listing = invoke("runs", folder)
    assert listing.exit_code == 0
    assert listing.output.count("completed") == 4 and "optimizer.lr=0.1 training.seed=1" in listing.output

    other = write_spec(tmp_path, {"optimizer.lr": {"values": [0.2]}})
    clash = invoke("sweep", other, "--out", folder)
    assert clash.exit_code == 2 and "holds a different sweep" in clash.output


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_sweep_goes_on_unless_fail_fast(tmp_path):
    # batch 2000 > the digits training split: the job fails when its data is known, after validation
    spec = write_spec(tmp_path, {"training.batch_size": {"values": [2000, 32]}, "training.drop_last": {"values": [True]}})
    folder = tmp_path / "sweep"
    result = invoke("sweep", spec, "--out", folder)
    assert result.exit_code == 1
    status = {e["job"]: e for e in ledger(folder) if e["status"] != "started"}
    assert status[0]["status"] == "failed" and status[0]["exit_code"] == 2
    assert status[0]["error"].startswith("error: training.drop_last:")
    assert status[1]["status"] == "completed"
    assert "1 job(s) failed" in result.output

    fast = invoke("sweep", spec, "--out", tmp_path / "fast", "--fail-fast")
    assert fast.exit_code == 1
    assert [e["job"] for e in ledger(tmp_path / "fast")] == [0, 0]  # job 1 never started

    retried = invoke("sweep", spec, "--out", folder, "--retry-failed")
    assert "2 jobs, 1 done, 1 to run" in retried.output


def three_seed_spec(tmp_path) -> Path:
    """A sweep of 3 digits jobs long enough (30 epochs of batch 16) to be stopped mid-job."""
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(digits_tree(epochs=30, batch_size=16)))
    return write_spec(tmp_path, {"training.seed": {"values": [0, 1, 2]}}, base=base)


def sigterm_mid_job(process: subprocess.Popen, histories, wait_s: float = 60) -> str:
    """SIGTERM the sweep ``process`` once one of the files ``histories()`` gives shows 2 trained
    epochs (a job stopped mid-run); -> the sweep's output, after checking it exited 143."""
    deadline = time.monotonic() + 120
    while not any(len(path.read_text().splitlines()) >= 3 for path in histories()):
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("job 1 never got going")
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=wait_s)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "run the same sweep command again" in output
    return output


def assert_each_job_ran_once_and_the_stopped_one_resumed(result, folder: Path, stopped: Path) -> None:
    """After the rerun of a :func:`three_seed_spec` sweep stopped in job 1."""
    assert result.exit_code == 0, result.output
    assert "3 jobs, 1 done, 2 to run (1 resumed)" in result.output
    events = ledger(folder)
    assert sorted(e["job"] for e in events if e["status"] == "completed") == [0, 1, 2]  # each exactly once
    assert [len(list((folder / "runs").glob(f"*_sweep-00{i}"))) for i in range(3)] == [1, 1, 1]
    info = json.loads((stopped / "run.json").read_text())
    assert info["status"] == "completed" and len(info["resumes"]) == 1
    assert json.loads((stopped / "metrics.json").read_text())["epochs"] == 30


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_and_started_again_runs_every_job_exactly_once(tmp_path):
    spec = three_seed_spec(tmp_path)
    folder = tmp_path / "sweep"
    command = [sys.executable, "-m", "cifar_scratch", "sweep", str(spec), "--out", str(folder), "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = sigterm_mid_job(process, lambda: (folder / "runs").glob("*_sweep-001/history.csv"))
    assert "1 running job(s) stopped" in output
    last = {e["job"]: e["status"] for e in ledger(folder)}
    assert last == {0: "completed", 1: "interrupted"}
    stopped = next((folder / "runs").glob("*_sweep-001"))
    assert (stopped / "checkpoints" / "last.npz").exists()

    result = invoke("sweep", spec, "--out", folder)
    assert_each_job_ran_once_and_the_stopped_one_resumed(result, folder, stopped)


@pytest.mark.slow
def test_runs_reports_a_killed_run_as_interrupted_not_running(tmp_path):
    run = tmp_path / "runs" / "20260101-000000_tiny"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(digits_tree()))
    (run / "run.json").write_text(json.dumps({"status": "running", "started": "2026-01-01T00:00:00+0000"}))
    (run / ".lock").write_text("")
    result = invoke("runs", tmp_path / "runs")
    assert result.exit_code == 0
    assert "interrupted" in result.output and "running" not in result.output

    from filelock import FileLock

    with FileLock(run / ".lock"):  # a live process holds the lock: believe "running"
        probe = subprocess.run(
            [sys.executable, "-m", "cifar_scratch", "runs", str(tmp_path / "runs")],
            capture_output=True,
            text=True,
            env={**os.environ},
        )
    assert "running" in probe.stdout, probe.stdout + probe.stderr

    assert invoke("runs", tmp_path / "nowhere").exit_code == 2


def test_runs_names_the_training_metric_that_ranked_a_run_without_a_validation_split(tmp_path):
    for name, val in [("20260101-000000_noval", 0), ("20260101-000001_withval", 100)]:
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(digits_tree()))
        (run / "run.json").write_text(json.dumps({"status": "completed", "sizes": {"train": 900, "val": val, "test": 100}}))
        (run / "metrics.json").write_text(json.dumps({"monitor": "val_accuracy", "best_value": 0.9, "best_epoch": 3}))
    result = invoke("runs", tmp_path / "runs")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert "train_accuracy 0.9000 @3" in lines["20260101-000000_noval"]
    assert "val_accuracy 0.9000 @3" in lines["20260101-000001_withval"]


# --------------------------------------------------------------------------- compare and predict
@pytest.mark.slow
def test_compare_groups_seeds_sorts_formats_and_draws_one_panel_per_swept_parameter(tmp_path):
    spec = write_spec(tmp_path, {"optimizer.lr": {"values": [0.01, 0.1]}, "training.seed": {"values": [0, 1]}})
    folder = tmp_path / "sweep"
    assert invoke("sweep", spec, "-j", "2", "--out", folder).exit_code == 0

    result = invoke("compare", folder, "--sort", "val_accuracy")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["run", "optimizer.lr", "training.seed", "status", "n"]  # name/output ignored
    rows = [line for line in lines[2:] if line.startswith("2 runs")]
    assert len(rows) == 2 and all(" ± " in row and " 0, 1 " in row for row in rows)  # seeds grouped and listed
    table = json.loads(invoke("compare", folder, "--format", "json", "--sort", "val_accuracy").stdout)
    means = [row["val_accuracy"]["mean"] for row in table]
    assert means == sorted(means, reverse=True) and table[0]["val_accuracy"]["n"] == 2
    assert (folder / "compare.png").stat().st_size > 10_000

    single = invoke("compare", folder, "--no-group-seeds", "--format", "csv", "--figure", tmp_path / "f.png").stdout
    header = single.splitlines()[0].split(",")
    assert header[:3] == ["run", "optimizer.lr", "training.seed"] and len(single.splitlines()) == 5
    markdown = invoke("compare", folder, "--format", "markdown", "--figure", tmp_path / "f.png").stdout
    assert markdown.startswith("| run | optimizer.lr |")

    bad = invoke("compare", folder, "--sort", "accuracy")
    assert bad.exit_code == 2 and bad.output.startswith("error: --sort: no column 'accuracy'")
    assert invoke("compare", tmp_path / "nowhere").exit_code == 2


@pytest.mark.slow
def test_predict_prints_the_top_classes_of_png_files_of_any_size(tmp_path, digits_config):
    from PIL import Image

    result = invoke("train", digits_config, "training.epochs=2", "--runs-dir", tmp_path / "runs", "--quiet")
    run_dir = Path(result.output.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "colour.png")
    Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "small.png")

    shown = invoke("predict", run_dir, tmp_path / "colour.png", tmp_path / "small.png")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'colour.png'}: ")
    assert len(lines[0].split(": ", 1)[1].split("  ")) == 3  # top-3 by default

    payload = json.loads(invoke("predict", run_dir, tmp_path / "small.png", "--json", "-k", "10").output)
    probabilities = [p["probability"] for p in payload["results"][0]["predictions"]]
    assert len(probabilities) == 10 and probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 1e-5
    assert payload["checkpoint"].endswith("best.npz")

    not_image = invoke("predict", run_dir, digits_config)
    assert not_image.exit_code == 1 and not_image.output.startswith(f"error: {digits_config}: not a readable image")
    missing = invoke("predict", run_dir, tmp_path / "missing.png")
    assert missing.exit_code == 2 and missing.output.strip() == f"error: {tmp_path / 'missing.png'}: no such file"
    assert invoke("predict", tmp_path / "no-run", tmp_path / "small.png").exit_code == 2


def test_shipped_sweep_specs_are_valid_and_their_jobs_validate(monkeypatch):
    repo = REPO
    monkeypatch.chdir(repo)  # a spec's base is relative to the current folder, as the README runs them
    specs = sorted((repo / "sweeps").glob("*.yaml"))
    assert specs
    for path in specs:
        spec = sweeps.load_spec(path)
        assert Path(spec.base).is_absolute()
        sweeps.check_jobs(spec, sweeps.probe_jobs(spec))


@pytest.mark.slow
def test_a_tensorboard_sweep_writes_one_hparams_session_per_job(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard reader (test extra) checks the event files")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump({**digits_tree(epochs=2), "output": {"tensorboard": True}}))
    spec = write_spec(
        tmp_path, {"optimizer.lr": {"values": [0.05, 0.1]}, "training.label_smoothing": {"values": [0.0, 0.1]}}, base
    )
    folder = tmp_path / "sweep"
    assert invoke("sweep", spec, "-j", "2", "--out", folder).exit_code == 0
    sessions = {}
    for job in sorted((folder / "tensorboard").iterdir()):
        reader = EventAccumulator(str(job))
        reader.Reload()
        content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        hparams = {key: value.number_value for key, value in start.hparams.items()}
        sessions[job.name] = (hparams, reader.Scalars("val_accuracy")[0].value)
    rows = {f"job{row['job']}": row for row in __import__("csv").DictReader((folder / "results.csv").open())}
    assert sessions.keys() == rows.keys() == {"job0", "job1", "job2", "job3"}
    for name, (hparams, accuracy) in sessions.items():
        assert hparams == {
            "optimizer.lr": float(rows[name]["optimizer.lr"]),
            "training.label_smoothing": float(rows[name]["training.label_smoothing"]),
        }
        assert accuracy == pytest.approx(float(rows[name]["val_accuracy"]))
    assert all((run / "tensorboard").is_dir() for run in (folder / "runs").iterdir())  # each job's own scalars
    again = invoke("sweep", spec, "--out", folder)  # nothing new: no session is written twice
    assert again.exit_code == 0 and sorted(p.name for p in (folder / "tensorboard").iterdir()) == sorted(sessions)
    assert all(len(list((folder / "tensorboard" / n).iterdir())) == 1 for n in sessions)
