"""``cifar-scratch train``: start a run from a config, or resume one from its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cifar_scratch import runtime
from cifar_scratch.cli import console
from cifar_scratch.cli.app import command
from cifar_scratch.cli.options import DATA_DIR_OPTION, ENGINE_OPTION, QUIET_OPTION, THREADS_OPTION, Engine
from cifar_scratch.config import dump_config, load_config
from cifar_scratch.data import resolve_data_dir
from cifar_scratch.errors import UsageError
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.training.trainer import Callback, Trainer


class ShareCPUs(Callback):
    """Re-estimates the free CPUs between training steps (see :class:`runtime.Threads`)."""

    def __init__(self, threads: runtime.Threads):
        self.threads = threads

    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None:
        self.threads.adjust()


@command
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML config file (omit with --resume)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted.key=value overrides, values parsed as YAML."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
    runs_dir: Optional[Path] = typer.Option(
        None, "--runs-dir", show_default=False, help="Where run folders go. [default: output.runs_dir]"
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    quiet: bool = QUIET_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    engine: Optional[Engine] = ENGINE_OPTION,
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Write TensorBoard event files (output.tensorboard=true; see tensorboard --logdir runs/)."
    ),
) -> None:
    """Train a model; the run folder's path is the last line printed."""
    from cifar_scratch.training.run import resume_config, resume_run, start_run

    overrides = list(overrides or []) + ([f"training.engine={engine.value}"] if engine else [])
    overrides += ["output.tensorboard=true"] if tensorboard else []
    if resume is not None and config is not None:
        # With --resume every positional argument is an override.
        overrides.insert(0, str(config))
        config = None
    if resume is not None and runs_dir is not None:
        raise UsageError("--runs-dir: not used with --resume (the run folder is given)")
    if resume is None and config is None:
        raise UsageError("give a config file, or --resume RUN_DIR (see cifar-scratch train --help)")
    if print_config:
        resolved = resume_config(resume, overrides) if resume is not None else load_config(config, overrides)
        typer.echo(dump_config(resolved), nl=False)
        return
    callbacks = [] if quiet else [console.ConsoleReport()]
    with runtime.compute(threads) as chosen:
        callbacks.append(ShareCPUs(chosen))
        if resume is not None:
            for file in RunFolder(resume).checked_code():
                typer.echo(f"note: imports the run's copy of user code {file}", err=True)
            result = resume_run(resume, overrides, data_dir, callbacks, progress=not quiet)
        else:
            resolved = load_config(config, overrides)
            result = start_run(
                resolved, resolve_data_dir(data_dir), callbacks, progress=not quiet, runs_dir=runs_dir, overrides=overrides
            )
    if not quiet:
        typer.echo(console.training_result(result.metrics))
    typer.echo(str(result.run_dir))
