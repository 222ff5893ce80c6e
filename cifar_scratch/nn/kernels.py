"""Which kernels the layers run: ``fast`` (the default) or ``reference`` (``--engine reference``).

Both engines are namespaces of the same functions with the same signatures:
:mod:`cifar_scratch.nn.reference` (the math, readable) and :mod:`cifar_scratch.nn.fast` (the same
results, faster). Layers look the engine up at every forward pass (:func:`active`) and keep it with
their cache for the backward pass, so a cache is always read by the kernel that wrote it. The fast
engine also chooses how to compute stride-1 3x3 convolutions (:data:`CONV_ALGORITHMS`); the reference
always convolves directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from cifar_scratch.nn import fast, reference
from cifar_scratch.nn.fast import conv

#: im2col, winograd or auto: how the fast engine computes stride-1 3x3 convolutions ('same' or 'valid').
CONV_ALGORITHMS = conv.ALGORITHMS

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
def using(name: str, conv_algorithm: str | None = None) -> Iterator[None]:
    """The kernels of engine ``name`` for the duration of a block; with ``conv_algorithm`` (one of
    :data:`CONV_ALGORITHMS`), the fast engine's stride-1 3x3 convolutions by that algorithm too."""
    previous = use(name)
    previous_algorithm = conv.use_algorithm(conv_algorithm) if conv_algorithm is not None else None
    try:
        yield
    finally:
        use(previous)
        if previous_algorithm is not None:
            conv.use_algorithm(previous_algorithm)
