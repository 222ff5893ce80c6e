"""The ``cifar-scratch`` command line: thin commands over the Python API.

- :mod:`.app`: the Typer app and the exit policy every command shares (one ``error:`` line; exit 0, 1, 2, 130/143);
- :mod:`.options`: options that several commands share;
- :mod:`.console`: what the commands print (training progress, result tables), apart from what they compute;
- :mod:`.train`, :mod:`.inference`, :mod:`.diagnostics`, :mod:`.experiments`: the commands.
"""

import importlib

from cifar_scratch.cli.app import app, main

# Each module registers its commands when imported; --help lists them in this order.
for _module in ("train", "inference", "diagnostics", "experiments"):
    importlib.import_module(f"cifar_scratch.cli.{_module}")

__all__ = ["app", "main"]
