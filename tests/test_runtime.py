import ctypes.util
import functools
import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from cifar_scratch import runtime
from cifar_scratch.nn.fast import parallel


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
    with runtime.compute(None) as threads:
        assert threads.auto and 1 <= threads.count <= runtime.cores()
        assert parallel.workers() == threads.count


STAT = """cpu  500 0 100 900 0 0 0 0 0 0
cpu0 {user0} 3 {system0} 400 20 5 7 11 0 0
cpu1 {user1} 0 50 500 0 0 0 0 0 0
intr 12345
"""


def test_busy_seconds_reads_the_allowed_cpus_lines_of_proc_stat():
    text = STAT.format(user0=100, system0=40, user1=200)
    # cpu0: user 100 + nice 3 + system 40 + irq 5 + softirq 7 (idle, iowait and steal are not busy)
    assert runtime.busy_seconds(text, frozenset({0}), 100) == pytest.approx(1.55)
    assert runtime.busy_seconds(text, frozenset({0, 1}), 100) == pytest.approx(1.55 + 2.5)


def test_free_cpus_counts_what_other_processes_used():
    before = runtime.CpuSample(wall=10.0, busy=100.0, own=5.0)
    # 2 s: the CPUs were busy 3 s in all, 1 s of it this process's: others kept 1 CPU busy.
    assert runtime.free_cpus(before, runtime.CpuSample(12.0, 103.0, 6.0), 2) == pytest.approx(1.0)
    assert runtime.free_cpus(before, runtime.CpuSample(12.0, 104.0, 6.0), 2) == 0.5
    assert runtime.free_cpus(before, runtime.CpuSample(12.0, 109.0, 6.0), 2) == 0.0
    assert runtime.free_cpus(before, runtime.CpuSample(12.0, 101.0, 6.0), 2) == 2.0  # only this process


@pytest.mark.parametrize(
    ("free", "cpus", "threads"), [(2.0, 2, 2), (1.6, 2, 2), (1.4, 2, 1), (0.0, 2, 1), (7.7, 8, 8), (3.2, 8, 3)]
)
def test_threads_for_counts_a_cpu_that_others_keep_more_than_half_busy_as_taken(free, cpus, threads):
    assert runtime.threads_for(free, cpus) == threads


class FakeCpus:
    """Samples in which other processes keep ``others`` CPUs busy; time moves by ``step`` per sample."""

    def __init__(self, others: float, step: float = 3.0):
        self.others, self.step, self.wall, self.busy = others, step, 0.0, 0.0

    def __call__(self):
        self.wall += self.step
        self.busy += self.others * self.step
        return runtime.CpuSample(self.wall, self.busy, 0.0)


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(runtime, "cores", lambda: 2)
    monkeypatch.setattr(runtime.time, "monotonic", lambda: 1e9)  # every adjust() is due


def test_auto_threads_follow_the_machine_and_are_restored(two_cpus, monkeypatch):
    if not blas_threads():
        pytest.skip("no BLAS library reported by threadpoolctl")
    before, workers = blas_threads(), parallel.workers()
    machine = FakeCpus(others=0.0)
    monkeypatch.setattr(runtime, "_STARTED", None)
    monkeypatch.setattr(runtime, "Threads", functools.partial(runtime.Threads, sample=machine))
    with runtime.compute(None) as threads:
        assert threads.count == 2 and parallel.workers() == 2 and set(blas_threads()) == {2}
        machine.others = 1.5  # three more processes start
        threads.adjust()
        assert threads.count == 1 and parallel.workers() == 1 and set(blas_threads()) == {1}
        machine.others = 0.2  # they finished
        threads.adjust()
        assert threads.count == 2 and parallel.workers() == 2 and set(blas_threads()) == {2}
    assert blas_threads() == before and parallel.workers() == workers


def test_a_requested_thread_count_stays(two_cpus, monkeypatch):
    monkeypatch.setattr(runtime, "_STARTED", None)
    monkeypatch.setattr(runtime, "Threads", functools.partial(runtime.Threads, sample=FakeCpus(others=2.0)))
    with runtime.compute(2) as threads:
        threads.adjust()
        assert threads.count == 2 and not threads.auto and parallel.workers() == 2


@pytest.mark.slow
@pytest.mark.skipif(runtime.cpu_sample() is None, reason="no /proc/stat: the free CPUs cannot be measured here")
def test_busy_processes_on_every_cpu_leave_one_thread():
    """Measured, not faked: one busy-looping process per allowed CPU for a second."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(runtime.cores())]
    try:
        threads = runtime.Threads(None)
        time.sleep(1.5)
        assert threads._estimate() == 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_a_window_too_short_for_proc_stats_ticks_gives_no_estimate(two_cpus):
    threads = runtime.Threads(None, sample=FakeCpus(others=2.0, step=0.01))  # 10 ms: one tick
    assert threads.count == 2 and threads._estimate() is None
