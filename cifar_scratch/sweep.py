"""Sweeps: many ``train`` runs of one base config with dotted overrides, and a ledger of what ran.

The spec follows the W&B sweep format::

    base: configs/mlp10.yaml      # relative to the current folder, as on the command line
    method: grid                  # grid | random | bayes (the optuna extra)
    run_cap: 40                   # random, bayes: how many jobs
    seed: 0                       # random, bayes: the sampling seed
    metric: {name: val_accuracy, goal: maximize}
    parameters:
      optimizer.lr: {values: [0.1, 0.03, 0.01]}
      optimizer.l2: {distribution: log_uniform, min: 1.0e-5, max: 1.0e-2}

The sweep folder (``<runs_dir>/sweeps/<name>`` unless ``--out``) holds ``spec.yaml`` (the spec with
its base as an absolute path), ``jobs.jsonl`` (one line per job event: started, completed, failed,
interrupted), ``results.csv`` (one row per job), ``runs/`` (each job's ordinary run folder, named
``<stamp>_<sweep>-<job>``; its ``run.json`` lists the job's overrides) and ``logs/`` (each job's output).

Every job is the same ``cifar-scratch train`` command a user would type, run as a child process, so
a job is validated, checkpointed and resumed exactly as a hand-started run. Running a sweep again
skips finished jobs, resumes interrupted ones from their last checkpoint, and (with
``retry_failed``) starts failed ones afresh. Jobs of a grid or random sweep are fixed by its spec:
the same spec always gives the same jobs, including random samples. A bayes sweep chooses each new
job from the results so far (``sweep_bayes``), and the ledger records every job's parameters.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import yaml
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cifar_scratch import signals
from cifar_scratch.config import ConfigError, build_config, format_error, read_yaml_mapping
from cifar_scratch.errors import UsageError, UserError
from cifar_scratch.fileio import atomic_write_text
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.runs.index import read_json, run_status

#: Metrics a sweep can rank jobs by: keys of a run's metrics.json.
METRICS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "test_accuracy_tta",
    "test_loss_tta",
    "test_macro_f1",
    "test_macro_f1_tta",
    "train_accuracy",
    "train_loss",
    "best_value",
)
#: Columns of results.csv after the swept parameters.
RESULT_COLUMNS = ("best_epoch", "val_accuracy", "test_accuracy", "test_accuracy_tta", "train_time_s")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parameter(_Spec):
    values: Optional[list[Any]] = Field(None, min_length=1)
    distribution: Optional[Literal["uniform", "log_uniform", "int_uniform"]] = None
    min: Optional[float] = None
    max: Optional[float] = None

    @model_validator(mode="after")
    def _one_kind(self) -> Parameter:
        if (self.values is None) == (self.distribution is None):
            raise ValueError("give either values: [...] or distribution: with min and max")
        if self.distribution is not None:
            if self.min is None or self.max is None:
                raise ValueError(f"{self.distribution} needs min and max")
            if not self.min < self.max:
                raise ValueError(f"min must be below max (got {self.min:g} >= {self.max:g})")
            if self.distribution == "log_uniform" and self.min <= 0:
                raise ValueError(f"log_uniform needs min > 0 (got {self.min:g})")
        elif self.min is not None or self.max is not None:
            raise ValueError("min and max go with a distribution, not with values")
        return self

    @property
    def bounds(self) -> tuple[float, float] | tuple[int, int]:
        """A distribution's (low, high), both included; int_uniform's rounded inwards to integers."""
        if self.distribution == "int_uniform":
            return math.ceil(self.min), math.floor(self.max)
        return float(self.min), float(self.max)

    def sample(self, rng: np.random.Generator) -> Any:
        if self.values is not None:
            return self.values[int(rng.integers(len(self.values)))]
        if self.distribution == "uniform":
            return float(rng.uniform(self.min, self.max))
        if self.distribution == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.min), math.log(self.max))))
        low, high = self.bounds
        return int(rng.integers(low, high + 1))


class Metric(_Spec):
    name: Literal[METRICS] = "val_accuracy"
    goal: Literal["maximize", "minimize"] = "maximize"


class SweepSpec(_Spec):
    base: str = Field(min_length=1)
    name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    method: Literal["grid", "random", "bayes"] = "grid"
    run_cap: Optional[int] = Field(None, ge=1, le=100_000)
    seed: int = 0
    metric: Metric = Metric()
    parameters: dict[str, Parameter] = Field(min_length=1)

    @model_validator(mode="after")
    def _method_needs(self) -> SweepSpec:
        if self.method == "grid":
            sampled = [key for key, p in self.parameters.items() if p.values is None]
            if sampled:
                raise ValueError(f"parameters: grid needs values for every parameter ({', '.join(sampled)} has a distribution)")
        elif self.run_cap is None:
            raise ValueError(f"run_cap: {self.method} search needs run_cap (how many jobs)")
        return self


@dataclass(frozen=True)
class Job:
    index: int
    params: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={_yaml_value(value)}" for key, value in self.params.items()]


def _yaml_value(value: Any) -> str:
    """A value as it is written after ``key=`` on the command line (parsed back as YAML)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()


def load_spec(path: Path) -> SweepSpec:
    """The spec file, validated, with ``base`` made absolute (relative to the current folder, as a
    config path on the command line is)."""
    tree = read_yaml_mapping(Path(path))
    try:
        spec = SweepSpec.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([format_error(err, tree, SweepSpec) for err in exc.errors()[:20]]) from None
    return spec.model_copy(update={"base": str(Path(spec.base).expanduser().resolve())})


def expand_jobs(spec: SweepSpec) -> list[Job]:
    """Grid: every combination, the last parameter varying fastest. Random: ``run_cap`` draws from
    a generator seeded with ``spec.seed``, so the same spec always gives the same jobs. Bayes jobs
    are not known in advance (see :meth:`SweepFolder.jobs`)."""
    if spec.method == "bayes":
        raise ValueError("a bayes sweep's jobs come from its ledger, not from its spec")
    keys = list(spec.parameters)
    if spec.method == "grid":
        combos = itertools.product(*(spec.parameters[key].values for key in keys))
        return [Job(i, dict(zip(keys, combo))) for i, combo in enumerate(combos)]
    rng = np.random.default_rng(spec.seed)
    return [Job(i, {key: spec.parameters[key].sample(rng) for key in keys}) for i in range(spec.run_cap)]


# --------------------------------------------------------------------------- the sweep folder
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

    def write_results(self, spec: SweepSpec, jobs: list[Job]) -> list[dict]:
        """Rewrite results.csv from :meth:`results`; -> the rows."""
        rows = self.results(spec, jobs)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["job"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        atomic_write_text(self.results_path, buffer.getvalue())
        return rows


def metric_value(metrics: dict, name: str) -> float | None:
    """A job's value of the sweep metric; ``val_*`` falls back to the best monitored value when the
    run monitored that metric (a run without a validation split reports no val_* of its own)."""
    value = metrics.get(name)
    if value is None and metrics.get("monitor") == name:
        value = metrics.get("best_value")
    return float(value) if isinstance(value, (int, float)) else None


def default_folder(spec_path: Path, spec: SweepSpec, runs_dir: Path) -> Path:
    return Path(runs_dir) / "sweeps" / (spec.name or Path(spec_path).stem)


def probe_jobs(spec: SweepSpec) -> list[Job]:
    """Jobs to validate before a sweep starts: for grid and random every job; for bayes one job per
    value or bound of each parameter (the others at their first value or minimum)."""
    if spec.method != "bayes":
        return expand_jobs(spec)

    def choices(p: Parameter) -> list[Any]:
        return list(p.values) if p.values is not None else list(p.bounds)

    first = {key: choices(p)[0] for key, p in spec.parameters.items()}
    probes = [dict(first)]
    for key, p in spec.parameters.items():
        probes += [{**first, key: value} for value in choices(p)[1:]]
    return [Job(i, params) for i, params in enumerate(probes)]


def check_jobs(spec: SweepSpec, jobs: list[Job]) -> None:
    """Validate every job's config before any starts: a typo in a key fails the sweep, not job 7.
    Errors name the swept key as ``parameters.<key>`` and problems of the base config as ``base``."""
    base = Path(spec.base)
    tree = read_yaml_mapping(base)
    try:
        build_config(json.loads(json.dumps(tree)), [], base_dir=base.resolve().parent)
    except ConfigError as exc:
        raise ConfigError([f"base ({base}): {line}" for line in exc.lines]) from None
    for job in jobs:
        try:
            build_config(json.loads(json.dumps(tree)), job.overrides, base_dir=base.resolve().parent)
        except ConfigError as exc:
            raise ConfigError([f"parameters.{line} (job {job.index}: {' '.join(job.overrides)})" for line in exc.lines]) from None


# --------------------------------------------------------------------------- running jobs
@dataclass
class JobOutcome:
    job: Job
    status: str  # completed | failed | interrupted | skipped
    run_dir: Path | None
    exit_code: int | None
    seconds: float
    error: str | None = None


class _Running:
    def __init__(self, job: Job, process: subprocess.Popen, log: Path, resumed: bool, started: float):
        self.job, self.process, self.log, self.resumed, self.started = job, process, log, resumed, started


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
    queue = list(todo)
    running: list[_Running] = []
    outcomes: list[JobOutcome] = []
    stop_starting = False

    def start(job: Job, resume: Path | None) -> None:
        log = folder.logs_dir / f"job-{job.index:03d}.log"
        folder.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"\n=== {'resume' if resume else 'start'} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
            handle.flush()
            process = subprocess.Popen(
                job_command(spec, folder, job, resume, threads, data_dir),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        running.append(_Running(job, process, log, resume is not None, time.perf_counter()))  # before a signal can strike
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

    def finish(item: _Running, code: int) -> JobOutcome:
        runs = folder.job_runs(item.job)
        status = exit_status(code)
        error = None if status == "completed" else last_error(item.log.read_text(encoding="utf-8", errors="replace"))
        outcome = JobOutcome(item.job, status, runs[0] if runs else None, code, time.perf_counter() - item.started, error)
        folder.record_outcome(outcome)
        outcomes.append(outcome)
        return outcome

    try:
        while True:
            while len(running) < workers and not stop_starting:
                if queue:
                    start(*queue.pop(0))
                elif more is not None and (job := more()) is not None:
                    start(job, None)
                else:
                    break
            if not running:
                break
            time.sleep(poll_s)
            for item in list(running):
                code = item.process.poll()
                if code is None:
                    continue
                running.remove(item)
                outcome = finish(item, code)
                on_outcome(outcome)
                if outcome.status == "failed" and fail_fast:
                    stop_starting = True
                    queue.clear()
    except signals.Interrupted as exc:
        stopped = len(running)
        _stop(running, finish)
        exc.hint = (
            f"{stopped} running job(s) stopped and recorded as interrupted in {folder.ledger_path}; "
            "run the same sweep command again to resume them and run the rest"
        )
        raise
    return outcomes


def _stop(running: list[_Running], finish: Callable[[_Running, int], JobOutcome]) -> None:
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


def acquire(folder: SweepFolder) -> FileLock:
    lock = folder.lock()
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise UserError(f"{folder.path}: another sweep process is running this sweep right now") from None
    return lock


def best_row(spec: SweepSpec, rows: list[dict]) -> dict | None:
    scored = [row for row in rows if row.get(spec.metric.name) is not None]
    if not scored:
        return None
    pick = max if spec.metric.goal == "maximize" else min
    return pick(scored, key=lambda row: row[spec.metric.name])
