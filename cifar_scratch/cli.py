"""The ``cifar-scratch`` command line: thin commands over plain functions.

Exit codes: 0 success, 1 runtime problem (data, checkpoint), 2 bad config or usage,
130/143 interrupted by SIGINT/SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from cifar_scratch.config import dump_config, load_config
from cifar_scratch.data import DATA_DIR_ENV, resolve_data_dir
from cifar_scratch.errors import UserError
from cifar_scratch.training.trainer import Callback, Trainer, TrainingInterrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train and evaluate from-scratch NumPy networks on CIFAR-10 and friends.",
)

DATA_DIR_OPTION = typer.Option(
    None, "--data-dir", envvar=DATA_DIR_ENV, help=f"Dataset cache folder [default: ./data, or ${DATA_DIR_ENV}]."
)
THREADS_OPTION = typer.Option(None, "--threads", min=1, help="BLAS threads [default: all cores].")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but the result path.")


def _user_errors(command):
    """Turn UserError into its message on stderr and its exit code; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except TrainingInterrupted as exc:
            typer.echo(f"\n{exc}", err=True)
            typer.echo(f"resume with: cifar-scratch train --resume {exc.checkpoint.parent.parent}", err=True)
            raise typer.Exit(128 + exc.signum) from None

    return wrapper


class ConsoleReport(Callback):
    """A tqdm bar per epoch on a terminal; one plain line per epoch otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self._print(trainer.model.summary())
        self._print(f"{trainer.dataset.description}: {len(trainer.dataset.train)} train / "
                    f"{len(trainer.dataset.val)} val / {len(trainer.dataset.test)} test images")
        self._print(f"run folder: {trainer.run_dir}")

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if self.interactive:
            self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.state.batch_in_epoch, file=self.stream,
                            desc=f"epoch {epoch}/{trainer.config.training.epochs}", unit="batch", leave=False)

    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0 or batch == batches:
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        best = " *" if trainer.state.best_epoch == row["epoch"] else ""
        self._print(
            f"epoch {row['epoch']:>3}/{trainer.config.training.epochs}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_accuracy']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
            f"lr {row['lr']:.3g}  {row['epoch_time']:.1f}s{best}"
        )

    def on_train_end(self, trainer: Trainer) -> None:
        self._print(f"stopped: {trainer.state.stop_reason}; best epoch {trainer.state.best_epoch}")

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


@app.command()
@_user_errors
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML config file (omit with --resume)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides, values parsed as YAML."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="Where run folders go [default: output.runs_dir]."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    quiet: bool = QUIET_OPTION,
    threads: Optional[int] = THREADS_OPTION,
) -> None:
    """Train a model; the run folder's path is the last line printed."""
    from cifar_scratch.training.run import resume_run, start_run

    overrides = list(overrides or [])
    if resume is not None and config is not None:
        # With --resume every positional argument is an override.
        overrides.insert(0, str(config))
        config = None
    callbacks = [] if quiet else [ConsoleReport()]
    with threadpool_limits(limits=threads, user_api="blas"):
        if resume is not None:
            result = resume_run(resume, overrides, data_dir, callbacks, progress=not quiet)
        else:
            if config is None:
                raise UserError("give a config file, or --resume RUN_DIR")
            resolved = load_config(config, overrides)
            if print_config:
                typer.echo(dump_config(resolved), nl=False)
                return
            result = start_run(resolved, resolve_data_dir(data_dir), callbacks, progress=not quiet, runs_dir=runs_dir)
    if not quiet:
        m = result.metrics
        summary = "  ".join(f"{k} {m[k]:.4f}" for k in ("train_accuracy", "val_accuracy", "test_accuracy") if k in m)
        typer.echo(f"best weights (epoch {m['best_epoch']}): {summary}")
    typer.echo(str(result.run_dir))


@app.command()
@_user_errors
def evaluate(
    target: Path = typer.Argument(..., help="A run folder (uses checkpoints/best.npz) or a checkpoint file."),
    split: str = typer.Option("test", "--split", help="test or val."),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
    quiet: bool = QUIET_OPTION,
    threads: Optional[int] = THREADS_OPTION,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix and image grids; prints the output folder."""
    from cifar_scratch.evaluate import evaluate_checkpoint

    if split not in ("test", "val"):
        raise UserError(f"--split: must be test or val (got {split!r})")
    with threadpool_limits(limits=threads, user_api="blas"):
        out_dir, metrics = evaluate_checkpoint(target, split, data_dir, progress=not quiet)
    if not quiet:
        typer.echo(f"{split}: accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  loss {metrics['loss']:.4f}  "
                   f"({metrics['samples']} images)")
        for name, row in metrics["per_class"].items():
            typer.echo(f"  {name:>12}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1-score']:.3f}")
    typer.echo(str(out_dir))


@app.command()
@_user_errors
def gradcheck(
    config: Optional[Path] = typer.Argument(None, help="YAML config whose model to check (omit with --layer to check layer types)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Check only this layer type (without a config: its examples)."),
    against: Optional[str] = typer.Option(None, "--against", help="torch: also compare with the same PyTorch model in float32."),
    threshold: float = typer.Option(1e-6, "--threshold", help="Largest accepted relative error in float64."),
    torch_threshold: float = typer.Option(1e-4, "--torch-threshold", help="Largest accepted relative difference from PyTorch."),
    max_elements: int = typer.Option(20, "--max-elements", min=1, help="Elements probed per tensor (two forward passes each)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON."),
    threads: Optional[int] = THREADS_OPTION,
) -> None:
    """Analytic gradients vs float64 central differences (and PyTorch); exit 1 if any tensor fails."""
    from cifar_scratch.diagnostics import gradcheck as checks
    from cifar_scratch.fileio import atomic_write_json

    if against not in (None, "torch"):
        raise UserError(f"--against: only 'torch' is supported (got {against!r})")
    resolved = load_config(config, list(overrides or [])) if config is not None else None
    results: dict = {"threshold": threshold}
    with threadpool_limits(limits=threads, user_api="blas"):
        if resolved is None:
            if against is not None:
                raise UserError("--against torch compares a config's model: give a config")
            results["layers"] = checks.check_layer_types([layer] if layer else list(checks.LAYER_EXAMPLES), max_elements)
        else:
            results["layers"] = checks.check_config_layers(resolved, layer, max_elements)
            if layer is None:
                results["model"] = checks.check_config_model(resolved, max_elements=max(4, max_elements // 2))
            if against is not None:
                results["torch"] = checks.check_against_torch(resolved)
    failed = 0
    for title, key in (("per layer (float64)", "layers"), ("end to end through the loss (float64)", "model")):
        if key in results:
            typer.echo(f"\n{title}")
            typer.echo(_table(["layer", "tensor", "shape", "checked", "max rel. error", "worst element", "result"],
                              [[r.layer, r.tensor, "x".join(map(str, r.shape)), str(r.checked), f"{r.max_relative_error:.2e}",
                                str(r.worst_index), "ok" if r.max_relative_error < threshold else "FAIL"] for r in results[key]]))
            failed += sum(r.max_relative_error >= threshold for r in results[key])
    if "torch" in results:
        typer.echo("\nagainst PyTorch (float32, same weights, dropout off, batch-norm batch statistics)")
        typer.echo(_table(["layer", "tensor", "shape", "max abs. diff", "rel. diff", "result"],
                          [[r.layer, r.tensor, "x".join(map(str, r.shape)), f"{r.max_abs_diff:.2e}", f"{r.relative_diff:.2e}",
                            "ok" if r.relative_diff < torch_threshold else "FAIL"] for r in results["torch"]]))
        failed += sum(r.relative_diff >= torch_threshold for r in results["torch"])
    if json_path is not None:
        payload = {k: checks.as_json(v) if isinstance(v, list) else v for k, v in results.items()}
        atomic_write_json(json_path, {**payload, "torch_threshold": torch_threshold, "failed": failed})
    typer.echo(f"\n{'FAILED' if failed else 'passed'}: {failed} of "
               f"{sum(len(v) for v in results.values() if isinstance(v, list))} tensors outside the threshold")
    if failed:
        raise typer.Exit(1)


@app.command()
@_user_errors
def benchmark(
    config: Path = typer.Argument(..., help="YAML config whose model, optimizer and batch size to time."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="[default: training.batch_size]"),
    steps: int = typer.Option(5, "--steps", min=1, help="Steps per timed block."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed blocks (median and spread are over these)."),
    threads: Optional[int] = THREADS_OPTION,
    against: Optional[str] = typer.Option(None, "--against", help="torch: time the same model in PyTorch, interleaved."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON."),
) -> None:
    """Training and inference images/s, per-layer times, peak memory, GFLOP/s (and the ratio to PyTorch)."""
    from cifar_scratch.diagnostics.benchmark import run_benchmark
    from cifar_scratch.fileio import atomic_write_json

    if against not in (None, "torch"):
        raise UserError(f"--against: only 'torch' is supported (got {against!r})")
    resolved = load_config(config, list(overrides or []))
    batch = batch_size or resolved.training.batch_size
    with threadpool_limits(limits=threads, user_api="blas"):
        r = run_benchmark(resolved, batch, steps, repeats, threads, against == "torch",
                          progress=lambda text: typer.echo(text, err=True))
    m = r["machine"]
    typer.echo(f"{resolved.name}: batch {batch}, {repeats} x {steps} steps, threads {threads or 'all'}")
    typer.echo(f"machine: {m['cpu']} ({m['cores']} cores), numpy {m['numpy']}, BLAS {', '.join(m['blas'])}"
               + (f", torch {r['torch']['version']}" if r["torch"] else ""))
    rows = []
    for phase in ("train", "inference"):
        for name in ("ours", "torch"):
            if name in r[phase]:
                t = r[phase][name]
                rows.append([phase, name, f"{t['images_per_s_median']:,.0f}", f"{t['images_per_s_min']:,.0f}-{t['images_per_s_max']:,.0f}",
                             f"{t['step_ms_median']:.1f}"])
    typer.echo(_table(["phase", "engine", "images/s (median)", "range", "ms/step"], rows))
    if r["torch"]:
        typer.echo(f"ours / torch: train {r['train']['ratio']:.2f}x, inference {r['inference']['ratio']:.2f}x (same run, interleaved)")
    typer.echo(f"peak memory of a training step: {r['peak_memory_mb']:,.0f} MB (NumPy arrays, tracemalloc)")
    typer.echo(f"GEMM work per training step: {r['gflop_per_train_step']:.2f} GFLOP -> {r['achieved_gflops']:.0f} GFLOP/s "
               f"achieved; float32 GEMM peak here: {r['gemm_peak_gflops']:.0f} GFLOP/s")
    total = sum(row["forward_ms"] + row["backward_ms"] for row in r["layers"]) or 1.0
    typer.echo(_table(["layer", "output", "forward ms", "backward ms", "share", "GFLOP"],
                      [[row["layer"], "x".join(map(str, row["output_shape"])), f"{row['forward_ms']:.1f}", f"{row['backward_ms']:.1f}",
                        f"{(row['forward_ms'] + row['backward_ms']) / total:.0%}", f"{row['gflop']:.2f}"] for row in r["layers"]]))
    if json_path is not None:
        atomic_write_json(json_path, r)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def main() -> None:
    app()
