"""The ``cifar-scratch`` command line: thin commands over plain functions.

Exit codes: 0 success, 1 runtime problem (data, checkpoint), 2 bad config or usage,
130/143 interrupted by SIGINT/SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm
from typer.core import TyperGroup

from cifar_scratch import __version__, runtime, signals
from cifar_scratch.config import TTA_MODES, dump_config, load_config
from cifar_scratch.data import DATA_DIR_ENV, resolve_data_dir
from cifar_scratch.errors import UsageError, UserError
from cifar_scratch.tables import text_table
from cifar_scratch.training.checkpoint import load_checkpoint, read_metadata
from cifar_scratch.training.trainer import Callback, Trainer


class OneLineUsageErrors(TyperGroup):
    """Typer's command group with usage errors (an unknown option, a value out of range, a missing
    argument) as one ``error:`` line and exit 2, like every other error, instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # click's exceptions, which Typer carries as its own
            typer.echo(f"error: {usage_message(exc)}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        # Without standalone mode a command's typer.Exit comes back as its exit code, a return as None.
        sys.exit(code if isinstance(code, int) else 0)


def usage_message(exc: typer.TyperException) -> str:
    """``Invalid value for '--split': 'train' is not one of 'test', 'val' (see: cifar-scratch evaluate --help)``."""
    message = " ".join(exc.format_message().replace("Value error, ", "").split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see: {ctx.command_path} --help)" if ctx is not None else message


app = typer.Typer(
    cls=OneLineUsageErrors,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: Rich markup would eat "[default: ...]" as a tag
    help="Train and evaluate from-scratch NumPy networks on CIFAR-10 and friends.",
)

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
DEBUG_ENV = "CIFAR_SCRATCH_DEBUG"


class Split(str, Enum):
    test = "test"
    val = "val"


TTA = Enum("TTA", {mode: mode for mode in TTA_MODES}, type=str)


class Reference(str, Enum):
    torch = "torch"


class Precision(str, Enum):
    float32 = "float32"
    float64 = "float64"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cifar-scratch {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Train and evaluate from-scratch NumPy networks on CIFAR-10 and friends."""
    if ctx.invoked_subcommand is None:  # a bare `cifar-scratch` shows the help
        typer.echo(ctx.get_help())


def _user_errors(command):
    """Every way a command can stop, as the README promises: one ``error:`` line and exit 1/2 for
    problems the user can fix, 130/143 and a message for SIGINT/SIGTERM, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with signals.handled():
                return command(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except signals.Interrupted as exc:
            for line in _interruption_report(exc):
                typer.echo(line, err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # disk full, read-only folder, a file where a folder should be...
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the command's own exit code, or a usage error that OneLineUsageErrors reports
        except MemoryError:
            typer.echo("error: out of memory; use a smaller batch_size or model", err=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            typer.echo(
                f"error: internal error ({type(exc).__name__}: {str(exc)[:300]}); this is a bug in "
                f"cifar-scratch: please report it with the traceback that {DEBUG_ENV}=1 shows",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper


def _interruption_report(exc: signals.Interrupted) -> list[str]:
    """What was stopped, what was saved, and how to go on."""
    lines = [f"\ninterrupted by {exc.name}" + (" (a second signal: stopped at once)" if exc.immediate else "")]
    if exc.hint:  # a command that knows better what was kept (sweep)
        return lines + [exc.hint]
    if exc.run_dir is None:
        return lines + ["nothing was written"]
    if exc.checkpoint is None:
        return lines + [f"no checkpoint was written yet: {exc.run_dir} cannot be resumed; start the run again"]
    try:
        meta = read_metadata(load_checkpoint(exc.checkpoint, lambda name, metadata: None)[1], exc.checkpoint)  # metadata only
        saved = f"epoch {meta.epoch}" + (
            f", batch {meta.batch_in_epoch} of epoch {meta.epoch + 1}" if meta.batch_in_epoch else ""
        )
        saved += f", step {meta.step}"
    except UserError:
        saved = "unreadable"
    if exc.immediate:
        lines.append(f"the steps since the last checkpoint were not saved; {exc.checkpoint} holds {saved}")
    else:
        lines.append(f"state saved to {exc.checkpoint} ({saved})")
    return lines + [f"resume with: cifar-scratch train --resume {exc.run_dir}"]


class ShareCPUs(Callback):
    """Re-estimates the free CPUs between training steps (see :class:`runtime.Threads`)."""

    def __init__(self, threads: runtime.Threads):
        self.threads = threads

    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None:
        self.threads.adjust()


class ConsoleReport(Callback):
    """A tqdm bar per epoch on a terminal (running means, learning rate); otherwise one plain line per
    epoch plus a heartbeat line every ``heartbeat_s`` seconds, so a log file shows progress within long epochs."""

    def __init__(self, stream=None, heartbeat_s: float = 30.0):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.heartbeat_s = heartbeat_s
        self.bar: tqdm | None = None
        self._next_beat = 0.0

    def on_train_start(self, trainer: Trainer) -> None:
        self._print(trainer.model.summary())
        for reason in trainer.dataset.passed_over:
            self._print(f"data.source: skipped {reason}")
        self._print(
            f"{trainer.dataset.description}: {len(trainer.dataset.train)} train / "
            f"{len(trainer.dataset.val)} val / {len(trainer.dataset.test)} test images"
        )
        if not len(trainer.dataset.val):
            self._print(f"no validation split: {trainer.monitor} picks the best epoch")
        self._print(f"run folder: {trainer.run_dir}")
        self._started, self._steps_at_start = time.perf_counter(), trainer.state.step
        self._next_beat = self._started + self.heartbeat_s

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if self.interactive:
            self.bar = tqdm(
                total=trainer.steps_per_epoch,
                initial=trainer.state.batch_in_epoch,
                file=self.stream,
                desc=f"epoch {epoch}/{trainer.config.training.epochs}",
                unit="batch",
                leave=False,
            )

    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None:
        running = trainer.state.running
        seen = max(1, running["seen"])
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0 or batch == batches:
                self.bar.set_postfix(
                    loss=f"{running['loss_sum'] / seen:.4f}",
                    acc=f"{running['correct'] / seen:.3f}",
                    lr=f"{trainer.state.lrs[-1]:.3g}",
                    refresh=False,
                )
        elif time.perf_counter() >= self._next_beat:
            now = time.perf_counter()
            self._next_beat = now + self.heartbeat_s
            done = trainer.state.step - self._steps_at_start
            total = trainer.steps_per_epoch * trainer.config.training.epochs - self._steps_at_start
            rate = done / max(now - self._started, 1e-9)
            eta = (total - done) / rate if rate > 0 else float("inf")
            images = rate * trainer.config.training.batch_size
            self._print(
                f"  epoch {trainer.state.epoch + 1} batch {batch}/{batches}  loss {running['loss_sum'] / seen:.4f}  "
                f"acc {running['correct'] / seen:.4f}  lr {trainer.state.lrs[-1]:.3g}  {images:,.0f} img/s  "
                f"run ETA {_duration(eta)}"
            )

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        best = " *" if trainer.state.best_epoch == row["epoch"] else ""
        parts = [f"epoch {row['epoch']:>3}/{trainer.config.training.epochs}"]
        for key, label in (
            ("train_loss", "loss"),
            ("train_accuracy", "acc"),
            ("val_loss", "val_loss"),
            ("val_accuracy", "val_acc"),
        ):
            if row[key] is not None:  # no validation split (or a diverged epoch): no validation figures
                parts.append(f"{label} {_figure(row[key])}")
        parts += [f"lr {row['lr']:.3g}", f"{row['epoch_time']:.1f}s{best}"]
        self._print("  ".join(parts))

    def on_train_end(self, trainer: Trainer) -> None:
        best = trainer.state.best_epoch
        self._print(f"stopped: {trainer.state.stop_reason}; " + (f"best epoch {best}" if best else "no best epoch"))

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def _figure(value: float) -> str:
    """Four decimals, with no minus sign on a value that rounds to zero (a loss of -1e-9 is 0.0000)."""
    text = f"{value:.4f}"
    return text[1:] if text == "-0.0000" else text


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@app.command()
@_user_errors
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
) -> None:
    """Train a model; the run folder's path is the last line printed."""
    from cifar_scratch.training.run import resume_config, resume_run, start_run

    overrides = list(overrides or []) + ([f"training.engine={engine.value}"] if engine else [])
    if resume is not None and config is not None:
        # With --resume every positional argument is an override.
        overrides.insert(0, str(config))
        config = None
    if resume is not None and runs_dir is not None:
        raise UsageError("--runs-dir: not used with --resume (the run folder is given)")
    callbacks = [] if quiet else [ConsoleReport()]
    with runtime.compute(threads) as chosen:
        callbacks.append(ShareCPUs(chosen))
        if resume is not None:
            if print_config:
                typer.echo(dump_config(resume_config(resume, overrides)), nl=False)
                return
            result = resume_run(resume, overrides, data_dir, callbacks, progress=not quiet)
        else:
            if config is None:
                raise UsageError("give a config file, or --resume RUN_DIR (see cifar-scratch train --help)")
            resolved = load_config(config, overrides)
            if print_config:
                typer.echo(dump_config(resolved), nl=False)
                return
            result = start_run(
                resolved, resolve_data_dir(data_dir), callbacks, progress=not quiet, runs_dir=runs_dir, overrides=overrides
            )
    if not quiet:
        m = result.metrics
        keys = ("train_accuracy", "val_accuracy", "test_accuracy", "test_accuracy_tta")
        summary = "  ".join(f"{k} {m[k]:.4f}" for k in keys if m.get(k) is not None)
        summary += (
            f"  (TTA: {m['tta']}; training took {m['train_time_s']:.0f} s)" if m.get("test_accuracy_tta") is not None else ""
        )
        typer.echo(f"best weights (epoch {m['best_epoch']}): {summary}")
    typer.echo(str(result.run_dir))


@app.command()
@_user_errors
def evaluate(
    target: Path = typer.Argument(..., help="A run folder (uses checkpoints/best.npz) or a checkpoint file."),
    split: Split = typer.Option(Split.test, "--split", help="Which split to measure."),
    tta: Optional[TTA] = typer.Option(
        None, "--tta", show_default=False, help="Test-time augmentation. [default: the run's training.tta]"
    ),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
    quiet: bool = QUIET_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix and image grids; prints the output folder."""
    from cifar_scratch.evaluate import evaluate_checkpoint

    notes: list[str] = []
    with runtime.compute(threads):
        out_dir, metrics = evaluate_checkpoint(
            target, split.value, data_dir, progress=not quiet, notes=notes, tta=tta and tta.value, engine=engine and engine.value
        )
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if not quiet:
        typer.echo(
            f"{split.value}, plain: accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
            f"loss {metrics['loss']:.4f}  ({metrics['samples']} images, {metrics['checkpoint']})"
        )
        if metrics["tta"] != "none":
            typer.echo(
                f"{split.value}, TTA {metrics['tta']}: accuracy {metrics['accuracy_tta']:.4f}  "
                f"macro F1 {metrics['macro_f1_tta']:.4f}  loss {metrics['loss_tta']:.4f}"
            )
        typer.echo(f"report of {metrics['report_of']}:")
        typer.echo(metrics["report"].rstrip())
    typer.echo(str(out_dir))


@app.command()
@_user_errors
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
    from cifar_scratch.diagnostics import gradcheck as checks
    from cifar_scratch.fileio import atomic_write_json
    from cifar_scratch.nn import kernels

    resolved = load_config(config, list(overrides or [])) if config is not None else None
    kind = engine.value if engine else resolved.training.engine if resolved else "fast"
    results: dict = {"threshold": threshold, "engine": kind}
    with runtime.compute(threads), kernels.using(kind):
        if resolved is None:
            if against is not None:
                raise UsageError("--against torch compares a config's model: give a config")
            results["layers"] = checks.check_layer_types([layer] if layer else list(checks.LAYER_KINDS), max_elements)
        else:
            results["layers"] = checks.check_config_layers(resolved, layer, max_elements)
            if layer is None:
                results["model"] = checks.check_config_model(resolved, max_elements=max(4, max_elements // 2))
            if against is not None:
                results["torch"] = checks.check_against_torch(resolved, dtype=torch_dtype.value)
    failed = 0
    for title, key in (("per layer (float64)", "layers"), ("end to end through the loss (float64)", "model")):
        if key in results:
            typer.echo(f"\n{title}")
            typer.echo(
                text_table(
                    ["layer", "tensor", "shape", "checked", "max rel. error", "worst element", "result"],
                    [
                        [
                            r.layer,
                            r.tensor,
                            "x".join(map(str, r.shape)),
                            str(r.checked),
                            f"{r.max_relative_error:.2e}",
                            str(r.worst_index),
                            "ok" if r.max_relative_error < threshold else "FAIL",
                        ]
                        for r in results[key]
                    ],
                )
            )
            failed += sum(r.max_relative_error >= threshold for r in results[key])
    if "torch" in results:
        typer.echo(f"\nagainst PyTorch ({torch_dtype.value}, same weights, dropout off, batch-norm batch statistics)")
        typer.echo(
            text_table(
                ["layer", "tensor", "shape", "max abs. diff", "rel. diff", "result"],
                [
                    [
                        r.layer,
                        r.tensor,
                        "x".join(map(str, r.shape)),
                        f"{r.max_abs_diff:.2e}",
                        f"{r.relative_diff:.2e}",
                        "ok" if r.relative_diff < torch_threshold else "FAIL",
                    ]
                    for r in results["torch"]
                ],
            )
        )
        failed += sum(r.relative_diff >= torch_threshold for r in results["torch"])
    if json_path is not None:
        payload = {k: checks.as_json(v) if isinstance(v, list) else v for k, v in results.items()}
        atomic_write_json(json_path, {**payload, "torch_threshold": torch_threshold, "failed": failed})
    typer.echo(
        f"\n{'FAILED' if failed else 'passed'}: {failed} of "
        f"{sum(len(v) for v in results.values() if isinstance(v, list))} tensors outside the threshold ({kind} kernels)"
    )
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
    against: Optional[Reference] = typer.Option(None, "--against", help="Time the same model in PyTorch, interleaved."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON."),
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Training and inference images/s, per-layer times, peak memory, GFLOP/s (and the ratio to PyTorch)."""
    from cifar_scratch.diagnostics.benchmark import run_benchmark
    from cifar_scratch.fileio import atomic_write_json
    from cifar_scratch.nn import kernels

    resolved = load_config(config, list(overrides or []) + ([f"training.engine={engine.value}"] if engine else []))
    batch = batch_size or resolved.training.batch_size
    with runtime.compute(threads) as chosen, kernels.using(resolved.training.engine):
        r = run_benchmark(
            resolved,
            batch,
            steps,
            repeats,
            chosen.count,
            against is Reference.torch,
            progress=lambda text: typer.echo(text, err=True),
        )
    m = r["machine"]
    typer.echo(
        f"{resolved.name}: batch {batch}, {repeats} x {steps} steps, threads {chosen.describe()}, "
        f"{resolved.training.engine} kernels"
    )
    typer.echo(
        f"machine: {m['cpu']} ({m['cores']} cores), numpy {m['numpy']}, BLAS {', '.join(m['blas'])}"
        + (f", torch {r['torch']['version']}" if r["torch"] else "")
    )
    if m["openblas_coretype"]:
        typer.echo(
            f"note: OPENBLAS_CORETYPE={m['openblas_coretype']} pins OpenBLAS's kernels (unset it to let it pick this CPU's)"
        )
    rows = []
    for phase in ("train", "inference"):
        for name in ("ours", "torch"):
            if name in r[phase]:
                t = r[phase][name]
                rows.append(
                    [
                        phase,
                        name,
                        f"{t['images_per_s_median']:,.0f}",
                        f"{t['images_per_s_min']:,.0f}-{t['images_per_s_max']:,.0f}",
                        f"{t['step_ms_median']:.1f}",
                    ]
                )
    typer.echo(text_table(["phase", "engine", "images/s (median)", "range", "ms/step"], rows))
    if r["torch"]:
        typer.echo(
            f"ours / torch: train {r['train']['ratio']:.2f}x, inference {r['inference']['ratio']:.2f}x (same run, interleaved)"
        )
    typer.echo(f"peak memory of a training step: {r['peak_memory_mb']:,.0f} MB (NumPy arrays, tracemalloc)")
    typer.echo(
        f"GEMM work per training step: {r['gflop_per_train_step']:.2f} GFLOP -> {r['achieved_gflops']:.0f} GFLOP/s "
        f"achieved; float32 GEMM peak here: {r['gemm_peak_gflops']:.0f} GFLOP/s"
    )
    total = sum(row["forward_ms"] + row["backward_ms"] for row in r["layers"]) or 1.0
    typer.echo(
        text_table(
            ["layer", "output", "forward ms", "backward ms", "share", "GFLOP"],
            [
                [
                    row["layer"],
                    "x".join(map(str, row["output_shape"])),
                    f"{row['forward_ms']:.1f}",
                    f"{row['backward_ms']:.1f}",
                    f"{(row['forward_ms'] + row['backward_ms']) / total:.0%}",
                    f"{row['gflop']:.2f}",
                ]
                for row in r["layers"]
            ],
        )
    )
    if json_path is not None:
        atomic_write_json(json_path, r)


class Executor(str, Enum):
    local = "local"
    dask = "dask"


@app.command()
@_user_errors
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

    def started(plan) -> None:
        spec = plan.spec
        typer.echo(
            f"sweep {plan.folder}: "
            + (f"bayes search of {spec.run_cap} jobs, {plan.jobs} so far, " if spec.method == "bayes" else f"{plan.jobs} jobs, ")
            + f"{plan.done} done, {plan.todo} to run"
            + (f" ({plan.resumed} resumed)" if plan.resumed else "")
            + f"; {plan.where}"
        )

    def finished(outcome) -> None:
        where = f"  {outcome.run_dir}" if outcome.run_dir else ""
        why = f"  ({outcome.error})" if outcome.error and outcome.status != "completed" else ""
        typer.echo(
            f"job {outcome.job.index:>3} {outcome.status:<11} {outcome.seconds:7.1f}s  {' '.join(outcome.job.overrides)}{where}{why}"
        )

    result = run_sweep(
        spec_path, jobs, address, out, runs_dir, threads, fail_fast, retry_failed, data_dir, on_start=started, on_outcome=finished
    )
    best = result.best
    if best is not None:
        params = " ".join(f"{key}={best[key]}" for key in result.spec.parameters)
        typer.echo(f"best {result.spec.metric.name}: {best[result.spec.metric.name]:.4f} (job {best['job']}: {params})")
    typer.echo(f"results: {result.folder.results_path}")
    if result.failed:
        typer.echo(f"error: {len(result.failed)} job(s) failed; see {result.folder.logs_dir}", err=True)
        raise typer.Exit(1)


@app.command()
@_user_errors
def runs(
    root: Path = typer.Argument(Path("runs"), help="A runs folder, a sweep folder or one run folder."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many runs."),
) -> None:
    """Past runs, newest first: status, best monitored metric, epochs, age."""
    from cifar_scratch.runs.index import age, find_runs, summarize

    if not root.exists():
        raise UsageError(f"{root}: no such folder")
    summaries = sorted((summarize(path) for path in find_runs(root)), key=lambda s: (s.started or 0, s.path.name), reverse=True)
    if not summaries:
        typer.echo(f"no runs under {root}")
        return
    now = time.time()
    rows = []
    for s in summaries[:limit]:
        best = f"{s.monitor} {s.best_value:.4f} @{s.best_epoch}" if s.best_value is not None and s.monitor else "-"
        test = s.metrics.get("test_accuracy_tta", s.metrics.get("test_accuracy"))
        rows.append(
            [
                s.path.name,
                s.status,
                f"{s.epochs_done}/{s.epochs if s.epochs is not None else '?'}",
                best,
                f"{test:.4f}" if isinstance(test, (int, float)) else "-",
                age(now - s.started) if s.started else "-",
                " ".join(s.overrides) or "-",
            ]
        )
    typer.echo(text_table(["run", "status", "epochs", "best", "test acc", "age", "overrides"], rows))
    if len(summaries) > limit:
        typer.echo(f"({len(summaries) - limit} older runs not shown; --limit N)")


class TableFormat(str, Enum):
    table = "table"
    csv = "csv"
    markdown = "markdown"
    json = "json"


@app.command()
@_user_errors
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
    from cifar_scratch import reports
    from cifar_scratch.runs import compare as comparing
    from cifar_scratch.runs.folder import RunFolder
    from cifar_scratch.sweeps import SweepFolder, load_spec

    runs = comparing.collect(paths)
    columns, rows = comparing.table(runs, group_seeds)
    if sort is not None:
        if sort not in columns:
            raise UsageError(f"--sort: no column {sort!r}; columns: {', '.join(columns)}")
        rows = comparing.sort_rows(rows, sort)
    typer.echo(comparing.render(columns, rows, fmt.value))
    sweep_dirs = [p for p in paths if (p / "spec.yaml").is_file() and (p / "jobs.jsonl").is_file()]
    panels = []
    if len(sweep_dirs) == 1:
        folder = SweepFolder(sweep_dirs[0])
        spec = load_spec(folder.spec_path)
        results = folder.results(spec, folder.jobs(spec))
        scored = [row for row in results if row.get(spec.metric.name) is not None]
        panels = [
            (key, spec.metric.name, [row[key] for row in scored], [row[spec.metric.name] for row in scored])
            for key in spec.parameters
            if len({json.dumps(row[key], default=str) for row in scored}) > 1  # a fixed value says nothing
        ]
    # One sweep's figure belongs in its folder; for other runs only where --figure says (never the current folder).
    target = figure or (sweep_dirs[0] / "compare.png" if len(sweep_dirs) == 1 else None)
    if target is None:
        return
    curves = list(zip(comparing.labels(runs), (RunFolder(run.path).read_history() for run in runs)))
    reports.plot_comparison(curves, target, panels)
    typer.echo(f"figure: {target}", err=fmt is not TableFormat.table)


@app.command()
@_user_errors
def predict(
    target: Path = typer.Argument(..., help="A run folder (uses checkpoints/best.npz) or a checkpoint file."),
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...; any size: resized and centre-cropped)."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="Classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    threads: Optional[int] = THREADS_OPTION,
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Top-k classes with their probabilities for image files, with a run's weights and normalisation."""
    from cifar_scratch.predict import predict_images

    with runtime.compute(threads):
        checkpoint, results = predict_images(target, images, top_k, engine and engine.value)
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "results": results}, indent=2))
        return
    for result in results:
        best = "  ".join(f"{p['class']} {p['probability']:.3f}" for p in result["predictions"])
        typer.echo(f"{result['image']}: {best}")


def main() -> None:
    """The console script. Signals are handled for the process's whole life, not only inside a
    command: one that comes while arguments are parsed or after the command's work is done ends
    the process with 130/143 and a line, never a traceback or a bare death by signal."""
    try:
        with signals.handled():
            try:
                app()
            except signals.Interrupted as exc:
                for line in _interruption_report(exc):
                    typer.echo(line, err=True)
                sys.exit(exc.exit_code)
    finally:
        # The work is done or reported; while the interpreter winds down, a late signal changes nothing.
        for sig in signals.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
