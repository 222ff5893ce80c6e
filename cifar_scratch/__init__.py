"""cifar-scratch: neural networks written from scratch in NumPy, trained from YAML configs.

The Python API (:mod:`cifar_scratch.api`): ``train``, ``load_run``, ``build_model``, ``Run``, ``Callback``,
``lr_find``, ``report``.
"""

import os

# OpenBLAS's idle threads spin for 2**28 cycles (about 0.1 s) after each GEMM before they sleep,
# taking the cores that the engine's thread pool needs between GEMMs (cifar_scratch.nn.fast.parallel).
# 2**4 makes them sleep at once. Read when NumPy loads OpenBLAS, so it must be set before the first
# NumPy import; a value already in the environment wins. Measured in docs/measurements.md.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"

#: The Python API, imported on first use: ``import cifar_scratch`` stays light, so that the console
#: script can install its signal handlers before NumPy and the engine load (cifar_scratch.entry).
_API = ("train", "load_run", "build_model", "Run", "Callback", "config_of", "lr_find", "report")


def __getattr__(name: str):
    if name in _API:
        from cifar_scratch import api

        return getattr(api, name)
    raise AttributeError(f"module 'cifar_scratch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
