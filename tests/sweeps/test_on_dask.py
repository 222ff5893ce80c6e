"""The Dask executor on a real ``distributed.LocalCluster`` (worker processes), a worker killed mid-job."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from cifar_scratch.errors import CheckpointError
from cifar_scratch.runs.index import find_runs
from tests.conftest import digits_tree

from .test_local import (
    assert_each_job_ran_once_and_the_stopped_one_resumed,
    invoke,
    ledger,
    sigterm_mid_job,
    three_seed_spec,
    write_spec,
)

distributed = pytest.importorskip("distributed", reason="the Dask executor needs the dask extra: pip install -e '.[dask]'")
sweep_dask = pytest.importorskip("cifar_scratch.sweeps.on_dask")


def train_processes(marker: str) -> dict[int, tuple[int, float]]:
    """Running ``cifar_scratch train`` processes whose command line holds ``marker``: pid -> (parent pid, start tick)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"cifar_scratch" in command and b"train" in command and any(marker.encode() in part for part in command):
            found[int(entry.name)] = (int(stat[1]), float(stat[19]))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc (Linux)")
def test_a_worker_killed_mid_job_loses_no_job_and_every_run_folder_comes_back_complete(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(digits_tree(epochs=6)))
    spec = write_spec(tmp_path, {"optimizer.lr": {"values": [0.05, 0.1]}, "training.seed": {"values": [0, 1]}}, base=base)
    out = tmp_path / "sw"
    killed: dict = {}

    def kill_a_worker_mid_job() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid, (parent, _) in train_processes("sw-").items():
                time.sleep(1.0)  # let it get into training
                if alive(pid):
                    killed.update(train_pid=pid, worker_pid=parent)
                    os.kill(parent, signal.SIGKILL)  # the worker process; its nanny starts a new one
                    return
            time.sleep(0.1)

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    ) as cluster:
        killer = threading.Thread(target=kill_a_worker_mid_job, daemon=True)
        killer.start()
        result = invoke("sweep", spec, "--executor", "dask", "--address", cluster.scheduler_address, "--out", out, "--threads", 1)
        killer.join(timeout=5)

    assert killed, "no job was seen running, so no worker was killed"
    assert not alive(killed["worker_pid"])
    assert not alive(killed["train_pid"]), "the train process outlived its worker"
    assert result.exit_code == 0, result.output
    entries = ledger(out)
    last = {entry["job"]: entry for entry in entries}
    assert sorted(last) == [0, 1, 2, 3] and all(entry["status"] == "completed" for entry in last.values()), entries
    assert all(entry.get("executor") == "dask" and entry.get("worker") for entry in last.values())
    for entry in last.values():
        run_dir = Path(entry["run_dir"])
        assert run_dir.parent == out / "runs"
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["epochs"] == 6 and metrics["stop_reason"] == "completed" and metrics["test_accuracy"] > 0.5
        for name in ("config.yaml", "history.csv", "checkpoints/best.npz", "checkpoints/last.npz"):
            assert (run_dir / name).is_file(), name
        assert (out / "logs" / f"job-{entry['job']:03d}.log").read_text().startswith("=== start on ")
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(Path(e["run_dir"]).name for e in last.values())
    assert len((out / "results.csv").read_text().splitlines()) == 5


def test_dask_needs_an_address_and_refuses_local_options(tmp_path):
    spec = write_spec(tmp_path, {"optimizer.lr": {"values": [0.05]}})
    for args, message in [
        (["--executor", "dask"], "give the scheduler with --address"),
        (["--address", "tcp://127.0.0.1:1"], "only used with --executor dask"),
        (["--executor", "dask", "--address", "tcp://127.0.0.1:1", "-j", "2"], "the workers decide"),
    ]:
        result = invoke("sweep", spec, *args, "--out", tmp_path / "sw")
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "sw").exists()


def test_run_archives_round_trip_and_refuse_what_is_not_a_run_folder(tmp_path):
    run_dir = tmp_path / "20261122-000000_x"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / "run.json").write_text("{}")
    (run_dir / "checkpoints" / "last.npz").write_bytes(b"\0" * 10)
    runs = tmp_path / "back"
    (runs / run_dir.name).mkdir(parents=True)
    (runs / run_dir.name / "stale.txt").write_text("older copy")
    back = sweep_dask.unpack_run(sweep_dask.pack_run(run_dir), runs)
    assert back == runs / run_dir.name and sorted(p.name for p in runs.iterdir()) == [run_dir.name]
    assert (back / "checkpoints" / "last.npz").read_bytes() == b"\0" * 10 and not (back / "stale.txt").exists()

    half = runs / f".{run_dir.name}.incoming" / run_dir.name  # an unpack cut short is no run to list
    half.mkdir(parents=True)
    (half / "run.json").write_text("{}")
    assert find_runs(runs) == [back]

    for name, kind in [("../evil.txt", tarfile.REGTYPE), ("x/link", tarfile.SYMTYPE)]:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, "/etc/passwd"
            tar.addfile(member, io.BytesIO(b""))
        with pytest.raises(CheckpointError, match="not part of a run folder"):
            sweep_dask.unpack_run(buffer.getvalue(), tmp_path / "other")


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc (Linux)")
def test_a_dask_sweep_stopped_by_sigterm_brings_back_the_checkpoint_and_resumes_it_on_a_worker(tmp_path):
    spec = three_seed_spec(tmp_path)
    folder = tmp_path / "sweep"

    def job_1_histories():  # job 1 trains in the worker's scratch folder, named on its command line
        pids = list(train_processes("sweep-001"))
        line = command_line(pids[0]) if pids else []
        return Path(line[line.index("--runs-dir") + 1]).glob("*/history.csv") if "--runs-dir" in line else []

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    ) as cluster:
        dask_args = ["--executor", "dask", "--address", cluster.scheduler_address, "--out", str(folder), "--threads", "1"]
        process = subprocess.Popen(
            [sys.executable, "-m", "cifar_scratch", "sweep", str(spec), *dask_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sigterm_mid_job(process, job_1_histories, wait_s=90)
        last = {e["job"]: e for e in ledger(folder)}
        assert {job: e["status"] for job, e in last.items()} == {0: "completed", 1: "interrupted", 2: "cancelled"}
        stopped = Path(last[1]["run_dir"])
        assert stopped.parent == folder / "runs" and (stopped / "checkpoints" / "last.npz").is_file()
        assert json.loads((stopped / "run.json").read_text())["status"] == "interrupted"

        result = invoke("sweep", spec, *dask_args)
    assert_each_job_ran_once_and_the_stopped_one_resumed(result, folder, stopped)


@pytest.mark.slow
def test_user_code_travels_with_its_jobs_to_workers_that_share_no_files(tmp_path, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    layer, optimizer = mine / "swish.py", mine / "lion.py"
    layer.write_text((REPO / "examples" / "custom_layer" / "swish.py").read_text())
    optimizer.write_text((REPO / "examples" / "custom_optimizer" / "lion.py").read_text())
    tree = digits_tree(epochs=2)
    tree["model"]["layers"] = ["flatten", {"type": "dense", "units": 16}, {"type": "mine/swish.py:Swish", "beta": 1.5}, "dense"]
    tree["optimizer"] = {"name": "mine/lion.py:Lion", "lr": 0.001, "beta2": 0.98}
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(tree))
    spec = write_spec(tmp_path, {"training.seed": {"values": [0, 1]}}, base=base)
    sources = {"swish.py": layer.read_text(), "lion.py": optimizer.read_text()}
    real_connect = sweep_dask.connect

    def connect_after_the_files_are_gone(address):
        shutil.rmtree(mine)  # shipped already: from here on, only the copies that travel with each job exist
        return real_connect(address)

    monkeypatch.setattr(sweep_dask, "connect", connect_after_the_files_are_gone)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    ) as cluster:
        result = invoke("sweep", spec, "--executor", "dask", "--address", cluster.scheduler_address, "--out", tmp_path / "sw")
    assert result.exit_code == 0, result.output
    last = {entry["job"]: entry for entry in ledger(tmp_path / "sw")}
    assert sorted(last) == [0, 1] and all(entry["status"] == "completed" for entry in last.values()), last
    for entry in last.values():
        run_dir = Path(entry["run_dir"])
        assert {name: (run_dir / "code" / name).read_text() for name in sources} == sources
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["model"]["layers"][2]["type"] == "code/swish.py:Swish"
        assert config["optimizer"]["name"] == "code/lion.py:Lion" and config["optimizer"]["beta2"] == 0.98
        assert (run_dir / "metrics.json").is_file()
