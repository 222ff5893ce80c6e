"""``cifar-scratch sweep``, ``runs`` and ``compare``: many runs, the runs so far, and runs side by side."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from cifar_scratch.cli import console
from cifar_scratch.cli.app import command
from cifar_scratch.cli.options import DATA_DIR_OPTION
from cifar_scratch.errors import UsageError


class Executor(str, Enum):
    local = "local"
    dask = "dask"


@command
def sweep(
    spec_path: Path = typer.Argument(..., metavar="SWEEP.yaml", help="Sweep spec: base config, method, parameters."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Jobs at once on this machine."),
    executor: Executor = typer.Option(
        Executor.local, "--executor", help="Where jobs run: this machine, or a Dask cluster (the dask extra)."
    ),
    address: Optional[str] = typer.Option(
        None, "--address", show_default=False, help="The Dask scheduler, e.g. tcp://10.0.0.1:8786 (--executor dask)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", show_default=False, help="Sweep folder. [default: <runs_dir>/sweeps/<spec name>]"
    ),
    runs_dir: Optional[Path] = typer.Option(
        None, "--runs-dir", show_default=False, help="Where the default sweep folder goes. [default: ./runs]"
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, show_default=False, help="Threads per job. [default: cores / jobs, at least 1]"
    ),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop starting jobs after the first failure."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed jobs of an earlier attempt again."),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
) -> None:
    """Run every job of a sweep as a train run; again, it skips finished jobs and resumes interrupted ones."""
    from cifar_scratch.sweeps import run_sweep

    if executor is Executor.dask and not address:
        raise UsageError("--executor dask: give the scheduler with --address tcp://HOST:8786")
    if address and executor is not Executor.dask:
        raise UsageError("--address: only used with --executor dask")
    result = run_sweep(
        spec_path,
        jobs,
        address,
        out,
        runs_dir,
        threads,
        fail_fast,
        retry_failed,
        data_dir,
        on_start=lambda plan: typer.echo(console.sweep_plan(plan)),
        on_outcome=lambda outcome: typer.echo(console.sweep_outcome(outcome)),
    )
    best = result.best
    if best is not None:
        params = " ".join(f"{key}={best[key]}" for key in result.spec.parameters)
        typer.echo(f"best {result.spec.metric.name}: {best[result.spec.metric.name]:.4f} (job {best['job']}: {params})")
    typer.echo(f"results: {result.folder.results_path}")
    if result.failed:
        typer.echo(f"error: {len(result.failed)} job(s) failed; see {result.folder.logs_dir}", err=True)
        raise typer.Exit(1)


@command
def runs(
    root: Path = typer.Argument(Path("runs"), help="A runs folder, a sweep folder or one run folder."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many runs."),
) -> None:
    """Past runs, newest first: status, best monitored metric, epochs, age."""
    from cifar_scratch.runs.index import find_runs, summarize

    if not root.exists():
        raise UsageError(f"{root}: no such folder")
    summaries = sorted((summarize(path) for path in find_runs(root)), key=lambda s: (s.started or 0, s.path.name), reverse=True)
    if not summaries:
        typer.echo(f"no runs under {root}")
        return
    typer.echo(console.runs_table(summaries[:limit], time.time()))
    if len(summaries) > limit:
        typer.echo(f"({len(summaries) - limit} older runs not shown; --limit N)")


class TableFormat(str, Enum):
    table = "table"
    csv = "csv"
    markdown = "markdown"
    json = "json"


@command
def compare(
    paths: list[Path] = typer.Argument(..., help="Run folders, sweep folders or runs folders."),
    sort: Optional[str] = typer.Option(
        None, "--sort", help="Column to sort by, best first (accuracies descending, others ascending)."
    ),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", help="Output format."),
    group_seeds: bool = typer.Option(True, "--group-seeds/--no-group-seeds", help="Mean ± std over training.seed."),
    figure: Optional[Path] = typer.Option(
        None,
        "--figure",
        show_default=False,
        help="Draw the runs' curves (and a sweep's metric by parameter) into this PNG. [default: compare.png in the "
        "sweep folder when comparing one sweep, else no figure]",
    ),
) -> None:
    """A table of the config keys that differ between runs against their results, and a figure of their curves."""
    from cifar_scratch.runs import compare as comparing
    from cifar_scratch.sweeps import SweepFolder, load_spec

    runs = comparing.collect(paths)
    columns, rows = comparing.table(runs, group_seeds)
    if sort is not None:
        if sort not in columns:
            raise UsageError(f"--sort: no column {sort!r}; columns: {', '.join(columns)}")
        rows = comparing.sort_rows(rows, sort)
    typer.echo(comparing.render(columns, rows, fmt.value))
    sweeps = [folder for folder in map(SweepFolder, paths) if folder.exists()]
    # One sweep's figure belongs in its folder; for other runs only where --figure says (never the current folder).
    target = figure or (sweeps[0].path / "compare.png" if len(sweeps) == 1 else None)
    if target is None:
        return
    panels = sweeps[0].metric_by_parameter(load_spec(sweeps[0].spec_path)) if len(sweeps) == 1 else []
    comparing.draw(runs, target, panels)
    typer.echo(f"figure: {target}", err=fmt is not TableFormat.table)


@command
def report(
    folder: Path = typer.Argument(..., help="A run folder or a sweep folder."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", show_default=False, help="The HTML file. [default: FOLDER/report.html]"
    ),
) -> None:
    """One self-contained HTML page (metrics, plots, health, history, config; a sweep's comparison) that opens offline."""
    from cifar_scratch.api import report as write_report

    typer.echo(str(write_report(folder, out)))
