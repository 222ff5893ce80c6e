"""``cifar-scratch gradcheck``, ``benchmark`` and ``lr-find``: is the backward pass right, how fast is a
step, and which learning rate to train at."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm

from cifar_scratch import runtime
from cifar_scratch.cli import console
from cifar_scratch.cli.app import command
from cifar_scratch.cli.options import DATA_DIR_OPTION, ENGINE_OPTION, QUIET_OPTION, THREADS_OPTION, Engine
from cifar_scratch.config import load_config
from cifar_scratch.errors import UsageError
from cifar_scratch.fileio import atomic_write_json
from cifar_scratch.nn import kernels


class Reference(str, Enum):
    torch = "torch"


class Precision(str, Enum):
    float32 = "float32"
    float64 = "float64"


@command
def gradcheck(
    config: Optional[Path] = typer.Argument(
        None, help="YAML config whose model to check (omit with --layer to check layer types)."
    ),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Check only this layer type (without a config: its examples)."),
    against: Optional[Reference] = typer.Option(None, "--against", help="Also compare with the same PyTorch model."),
    torch_dtype: Precision = typer.Option(
        Precision.float32,
        "--torch-dtype",
        help="Precision of the PyTorch comparison: float32 (the engine's) or float64 (rounding out of the way).",
    ),
    threshold: float = typer.Option(1e-6, "--threshold", help="Largest accepted relative error in float64."),
    torch_threshold: float = typer.Option(1e-4, "--torch-threshold", help="Largest accepted relative difference from PyTorch."),
    max_elements: int = typer.Option(20, "--max-elements", min=1, help="Elements probed per tensor (two forward passes each)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON."),
    threads: Optional[int] = THREADS_OPTION,
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Analytic gradients vs float64 central differences (and PyTorch); exit 1 if any tensor fails."""
    from cifar_scratch.diagnostics.gradcheck import as_json, run_checks

    resolved = load_config(config, list(overrides or [])) if config is not None else None
    kind = engine.value if engine else resolved.training.engine if resolved else "fast"
    with runtime.compute(threads), kernels.using(kind, resolved.training.conv_algorithm if resolved else None):
        results = run_checks(resolved, layer, max_elements, against and torch_dtype.value)
    typer.echo(console.gradcheck(results, threshold, torch_threshold, torch_dtype.value))
    limits = {"layers": threshold, "model": threshold, "torch": torch_threshold}
    failed = sum(
        (r.relative_diff if key == "torch" else r.max_relative_error) >= limits[key]
        for key, rows in results.items()
        for r in rows
    )
    if json_path is not None:
        payload = {key: as_json(rows) for key, rows in results.items()}
        atomic_write_json(
            json_path,
            {"threshold": threshold, "engine": kind, **payload, "torch_threshold": torch_threshold, "failed": failed},
        )
    checked = sum(len(rows) for rows in results.values())
    typer.echo(f"\n{'FAILED' if failed else 'passed'}: {failed} of {checked} tensors outside the threshold ({kind} kernels)")
    if failed:
        raise typer.Exit(1)


@command
def benchmark(
    config: Path = typer.Argument(..., help="YAML config whose model, optimizer and batch size to time."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="[default: training.batch_size]"),
    steps: int = typer.Option(5, "--steps", min=1, help="Steps per timed block."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed blocks (median and spread are over these)."),
    threads: Optional[int] = THREADS_OPTION,
    against: Optional[Reference] = typer.Option(None, "--against", help="Time the same model in PyTorch, interleaved."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON."),
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Training and inference images/s, per-layer times, peak memory, GFLOP/s (and the ratio to PyTorch)."""
    from cifar_scratch.diagnostics.benchmark import run_benchmark

    resolved = load_config(config, list(overrides or []) + ([f"training.engine={engine.value}"] if engine else []))
    batch = batch_size or resolved.training.batch_size
    with runtime.compute(threads) as chosen, kernels.using(resolved.training.engine, resolved.training.conv_algorithm):
        result = run_benchmark(
            resolved,
            batch,
            steps,
            repeats,
            chosen.count,
            against is Reference.torch,
            progress=lambda text: typer.echo(text, err=True),
        )
    typer.echo(console.benchmark(result, resolved.name, batch, steps, repeats, chosen.describe(), resolved.training.engine))
    if json_path is not None:
        atomic_write_json(json_path, result)


@command
def lr_find(
    config: Path = typer.Argument(..., help="YAML config whose model, data and optimizer to test."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides."),
    start_lr: float = typer.Option(1e-7, "--start-lr", min=0.0, help="The first step's learning rate."),
    end_lr: float = typer.Option(10.0, "--end-lr", min=0.0, help="The last step's learning rate."),
    steps: int = typer.Option(100, "--steps", min=12, help="Steps of the exponential ramp."),
    diverge: float = typer.Option(
        4.0, "--diverge", min=1.0, help="Stop once the smoothed loss passes this many times its lowest."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", show_default=False, help="Results folder. [default: <runs_dir>/lr-find/<time>_<name>]"
    ),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
    quiet: bool = QUIET_OPTION,
    threads: Optional[int] = THREADS_OPTION,
) -> None:
    """Learning-rate range test: an exponential ramp over a few steps; plots loss against rate and suggests optimizer.lr."""
    from cifar_scratch.api import lr_find as find

    resolved = load_config(config, overrides or [])
    if not start_lr < end_lr:
        raise UsageError(f"--start-lr must be below --end-lr (got {start_lr:g}, {end_lr:g})")
    bar = None if quiet else tqdm(total=steps, desc="lr-find", unit="step", leave=False, file=sys.stderr)

    def follow(step: int, lr: float, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.2g}", loss=f"{loss:.3g}", refresh=False)

    result = find(
        resolved,
        out=out,
        data_dir=data_dir,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        diverge=diverge,
        threads=threads,
        progress=not quiet,
        on_step=follow,
    )
    if bar is not None:
        bar.close()
    if not quiet:
        typer.echo(console.lr_find(result, result.suggested_overrides(resolved)))
    typer.echo(str(result.folder))
