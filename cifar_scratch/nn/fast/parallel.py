"""Memory-bound kernel work split over a small thread pool, in cache-sized blocks.

BLAS spreads the GEMMs over every core, but the rest of a step (im2col copies, activations, batch
norm, pooling) is NumPy ufuncs and copies that run on one core. NumPy releases the GIL inside them,
so a few threads working on disjoint parts of the same arrays run in parallel. Each thread walks its
part in blocks of about half a megabyte, so a fused sequence of ufuncs (GELU is eight) reads its
input from memory once and keeps its temporaries in cache, instead of streaming the whole array
through memory once per ufunc. Every element is computed by the same operations whatever the split,
so results are bit-identical for any number of workers.

One pool per process, sized by :func:`cifar_scratch.runtime.compute` (``--threads``); with one
worker everything runs in the calling thread. What it gained: docs/engine.md, "Using every core".
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from threadpoolctl import ThreadpoolController

#: Elements per block: half of a 1 MB L2 cache in float32, leaving room for temporaries.
BLOCK_ELEMENTS = 1 << 17

_pool: ThreadPoolExecutor | None = None
_workers = 1


def set_workers(count: int) -> int:
    """Use ``count`` threads (1: no pool) from now on; -> the previous count."""
    global _pool, _workers
    previous, count = _workers, max(1, int(count))
    if count != _workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(count, thread_name_prefix="cifar-scratch") if count > 1 else None
        _workers = count
    return previous


@functools.cache
def blas():
    """The BLAS libraries loaded in this process (found once: the search reads every loaded library)."""
    return ThreadpoolController().select(user_api="blas")


def workers() -> int:
    return _workers


def for_blocks(work: Callable[[slice], None], length: int, block: int, single_threaded_blas: bool = False) -> None:
    """Call ``work(slice)`` over ``range(length)`` in blocks of ``block`` (at least 1; block k starts
    at k * block), each worker taking the next unclaimed block. ``work`` must write only its own slice
    of shared outputs. With ``single_threaded_blas`` the workers' GEMMs run on their own thread each
    (the pool, not BLAS, spreads them over the cores)."""
    block = max(1, block)
    blocks = math.ceil(length / block)
    if _pool is None or blocks < 2:
        for start in range(0, length, block):
            work(slice(start, min(start + block, length)))
        return
    if single_threaded_blas:
        with blas().limit(limits=1):
            _spread(work, length, block, blocks)
    else:
        _spread(work, length, block, blocks)


def _spread(work: Callable[[slice], None], length: int, block: int, blocks: int) -> None:
    # Each worker claims the next block when it finishes one, instead of a fixed share: on a shared
    # machine one core is often slowed by another process, and a fixed split would leave the other
    # idle until the slow share was done. Which worker computes a block never changes what it computes.
    claim = itertools.count()  # next() on a count is atomic under the GIL

    def take() -> None:
        for index in iter(claim.__next__, None):
            if index >= blocks:
                return
            start = index * block
            work(slice(start, min(start + block, length)))

    # Each worker runs in a copy of the caller's context, so the caller's np.errstate holds in it too.
    # Raise the first worker's exception here, after every worker has finished with the shared arrays.
    futures = [_pool.submit(contextvars.copy_context().run, take) for _ in range(min(_workers, blocks))]
    wait(futures)
    for future in futures:
        future.result()


#: The fewest parts that work of many GEMMs is cut into where it can be: blocks of images, and units
#: of a sum of partials. Fewer parts than workers leave a core idle (a batch of 128 at 4x4 outputs was
#: one block of Winograd tiles, on one core). A constant, not the worker count: the parts decide which
#: GEMM rows go together and how sums are grouped, so they must not change the bits.
MIN_PARTS = 4


def even_blocks(length: int, most: int) -> int:
    """Block size for work over ``range(length)``: at most ``most``, in at least :data:`MIN_PARTS`
    blocks where ``length`` allows, all of nearly one size."""
    blocks = max(math.ceil(length / max(1, most)), min(MIN_PARTS, length))
    return max(1, math.ceil(length / max(1, blocks)))


def units_of_blocks(length: int, block: int, blocks_per_unit: int) -> tuple[int, int]:
    """-> (block, unit): sizes for work over ``range(length)`` that sums one partial per unit of blocks
    of at most ``block``, at most ``blocks_per_unit`` blocks to a unit, in at least :data:`MIN_PARTS`
    units of equal size where there are blocks enough. Depends on the arguments only, so the sum's
    bits never depend on the number of workers."""
    block = max(1, block)
    blocks = math.ceil(length / block)
    units = max(math.ceil(blocks / blocks_per_unit), min(MIN_PARTS, blocks))
    unit = max(1, math.ceil(length / units))
    return math.ceil(unit / math.ceil(unit / block)), unit


def rows_per_block(row_elements: int) -> int:
    """How many rows of ``row_elements`` make one block."""
    return max(1, BLOCK_ELEMENTS // max(1, row_elements))
