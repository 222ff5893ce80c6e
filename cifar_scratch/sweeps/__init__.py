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
job from the results so far (:mod:`.bayes`), and the ledger records every job's parameters.

The modules: :mod:`.spec` (the spec and its jobs), :mod:`.ledger` (the sweep folder), :mod:`.local`
(jobs on this machine), :mod:`.on_dask` (jobs on a Dask cluster), :mod:`.bayes` (Optuna's search);
:func:`run_sweep` runs a spec from start to end, and the CLI only prints what it reports.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cifar_scratch import runtime
from cifar_scratch.config import load_config
from cifar_scratch.errors import UsageError
from cifar_scratch.sweeps.ledger import JobOutcome, SweepFolder, acquire, plan
from cifar_scratch.sweeps.local import run_local
from cifar_scratch.sweeps.spec import Job, SweepSpec, best_row, check_jobs, default_folder, expand_jobs, load_spec, probe_jobs


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep is about to do, for the report before its first job."""

    folder: Path
    spec: SweepSpec
    jobs: int  # known so far (a bayes search adds more)
    done: int
    todo: int
    resumed: int
    where: str  # "2 at a time, 1 thread each" or "on the Dask cluster at ..."


@dataclass
class SweepResult:
    folder: SweepFolder
    spec: SweepSpec
    outcomes: list[JobOutcome]
    rows: list[dict]  # results.csv

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def best(self) -> dict | None:
        return best_row(self.spec, self.rows)


def run_sweep(
    spec_path: Path,
    jobs: int = 1,
    address: str | None = None,
    out: Path | None = None,
    runs_dir: Path | None = None,
    threads: int | None = None,
    fail_fast: bool = False,
    retry_failed: bool = False,
    data_dir: Path | None = None,
    on_start: Callable[[SweepPlan], None] = lambda plan: None,
    on_outcome: Callable[[JobOutcome], None] = lambda outcome: None,
) -> SweepResult:
    """Run (or go on with) the sweep of ``spec_path``: here with ``jobs`` at a time, or on the Dask
    cluster at ``address``. Every job's config is validated before the first starts."""
    on_dask = address is not None
    if on_dask:
        _check_dask(jobs)
    spec = load_spec(spec_path)
    search = None
    if spec.method == "bayes":
        from cifar_scratch.sweeps.bayes import BayesSearch, require_optuna

        require_optuna()
    check_jobs(spec, probe_jobs(spec))
    # A base config that logs to TensorBoard gives the sweep an HParams view: one session per job.
    tensorboard = load_config(Path(spec.base)).output.tensorboard
    if tensorboard:
        from cifar_scratch.training.tensorboard import require_tensorboardx

        require_tensorboardx(f"base ({spec.base}): output.tensorboard")
    folder = SweepFolder(out or default_folder(spec_path, spec, runs_dir or Path("runs")))
    folder.prepare(spec)
    lock = acquire(folder)
    try:
        if spec.method == "bayes":
            search = BayesSearch(spec, folder)
        all_jobs = folder.jobs(spec)
        todo, done = plan(folder, all_jobs, retry_failed)
        per_job = threads or max(1, runtime.cores() // jobs)
        if on_dask:
            where = f"on the Dask cluster at {address}, " + (
                f"{threads} threads each" if threads else "cores / worker threads each"
            )
        else:
            where = f"{jobs} at a time, {per_job} thread{'s' * (per_job > 1)} each"
        resumed = sum(resume is not None for _, resume in todo)
        on_start(SweepPlan(folder.path, spec, len(all_jobs), len(done), len(todo), resumed, where))

        def report(outcome: JobOutcome) -> None:
            on_outcome(outcome)
            if search is not None:
                search.tell(outcome)
            folder.write_results(spec, folder.jobs(spec))

        more = search and search.ask
        try:
            if on_dask:
                from cifar_scratch.sweeps.on_dask import run_dask

                outcomes = run_dask(spec, folder, todo, address, threads, data_dir, fail_fast, report, more=more)
            else:
                outcomes = run_local(spec, folder, todo, jobs, per_job, data_dir, fail_fast, report, more=more)
        finally:
            rows = folder.write_results(spec, folder.jobs(spec))
            if tensorboard:
                from cifar_scratch.training.tensorboard import write_hparams

                write_hparams(folder.path / "tensorboard", rows, list(spec.parameters), spec.metric.name)
    finally:
        lock.release()
    return SweepResult(folder, spec, outcomes, rows)


def _check_dask(jobs: int) -> None:
    if importlib.util.find_spec("distributed") is None:
        raise UsageError('--executor dask: needs the dask extra (pip install -e ".[dask]")')
    if jobs != 1:
        raise UsageError("--jobs: with --executor dask the workers decide how many jobs run at once (one per worker thread)")


__all__ = [
    "Job",
    "JobOutcome",
    "SweepFolder",
    "SweepPlan",
    "SweepResult",
    "SweepSpec",
    "check_jobs",
    "expand_jobs",
    "load_spec",
    "probe_jobs",
    "run_sweep",
]
