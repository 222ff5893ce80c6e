"""Running a sweep's jobs on this machine: each a ``cifar-scratch train`` child process in its own
session, N at a time; Ctrl-C or SIGTERM passes one SIGTERM to each running job, which checkpoints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cifar_scratch import signals
from cifar_scratch.sweeps.ledger import JobOutcome, SweepFolder
from cifar_scratch.sweeps.spec import Job, SweepSpec


# --------------------------------------------------------------------------- running jobs
class RunningJob:
    """A job's child process, its log, whether it resumed a run, and when it started."""

    def __init__(self, job: Job, process: subprocess.Popen, log: Path, resumed: bool, started: float):
        self.job, self.process, self.log, self.resumed, self.started = job, process, log, resumed, started


def job_command(
    spec: SweepSpec, folder: SweepFolder, job: Job, resume: Path | None, threads: int, data_dir: Path | None
) -> list[str]:
    """The ``cifar-scratch train`` command line of a job (the CLI of this same installation)."""
    command = [sys.executable, "-m", "cifar_scratch", "train"]
    if resume is not None:
        command += ["--resume", str(resume)]
    else:
        command += [spec.base, *job.overrides, f"name={folder.job_name(job)}", "--runs-dir", str(folder.runs_dir)]
    command += ["--quiet", "--threads", str(threads)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


def run_local(
    spec: SweepSpec,
    folder: SweepFolder,
    todo: list[tuple[Job, Path | None]],
    workers: int,
    threads: int,
    data_dir: Path | None = None,
    fail_fast: bool = False,
    on_outcome: Callable[[JobOutcome], None] = lambda _: None,
    poll_s: float = 0.2,
    more: Callable[[], Job | None] | None = None,
) -> list[JobOutcome]:
    """Run ``todo`` on this machine, ``workers`` jobs at a time, each with ``threads`` threads; then
    the jobs ``more()`` gives when a place is free, until it gives None (a bayes search).

    Each job is a child process in its own session, so a Ctrl-C at the terminal reaches only the
    sweep, which passes one SIGTERM to every running job: each saves a checkpoint and stops, the
    ledger records it as interrupted, and the sweep re-raises the interruption (exit 130/143).
    A second signal kills the jobs at once; they resume from their previous checkpoint.
    """
    jobs = _LocalJobs(spec, folder, threads, data_dir)
    queue = list(todo)
    stop_starting = False
    try:
        while True:
            while len(jobs.running) < workers and not stop_starting:
                if queue:
                    jobs.start(*queue.pop(0))
                elif more is not None and (job := more()) is not None:
                    jobs.start(job, None)
                else:
                    break
            if not jobs.running:
                break
            time.sleep(poll_s)
            for outcome in jobs.collect():
                on_outcome(outcome)
                if outcome.status == "failed" and fail_fast:
                    stop_starting = True
                    queue.clear()
    except signals.Interrupted as exc:
        stopped = len(jobs.running)
        _stop(jobs.running, jobs.finish)
        exc.hint = (
            f"{stopped} running job(s) stopped and recorded as interrupted in {folder.ledger_path}; "
            "run the same sweep command again to resume them and run the rest"
        )
        raise
    return jobs.outcomes


class _LocalJobs:
    """The child processes of a sweep on this machine: started, polled, and recorded in the ledger."""

    def __init__(self, spec: SweepSpec, folder: SweepFolder, threads: int, data_dir: Path | None):
        self.spec, self.folder, self.threads, self.data_dir = spec, folder, threads, data_dir
        self.running: list[RunningJob] = []
        self.outcomes: list[JobOutcome] = []

    def start(self, job: Job, resume: Path | None) -> None:
        folder = self.folder
        log = folder.logs_dir / f"job-{job.index:03d}.log"
        folder.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"\n=== {'resume' if resume else 'start'} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
            handle.flush()
            process = subprocess.Popen(
                job_command(self.spec, folder, job, resume, self.threads, self.data_dir),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.running.append(RunningJob(job, process, log, resume is not None, time.perf_counter()))  # before a signal can strike
        folder.record(
            {
                "job": job.index,
                "status": "started",
                "params": job.params,
                "overrides": job.overrides,
                "resumed": resume is not None,
                "pid": process.pid,
            }
        )

    def collect(self) -> list[JobOutcome]:
        """The outcomes of the jobs that have ended since the last call."""
        ended = []
        for item in list(self.running):
            code = item.process.poll()
            if code is not None:
                self.running.remove(item)
                ended.append(self.finish(item, code))
        return ended

    def finish(self, item: RunningJob, code: int) -> JobOutcome:
        runs = self.folder.job_runs(item.job)
        status = exit_status(code)
        error = None if status == "completed" else last_error(item.log.read_text(encoding="utf-8", errors="replace"))
        outcome = JobOutcome(item.job, status, runs[0] if runs else None, code, time.perf_counter() - item.started, error)
        self.folder.record_outcome(outcome)
        self.outcomes.append(outcome)
        return outcome


def _stop(running: list[RunningJob], finish: Callable[[RunningJob, int], JobOutcome]) -> None:
    """Pass SIGTERM to every running job and wait for its checkpoint; a second signal kills them."""
    for item in running:
        _signal(item.process, signal.SIGTERM)
    try:
        with signals.deferred():
            for item in list(running):
                code = item.process.wait()
                running.remove(item)
                finish(item, code)
    except signals.Interrupted:
        for item in running:
            _signal(item.process, signal.SIGKILL)
        for item in list(running):
            finish(item, item.process.wait())
        running.clear()


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def exit_status(code: int | None) -> str:
    """A job's ledger status from its exit code: a signal (Ctrl-C, SIGTERM, a kill) means interrupted."""
    if code == 0:
        return "completed"
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT):
        return "interrupted"
    return "failed"


def last_error(log_text: str) -> str | None:
    """A job's last ``error:`` line (the CLI's one-line message), else its last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors[-1] if errors else lines[-1] if lines else "")[:500] or None
