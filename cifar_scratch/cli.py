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


def main() -> None:
    app()
