"""Sweep jobs on a Dask cluster: ``cifar-scratch sweep SPEC --executor dask --address tcp://HOST:8786``.

Needs the optional extra (``pip install -e ".[dask]"``) on the submitting machine and on every
worker; nothing else in the package imports this module.

Every job is the same ``cifar-scratch train`` command a local sweep runs, started by a worker in a
scratch folder of its own. The base config is resolved on the submitting machine and sent with the
job, so a worker needs no copy of the config files, only the installed package and the data: a
path in the config (``data.source``) must exist on every worker, and a downloadable dataset is
downloaded into the worker's data folder (``--data-dir``, else ``$CIFAR_SCRATCH_DATA``, else
``./data`` beside the worker). The worker sends back the run folder as a tar archive, complete or
interrupted, and the sweep unpacks it into its ``runs/``: no shared filesystem is needed. A job that
was interrupted is sent again with its run folder and resumes from the last checkpoint on whichever
worker takes it.

A worker lost mid-job (killed, out of memory, its machine gone) loses that job's progress since it
started there: the scheduler gives the task to another worker, which starts it again (after
``distributed.scheduler.allowed-failures`` lost workers the job is recorded as failed). The train
process dies with its worker (Linux), so a lost job never keeps a core busy in the background.

Start workers with ``--nthreads 1``: one job per worker process, each using the machine's cores
(``--threads``, else cores / worker threads).
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from cifar_scratch import __version__, signals
from cifar_scratch.config import load_config
from cifar_scratch.data import resolve_data_dir
from cifar_scratch.errors import CheckpointError, UsageError, UserError
from cifar_scratch.kinds import user
from cifar_scratch.sweeps.ledger import JobOutcome, SweepFolder
from cifar_scratch.sweeps.local import exit_status, last_error
from cifar_scratch.sweeps.spec import Job, SweepSpec

#: How often a running job checks whether the sweep asked it to stop.
STOP_POLL_S = 1.0


def connect(address: str):
    """A ``distributed.Client`` for the scheduler at ``address``; a missing extra or an unreachable
    scheduler is a one-line error."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError('--executor dask: needs the dask extra (pip install -e ".[dask]")') from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(f"--address {address}: cannot reach a Dask scheduler ({exc})") from None


# --------------------------------------------------------------------------- run folders as archives
def pack_run(run_dir: Path) -> bytes:
    """A run folder as an uncompressed tar archive (checkpoints do not compress) rooted at its name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(run_dir, arcname=run_dir.name)
    return buffer.getvalue()


def unpack_run(archive: bytes, runs_dir: Path) -> Path:
    """Unpack a :func:`pack_run` archive into ``runs_dir``, replacing a folder of the same name only
    once the new one is complete (an interrupted unpack leaves the old folder in place)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
        for member in members:  # a run folder holds plain files and folders, nothing outside itself
            parts = Path(member.name).parts
            if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() or ".." in parts:
                raise CheckpointError(f"a job's run archive holds {member.name!r}, which is not part of a run folder")
        roots = {Path(member.name).parts[0] for member in members}
        if len(roots) != 1:
            raise CheckpointError(f"a job's run archive holds {len(roots)} folders, not one")
        name = roots.pop()
        incoming = runs_dir / f".{name}.incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        tar.extractall(incoming, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    target, replaced = runs_dir / name, runs_dir / f".{name}.replaced"
    if target.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        target.rename(replaced)
    (incoming / name).rename(target)
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.rmtree(replaced, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- on the worker
def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux kill the child when the worker process dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only makes the call

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG

    return preexec


def run_on_worker(payload: dict) -> dict:
    """Run one job on this Dask worker and return its run folder: the task every job is.

    ``payload``: ``version``, ``job``, ``overrides``, ``name``, ``base_yaml`` (the resolved base
    config), ``code`` (its user layers' sources by file name), ``resume_archive`` (an interrupted run folder, or None), ``threads`` (None: cores /
    worker threads), ``data_dir``, and the names of the sweep's ``stop`` and ``drain`` events.
    Returns ``exit_code`` (None: not started), ``log``, ``archive`` (None: no run folder), ``worker``, ``host``.
    """
    from distributed import Event, get_worker

    worker = get_worker()
    where = {"worker": worker.address, "host": socket.gethostname()}
    if payload["version"] != __version__:
        message = f"error: the worker runs cifar-scratch {__version__}, the sweep {payload['version']}; install the same on both"
        return {"exit_code": 2, "log": message + "\n", "archive": None, **where}
    stop, drain = Event(payload["stop"]), Event(payload["drain"])
    if stop.is_set() or drain.is_set():
        return {"exit_code": None, "log": "", "archive": None, **where}
    scratch = Path(tempfile.mkdtemp(prefix="cifar-scratch-job-", dir=worker.local_directory))
    try:
        runs_dir = scratch / "runs"
        threads = payload["threads"] or max(1, (os.cpu_count() or 1) // max(1, worker.state.nthreads))
        command = _worker_command(payload, scratch, runs_dir, threads)
        log = scratch / "job.log"
        with open(log, "w", encoding="utf-8") as handle:
            handle.write(f"=== {'resume' if payload['resume_archive'] else 'start'} on {where['host']} ({worker.address})\n")
            handle.flush()
            code = _run_until_stopped(command, scratch, handle, stop)
        folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] if runs_dir.is_dir() else []
        return {
            "exit_code": code,
            "log": log.read_text(encoding="utf-8", errors="replace"),
            "archive": pack_run(folders[0]) if folders else None,
            **where,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _worker_command(payload: dict, scratch: Path, runs_dir: Path, threads: int) -> list[str]:
    """The job's ``cifar-scratch train`` command on the worker, its files in ``scratch``."""
    command = [sys.executable, "-m", "cifar_scratch", "train"]
    if payload["resume_archive"] is not None:
        command += ["--resume", str(unpack_run(payload["resume_archive"], runs_dir))]
    else:
        base = scratch / "base.yaml"
        base.write_text(payload["base_yaml"], encoding="utf-8")
        for name, source in payload["code"].items():  # the user's layers, named code/<file> by the base
            (scratch / "code").mkdir(exist_ok=True)
            (scratch / "code" / name).write_text(source, encoding="utf-8")
        command += [str(base), *payload["overrides"], f"name={payload['name']}", "--runs-dir", str(runs_dir)]
    data_dir = resolve_data_dir(payload["data_dir"]).resolve()
    return command + ["--quiet", "--threads", str(threads), "--data-dir", str(data_dir)]


def _run_until_stopped(command: list[str], cwd: Path, log, stop) -> int:
    """Run ``command`` with its output in ``log``; when the sweep sets ``stop``, SIGTERM it (it checkpoints)
    and wait. -> its exit code. The child dies with the worker and never outlives this call."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent(),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        while process.poll() is None:
            if stop.wait(timeout=STOP_POLL_S):  # the sweep was stopped: checkpoint and come back
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


# --------------------------------------------------------------------------- on the submitting machine
def shipped_base(spec: SweepSpec) -> tuple[str, dict[str, str]]:
    """The resolved base config as YAML, with each user layer's file named ``code/<file name>``, and
    those files' sources by name: a job takes its code along, and a worker needs no shared files."""
    tree = load_config(spec.base).model_dump(mode="json")
    sources: dict[str, str] = {}
    shipped: dict[Path, str] = {}

    def ship(reference: str, path: str) -> str:
        if not user.is_file_reference(reference):
            return reference  # an importable module: installed on the workers like cifar-scratch itself
        file, _, name = reference.rpartition(":")
        file = Path(file)
        if file not in shipped:
            shipped[file] = file.name if file.name not in sources else f"{len(sources)}_{file.name}"
            sources[shipped[file]] = file.read_text(encoding="utf-8")
        return f"code/{shipped[file]}:{name}"

    user.map_references(tree, ship)
    return yaml.safe_dump(tree, sort_keys=False), sources


def run_dask(
    spec: SweepSpec,
    folder: SweepFolder,
    todo: list[tuple[Job, Path | None]],
    address: str,
    threads: int | None = None,
    data_dir: Path | None = None,
    fail_fast: bool = False,
    on_outcome: Callable[[JobOutcome], None] = lambda _: None,
    poll_s: float = 0.2,
    more: Callable[[], Job | None] | None = None,
) -> list[JobOutcome]:
    """Run ``todo`` on the Dask cluster at ``address``; the counterpart of :func:`cifar_scratch.sweeps.local.run_local`.

    Every job of ``todo`` is submitted at once and the scheduler spreads them over the workers; then
    ``more()`` is asked for a job whenever fewer jobs are out than the cluster has worker threads. Each finished
    job's run folder is unpacked into the sweep folder and its ledger line written, as for a local job.
    A signal sets the sweep's stop event: every running job checkpoints, comes back and is recorded as
    interrupted, and jobs not yet started do not start. ``fail_fast`` lets running jobs finish but
    starts no more after a failure.
    """
    base_yaml, code = shipped_base(spec)
    jobs = _DaskJobs(connect(address), address, folder, base_yaml, code, threads, data_dir)
    try:
        folder.logs_dir.mkdir(parents=True, exist_ok=True)
        for job, resume in todo:
            jobs.submit(job, resume)
        jobs.top_up(more)
        while jobs.pending:
            time.sleep(poll_s)
            jobs.collect_done(on_outcome, fail_fast)
            jobs.top_up(more)
    except signals.Interrupted as exc:
        stopped = len(jobs.pending)
        jobs.stop.set()
        try:
            with signals.deferred():  # the first signal: wait for every running job's checkpoint
                while jobs.pending:
                    time.sleep(poll_s)
                    jobs.collect_done(on_outcome, fail_fast)
        except signals.Interrupted:  # a second one: give up on them; they run again from scratch next time
            jobs.abandon()
        exc.hint = (
            f"{stopped} submitted job(s) stopped and recorded in {folder.ledger_path}; "
            "run the same sweep command again to resume them and run the rest"
        )
        raise
    finally:
        jobs.client.close()
    return jobs.outcomes


class _DaskJobs:
    """A sweep's jobs out on a Dask cluster: submitted, collected, and recorded in the ledger.

    ``stop`` (every job checkpoints and comes back) and ``drain`` (no job starts any more) are
    cluster-wide events named for this sweep."""

    def __init__(
        self,
        client,
        address: str,
        folder: SweepFolder,
        base_yaml: str,
        code: dict[str, str],
        threads: int | None,
        data_dir: Path | None,
    ):
        from distributed import Event

        self.client, self.address, self.folder, self.base_yaml, self.code = client, address, folder, base_yaml, code
        self.threads, self.data_dir = threads, data_dir
        self.token = uuid.uuid4().hex
        self.stop = Event(f"cifar-scratch-stop-{self.token}", client=client)
        self.drain = Event(f"cifar-scratch-drain-{self.token}", client=client)
        self.pending: dict = {}  # future -> (job, when it was submitted)
        self.outcomes: list[JobOutcome] = []
        self.draining = False
        self.more_left = True

    def submit(self, job: Job, resume: Path | None) -> None:
        folder = self.folder
        payload = {
            "version": __version__,
            "job": job.index,
            "overrides": job.overrides,
            "name": folder.job_name(job),
            "base_yaml": self.base_yaml,
            "code": self.code,
            "resume_archive": pack_run(resume) if resume is not None else None,
            "threads": self.threads,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
            "stop": self.stop.name,
            "drain": self.drain.name,
        }
        key = f"cifar-scratch-{folder.job_name(job)}-{self.token[:8]}"
        self.pending[self.client.submit(run_on_worker, payload, key=key, pure=False)] = (job, time.perf_counter())
        folder.record(
            {
                "job": job.index,
                "status": "submitted",
                "params": job.params,
                "overrides": job.overrides,
                "resumed": resume is not None,
                "address": self.address,
            }
        )

    def top_up(self, more: Callable[[], Job | None] | None) -> None:
        """Submit jobs from ``more()`` while fewer are out than the cluster has worker threads."""
        if more is None or not self.more_left or self.draining:
            return
        slots = max(1, sum(self.client.nthreads().values()))  # a scheduler round trip: not once more() is spent
        while len(self.pending) < slots:
            job = more()
            if job is None:
                self.more_left = False
                return
            self.submit(job, None)

    def collect_done(self, on_outcome: Callable[[JobOutcome], None], fail_fast: bool) -> None:
        """Record every finished job; after a failure with ``fail_fast``, let no more start."""
        for future in [f for f in self.pending if f.done()]:
            job, started = self.pending.pop(future)
            outcome = self._collect(future, job, started)
            if outcome is not None:
                on_outcome(outcome)
                if outcome.status == "failed" and fail_fast:
                    self.draining = True
                    self.drain.set()

    def _collect(self, future, job: Job, started: float) -> JobOutcome | None:
        folder, seconds = self.folder, time.perf_counter() - started
        if future.status == "error" or future.cancelled():
            error = "cancelled" if future.cancelled() else f"{type(future.exception()).__name__}: {future.exception()}"
            outcome = JobOutcome(job, "failed", None, None, seconds, f"error: the Dask task failed ({error})"[:500])
            folder.record_outcome(outcome, executor="dask")
            self.outcomes.append(outcome)
            return outcome
        result = future.result()
        if result["exit_code"] is None:  # never started: the sweep stopped first
            folder.record({"job": job.index, "status": "cancelled", "overrides": job.overrides})
            return None
        with open(folder.logs_dir / f"job-{job.index:03d}.log", "a", encoding="utf-8") as handle:
            handle.write(result["log"])
        run_dir = unpack_run(result["archive"], folder.runs_dir) if result["archive"] else None
        status = exit_status(result["exit_code"])
        error = None if status == "completed" else last_error(result["log"])
        outcome = JobOutcome(job, status, run_dir, result["exit_code"], seconds, error)
        folder.record_outcome(outcome, executor="dask", worker=result["worker"], host=result["host"])
        self.outcomes.append(outcome)
        return outcome

    def abandon(self) -> None:
        """Cancel every job still out and record it as interrupted without a run folder."""
        for future, (job, _) in self.pending.items():
            future.cancel()
            self.folder.record({"job": job.index, "status": "interrupted", "overrides": job.overrides, "run_dir": None})
        self.pending.clear()
