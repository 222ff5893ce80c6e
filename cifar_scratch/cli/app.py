"""The Typer app and the exit policy every command shares.

Exit codes: 0 success, 1 runtime problem (data, checkpoint, disk), 2 bad config or usage,
130/143 interrupted by SIGINT/SIGTERM after saving a checkpoint. Every error is one ``error:`` line.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import typer
from typer.core import TyperGroup

from cifar_scratch import __version__, signals
from cifar_scratch.errors import UserError
from cifar_scratch.training.checkpoint import load_checkpoint, read_metadata

#: Set to 1 to see the traceback of an internal error instead of its one line.
DEBUG_ENV = "CIFAR_SCRATCH_DEBUG"


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


def command(function):
    """Register ``function`` as a command whose every way of stopping is what the README promises:
    one ``error:`` line and exit 1/2 for problems the user can fix, 130/143 and a message for
    SIGINT/SIGTERM, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            with signals.handled():
                return function(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except signals.Interrupted as exc:
            for line in interruption_report(exc):
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

    return app.command()(wrapper)


def interruption_report(exc: signals.Interrupted) -> list[str]:
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


def main() -> None:
    """The console script. Signals are handled for the process's whole life, not only inside a
    command: one that comes while arguments are parsed or after the command's work is done ends
    the process with 130/143 and a line, never a traceback or a bare death by signal."""
    try:
        with signals.handled():
            try:
                app()
            except signals.Interrupted as exc:
                for line in interruption_report(exc):
                    typer.echo(line, err=True)
                sys.exit(exc.exit_code)
    finally:
        # The work is done or reported; while the interpreter winds down, a late signal changes nothing.
        for sig in signals.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
