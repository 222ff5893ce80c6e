"""Process settings for the commands that compute (train, evaluate, gradcheck, benchmark).

Three settings, each measured (docs/measurements.md, "Using every core"):

- BLAS threads, through threadpoolctl (``--threads``; default: every core).
- As many workers in the engine's pool for memory-bound work (:mod:`cifar_scratch.nn.parallel`).
- glibc's allocator keeps freed memory instead of giving it back to the kernel. By default every
  array over 128 KB-32 MB is its own ``mmap``, returned with ``munmap`` when freed, so each step's
  activations (up to 250 MB apiece at batch 1024) arrive as fresh pages that the kernel must fault in
  and zero: a third of the CPU time of a speedrun93 step went to the kernel (45 s of 182 s). With
  mmap off and trimming off, freed blocks are reused from the heap: the step took 1.44x less time.
  The cost is that the process keeps its peak heap resident until it exits, which a training
  command would reach again at the next step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

from cifar_scratch.nn import parallel

# mallopt parameters from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large arrays from its heap and never trim it. Once per process;
    -> whether it applied (False on other C libraries, which keep their own policy)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(
        mallopt(param, value) == 1 for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))
    )


def cores() -> int:
    """Cores this process may run on (its CPU affinity, as a container or ``taskset`` sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def compute(threads: int | None) -> Iterator[None]:
    """The settings above for the duration of a command; ``threads`` None means every core."""
    keep_freed_memory()
    previous = parallel.set_workers(threads or cores())
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        parallel.set_workers(previous)
