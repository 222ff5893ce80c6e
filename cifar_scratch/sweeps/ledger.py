"""The sweep folder and its ledger: ``spec.yaml``, ``jobs.jsonl`` (one line per job event), ``results.csv``,
``logs/`` and the jobs' run folders under ``runs/``; which jobs are done, which to resume; one sweep
process at a time per folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout
from pydantic import ValidationError

from cifar_scratch.errors import UsageError, UserError
from cifar_scratch.fileio import atomic_write_text
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.runs.index import read_json, run_status
from cifar_scratch.sweeps.spec import RESULT_COLUMNS, Job, SweepSpec, expand_jobs, metric_value


@dataclass
class JobOutcome:
    job: Job
    status: str  # completed | failed | interrupted | skipped
    run_dir: Path | None
    exit_code: int | None
    seconds: float
    error: str | None = None


class SweepFolder:
    """A sweep's folder: its spec, ledger, results and job runs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.spec_path = self.path / "spec.yaml"
        self.ledger_path = self.path / "jobs.jsonl"
        self.results_path = self.path / "results.csv"
        self.runs_dir = self.path / "runs"
        self.logs_dir = self.path / "logs"

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        """Whether ``path`` is a sweep folder (it has a spec and a ledger), not a run or runs folder."""
        return self.spec_path.is_file() and self.ledger_path.is_file()

    def job_name(self, job: Job) -> str:
        # A config name (letters, digits, _ . -): the run folder is <stamp>_<this>.
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).lstrip("-_.")[:90]
        return f"{safe}-{job.index:03d}" if safe else f"job-{job.index:03d}"

    def prepare(self, spec: SweepSpec) -> None:
        """Create the folder with the spec, or check that an existing one holds the same jobs."""
        if self.spec_path.exists():
            try:
                stored = SweepSpec.model_validate(yaml.safe_load(self.spec_path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError):
                raise UsageError(f"{self.spec_path}: damaged; delete the sweep folder or pass --out NEW_FOLDER") from None
            if spec.method == "bayes":  # the same search; a larger run_cap lets it go on
                differs = stored.model_dump(exclude={"run_cap"}) != spec.model_dump(exclude={"run_cap"})
            else:
                differs = stored.method == "bayes" or [j.params for j in expand_jobs(stored)] != [
                    j.params for j in expand_jobs(spec)
                ]
            if differs or stored.base != spec.base:
                raise UsageError(
                    f"{self.path}: holds a different sweep (other base or jobs); pass --out NEW_FOLDER, or delete it"
                )
            return
        for folder in (self.path, self.runs_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.spec_path, yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))

    def lock(self) -> FileLock:
        return FileLock(self.path / ".lock")

    def record(self, entry: dict) -> None:
        """Append one event to the ledger (one JSON line, flushed and synced)."""
        with open(self.ledger_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**entry, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def record_outcome(self, outcome: JobOutcome, **extra: Any) -> None:
        """The ledger line of a job that ended (``extra``: where it ran, for a Dask job)."""
        self.record(
            {
                "job": outcome.job.index,
                "status": outcome.status,
                "overrides": outcome.job.overrides,
                "run_dir": str(outcome.run_dir) if outcome.run_dir else None,
                "exit_code": outcome.exit_code,
                "time_s": round(outcome.seconds, 3),
                "error": outcome.error,
                **extra,
            }
        )

    def jobs(self, spec: SweepSpec) -> list[Job]:
        """The sweep's jobs: all of them for grid and random, those started so far for bayes (each
        job's parameters are in its ledger lines)."""
        if spec.method != "bayes":
            return expand_jobs(spec)
        params = {index: entry["params"] for index, entry in self._entries() if isinstance(entry.get("params"), dict)}
        return [Job(index, params[index]) for index in sorted(params)]

    def ledger(self) -> dict[int, dict]:
        """The last event of every job that has one. A torn last line (the sweep killed mid-write) is skipped."""
        return dict(self._entries())

    def _entries(self) -> list[tuple[int, dict]]:
        """(job, event) for every ledger line in order; a torn last line is skipped."""
        if not self.ledger_path.exists():
            return []
        entries = []
        for line in self.ledger_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("job"), int):
                entries.append((entry["job"], entry))
        return entries

    def job_runs(self, job: Job) -> list[Path]:
        """The job's run folders, newest first (a job started again after a failure has several)."""
        if not self.runs_dir.is_dir():
            return []
        suffix = f"_{self.job_name(job)}"
        found = [p for p in self.runs_dir.iterdir() if p.is_dir() and (p.name.endswith(suffix) or f"{suffix}-" in p.name)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def results(self, spec: SweepSpec, jobs: list[Job]) -> list[dict]:
        """One row per job from the ledger and the job's metrics.json: job, status, swept values,
        the sweep metric, RESULT_COLUMNS, run folder."""
        ledger = self.ledger()
        rows = []
        for job in jobs:
            entry = ledger.get(job.index, {})
            run_dir = entry.get("run_dir")
            metrics = read_json(RunFolder(run_dir).metrics) if run_dir else {}
            row = {"job": job.index, "status": entry.get("status", "pending"), **job.params}
            row[spec.metric.name] = metric_value(metrics, spec.metric.name)
            for column in RESULT_COLUMNS:
                row.setdefault(column, metrics.get(column))
            row["run_dir"] = run_dir or ""
            rows.append(row)
        return rows

    def metric_by_parameter(self, spec: SweepSpec) -> list[tuple[str, str, list, list]]:
        """One panel per swept key that took more than one value: (key, metric, values, metric values)
        over the jobs with a result, for :func:`cifar_scratch.reports.plot_comparison`."""
        scored = [row for row in self.results(spec, self.jobs(spec)) if row.get(spec.metric.name) is not None]
        return [
            (key, spec.metric.name, [row[key] for row in scored], [row[spec.metric.name] for row in scored])
            for key in spec.parameters
            if len({json.dumps(row[key], default=str) for row in scored}) > 1  # a fixed value says nothing
        ]

    def write_results(self, spec: SweepSpec, jobs: list[Job]) -> list[dict]:
        """Rewrite results.csv from :meth:`results`; -> the rows."""
        rows = self.results(spec, jobs)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["job"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        atomic_write_text(self.results_path, buffer.getvalue())
        return rows


def plan(folder: SweepFolder, jobs: list[Job], retry_failed: bool) -> tuple[list[tuple[Job, Path | None]], list[Job]]:
    """-> (jobs to run, each with the run folder to resume or None to start afresh; jobs already done)."""
    ledger = folder.ledger()
    todo, done = [], []
    for job in jobs:
        status = ledger.get(job.index, {}).get("status")
        if status == "completed" or (status == "failed" and not retry_failed):
            done.append(job)
            continue
        resume = None
        if status is not None:  # started, submitted (Dask), interrupted or cancelled: look for its folder
            runs = folder.job_runs(job)
            if runs and run_status(runs[0]) == "completed":  # finished, but the sweep died before recording it
                folder.record({"job": job.index, "status": "completed", "overrides": job.overrides, "run_dir": str(runs[0])})
                done.append(job)
                continue
            for run_dir in runs:
                if RunFolder(run_dir).last.exists() and run_status(run_dir) != "failed":
                    resume = run_dir
                    break
        todo.append((job, resume))
    return todo, done


def acquire(folder: SweepFolder) -> FileLock:
    lock = folder.lock()
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise UserError(f"{folder.path}: another sweep process is running this sweep right now") from None
    return lock
