import ctypes.util
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from cifar_scratch import runtime


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "c" not in (ctypes.util.find_library("c") or ""), reason="mallopt is glibc's"
)
def test_the_allocator_keeps_freed_memory_on_glibc():
    assert runtime.keep_freed_memory() is True
    # Large arrays still work and are reusable after the setting (served from the heap, not mmap).
    for _ in range(3):
        a = np.ones((64, 1 << 20), np.float32)
        assert float(a[-1, -1]) == 1.0
        del a


def test_compute_limits_blas_threads_for_its_duration():
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        pytest.skip("no BLAS library reported by threadpoolctl")
    before = [i["num_threads"] for i in blas]
    with runtime.compute(1):
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_cores_counts_the_cores_this_process_may_use():
    import os

    assert 1 <= runtime.cores() <= (os.cpu_count() or 1)
    with runtime.compute(None):
        from cifar_scratch.nn import parallel

        assert parallel.workers() == runtime.cores()
