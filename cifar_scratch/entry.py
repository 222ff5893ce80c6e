"""The console script's entry point: Ctrl-C and SIGTERM are handled from its first moment.

The command line imports NumPy, Typer, matplotlib and the engine before it can install its own
handlers (:func:`cifar_scratch.cli.main`), about a second in which a signal would otherwise end the
process silently (SIGTERM) or with a traceback from inside an import (Ctrl-C). Nothing has been
written by then, so the handler installed here says so and exits at once with 130/143.
"""

import os
import signal


def _while_starting(signum, frame) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"\ninterrupted by {name} while starting\nnothing was written\n".encode())
    os._exit(128 + signum)  # mid-import: no exception may surface from inside another module's import


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _while_starting)
    from cifar_scratch.cli import main as command_line  # the heavy imports; cli.main installs the real handlers

    command_line()
