"""Process settings for the commands that compute (train, evaluate, gradcheck, benchmark, predict).

Two settings, each measured (docs/measurements.md, "Using every core" and "Runs sharing a machine"):

- Threads, for BLAS (through threadpoolctl) and the engine's pool for memory-bound work
  (:mod:`cifar_scratch.nn.fast.parallel`): ``--threads N`` or ``$CIFAR_SCRATCH_THREADS``; by default as
  many as other processes leave free of the CPUs this process may use (see :class:`Threads`).
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
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_scratch import __version__
from cifar_scratch.nn.fast import parallel

THREADS_ENV = "CIFAR_SCRATCH_THREADS"

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
    return len(_allowed_cpus())


def _allowed_cpus() -> frozenset[int]:
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuSample:
    """A moment's CPU counters: wall clock, busy seconds of the allowed CPUs (every process), this process's CPU seconds."""

    wall: float
    busy: float
    own: float


#: The busy fields of a /proc/stat CPU line: user, nice, system, irq, softirq (idle, iowait and steal are not busy;
#: guest time is already counted in user).
_BUSY_FIELDS = (0, 1, 2, 5, 6)


def busy_seconds(stat_text: str, cpus: frozenset[int], ticks_per_s: float) -> float:
    """Busy CPU seconds of ``cpus`` since boot, from the text of ``/proc/stat``."""
    ticks = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            fields = rest.split()
            ticks += sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
    return ticks / ticks_per_s


def cpu_sample() -> CpuSample | None:
    """The counters now; None where the system does not publish them (no /proc/stat: not Linux)."""
    try:
        text = Path("/proc/stat").read_text()
        ticks_per_s = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    return CpuSample(time.monotonic(), busy_seconds(text, _allowed_cpus(), ticks_per_s), time.process_time())


def free_cpus(before: CpuSample, after: CpuSample, cpus: int) -> float:
    """CPUs that other processes left free between two samples: ``cpus`` minus their average busy CPUs."""
    wall = after.wall - before.wall
    if wall <= 0:
        return float(cpus)
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall
    return max(0.0, cpus - others)


def threads_for(free: float, cpus: int) -> int:
    """Threads to use when ``free`` of ``cpus`` CPUs are free: the nearest whole number, at least 1.

    Fork-join work (a multithreaded GEMM, the pool's blocks) waits for its slowest thread, and a thread
    that shares its CPU with another process waits for the scheduler: on 2 CPUs beside 2 busy processes
    a 2-thread GEMM took 2 to 60 times as long as a 1-thread one (docs/measurements.md). So a CPU that
    other processes keep more than half busy is not counted.
    """
    return max(1, min(cpus, math.floor(free + 0.5)))


#: Seconds between two re-estimates of the free CPUs while a command computes.
ADJUST_EVERY_S = 2.0
#: The shortest window an estimate is made over.
MIN_WINDOW_S = 0.25
#: A command's first estimate is over its start-up: from this module's import (with the command's
#: other imports) to its first computation, if that is recent (a long-lived Python session's is not).
_STARTED = cpu_sample()
STARTUP_WINDOW_S = 60.0


class Threads:
    """The threads of a computing command, for BLAS and the engine's pool alike.

    ``requested`` (``--threads``, ``$CIFAR_SCRATCH_THREADS``) fixes the count. Without it the count
    follows the machine: as many threads as other processes leave CPUs free, estimated from
    ``/proc/stat`` over the time since the last estimate (the first one over the command's start-up),
    and estimated again by :meth:`adjust` (a training loop calls it after every step; it looks every
    ``ADJUST_EVERY_S`` seconds). Four runs started together on 2 CPUs thus run one thread each instead
    of eight threads fighting over two CPUs, and a run left alone takes both again. Results do not
    depend on the count: the kernels give the same bits for any number of threads (tests/nn/test_parallel.py).
    """

    def __init__(
        self, requested: int | None, sample: Callable[[], CpuSample | None] = cpu_sample, since: CpuSample | None = None
    ):
        """``since``: where the first estimate's window starts (default: now)."""
        self.requested, self.cpus, self._sample = requested, cores(), sample
        self._last = since or sample()
        self.count = requested or self._estimate() or self.cpus

    @property
    def auto(self) -> bool:
        return self.requested is None

    def _estimate(self) -> int | None:
        now = self._sample()
        # /proc/stat counts in ticks of 10 ms: a window much shorter than a quarter second measures noise.
        if now is None or self._last is None or now.wall - self._last.wall < MIN_WINDOW_S:
            return None
        before, self._last = self._last, now
        return threads_for(free_cpus(before, now, self.cpus), self.cpus)

    def adjust(self) -> None:
        """Re-estimate (at most every ``ADJUST_EVERY_S`` seconds) and apply a changed count. Call it only
        between computations: the pool and BLAS change size here."""
        if not self.auto or self._last is None or time.monotonic() - self._last.wall < ADJUST_EVERY_S:
            return
        count = self._estimate()
        if count is not None and count != self.count:
            self.count = count
            _apply(count)

    def describe(self) -> str:
        return f"{self.count} (auto, of {self.cpus} CPUs)" if self.auto else str(self.count)


def _apply(count: int) -> None:
    parallel.blas().limit(limits=count)
    parallel.set_workers(count)


@contextmanager
def compute(threads: int | None) -> Iterator[Threads]:
    """The settings above for the duration of a command; ``threads`` None: as many as are free."""
    keep_freed_memory()
    recent = _STARTED is not None and time.monotonic() - _STARTED.wall < STARTUP_WINDOW_S
    chosen = Threads(threads, since=_STARTED if recent else None)
    previous_workers = parallel.workers()
    previous_blas = parallel.blas().limit(limits=chosen.count)  # remembers the limits to restore
    parallel.set_workers(chosen.count)
    try:
        yield chosen
    finally:
        previous_blas.restore_original_limits()
        parallel.set_workers(previous_workers)


# --------------------------------------------------------------------------- what a timing ran on
def vector_isa(flags: set[str]) -> str:
    """The widest float vector instructions among a CPU's ``flags``: what sets its float32 peak."""
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "no AVX2"


def numpy_simd() -> str | None:
    """The widest SIMD target that NumPy's own loops (ufuncs, sorts; not BLAS) dispatch to here, e.g.
    "AVX512_ICL" or "X86_V3" (AVX2). ``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"``
    keeps them to AVX2 on an AVX-512 CPU, as ``OPENBLAS_CORETYPE=Haswell`` does for BLAS. None where
    this NumPy does not say (the tables are private: ``numpy.show_runtime`` reads the same ones)."""
    try:
        from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
    except ImportError:
        return None
    enabled = [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]  # narrowest first
    return (enabled or list(__cpu_baseline__) or [None])[-1]


def machine(threads: int | None = None) -> dict:
    """The facts every timing must name: the CPU model and vector instructions, the BLAS and the kernels
    it runs (``OPENBLAS_CORETYPE`` pins them, e.g. to Haswell's AVX2 ones on an AVX-512 CPU, which halves
    the GEMM peak), NumPy's own SIMD target (:func:`numpy_simd`), the threads, and versions.
    ``threads`` None: the engine pool's current count."""
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not flags:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    blas = parallel.blas().info()
    return {
        "cpu": model,
        "isa": vector_isa(flags) if flags else "unknown",
        "cores": cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_simd": numpy_simd(),
        "numpy_disabled_features": os.environ.get("NPY_DISABLE_CPU_FEATURES"),
        "blas": [
            f"{i['internal_api']} {i['version']} ({i['num_threads']} threads"
            + (f", {i['architecture']} kernels)" if i.get("architecture") else ")")
            for i in blas
        ],
        "blas_kernels": next((i["architecture"] for i in blas if i.get("architecture")), None),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "threads": threads if threads is not None else parallel.workers(),
        "cifar_scratch": __version__,
    }
