"""Options and choices that several commands share, defined once so their help reads the same."""

from __future__ import annotations

from enum import Enum

import typer

from cifar_scratch import runtime
from cifar_scratch.data import DATA_DIR_ENV

DATA_DIR_OPTION = typer.Option(
    None,
    "--data-dir",
    envvar=DATA_DIR_ENV,
    show_default=False,
    help=f"Dataset cache folder. [default: ${DATA_DIR_ENV}, else ./data]",
)
THREADS_OPTION = typer.Option(
    None,
    "--threads",
    min=1,
    envvar=runtime.THREADS_ENV,
    show_default=False,
    help=f"Threads for BLAS and the engine's pool. [default: ${runtime.THREADS_ENV}, else the CPUs other processes leave free]",
)
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but the result path.")
RUN_ARGUMENT = typer.Argument(..., help="A run folder (uses checkpoints/best.npz) or a checkpoint file.")


class Engine(str, Enum):
    fast = "fast"
    reference = "reference"


ENGINE_OPTION = typer.Option(
    None,
    "--engine",
    show_default=False,
    help="The kernels: fast, or reference (cifar_scratch/nn/reference.py: the math, readable, slower). "
    "[default: the config's training.engine, fast]",
)


class Reference(str, Enum):
    torch = "torch"
