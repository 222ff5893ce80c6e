"""Which kernels the layers run: ``fast`` (the default) or ``reference`` (``--engine reference``).

Both engines are namespaces of the same functions with the same signatures:
:mod:`cifar_scratch.nn.reference` (the math, readable) and :mod:`cifar_scratch.nn.fast` (the same
results, faster). Layers look the engine up at every forward pass (:func:`active`) and keep it with
their cache for the backward pass, so a cache is always read by the kernel that wrote it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from cifar_scratch.nn import fast, reference

ENGINES: dict[str, ModuleType] = {"fast": fast, "reference": reference}
#: Every kernel of an engine: what a layer may call.
KERNELS = tuple(fast.__all__)

_active: ModuleType = fast


def active() -> ModuleType:
    """The engine in use: a namespace with every name in :data:`KERNELS`."""
    return _active


def engine() -> str:
    return next(name for name, module in ENGINES.items() if module is _active)


def use(name: str) -> str:
    """Run the kernels of engine ``name`` from now on; -> the previous engine's name."""
    global _active
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")
    previous, _active = engine(), ENGINES[name]
    return previous


@contextmanager
def using(name: str) -> Iterator[None]:
    """The kernels of engine ``name`` for the duration of a block."""
    previous = use(name)
    try:
        yield
    finally:
        use(previous)
