"""The thread pool splits memory-bound kernels into blocks: results must not depend on the split."""

import warnings

import numpy as np
import pytest

from cifar_scratch.nn.fast import conv, parallel, winograd
from cifar_scratch.nn.fast import elementwise as F
from cifar_scratch.nn.fast.norm import batchnorm_backward, batchnorm_forward


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few hundred elements, so that test-sized arrays split into many of them."""
    monkeypatch.setattr(parallel, "BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(conv, "COLUMN_BLOCK", 2000)  # one image per block: units of two images
    monkeypatch.setattr(conv, "BLOCKS_PER_UNIT", 2)
    monkeypatch.setattr(winograd, "VALUES_PER_BLOCK", 4 * 49)  # one 9x9 image (4 tiles of F(5x5)) per block
    yield
    parallel.set_workers(1)


def _kernels(rng):
    x = rng.standard_normal((7, 9, 9, 5)).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    out = {}
    y, cache = F.gelu_forward(x)
    out["gelu"], out["gelu.dx"] = y, F.gelu_backward(d, cache)
    y, cache = F.relu_forward(x)
    out["relu"], out["relu.dx"] = y, F.relu_backward(d, cache)
    y, cache = F.gelu_erf_forward(x)
    out["gelu_erf"], out["gelu_erf.dx"] = y, F.gelu_backward(d, cache)
    mean, var = np.zeros(5, np.float32), np.ones(5, np.float32)
    y, cache = batchnorm_forward(x, np.full(5, 1.5, np.float32), np.full(5, 0.1, np.float32), mean, var, True)
    out["bn"], (out["bn.dx"], out["bn.dgamma"], out["bn.dbeta"]) = y, batchnorm_backward(d, cache)
    out["bn.eval"] = batchnorm_forward(x, None, None, mean, var, False)[0]
    y, cache = conv.maxpool_forward(x, 2)
    out["pool"], out["pool.dx"] = y, conv.maxpool_backward(rng.standard_normal(y.shape).astype(np.float32), cache)
    y, cache = conv.maxpool_forward(x, 3, 2)  # overlapping windows: accumulated, not written
    out["pool3"], out["pool3.dx"] = y, conv.maxpool_backward(np.ones(y.shape, np.float32), cache)
    for name, stride, padding, algorithm in (
        ("conv1", 1, "same", "im2col"),
        ("conv2", 2, "same", "im2col"),
        ("winograd", 1, "same", "winograd"),
        ("winograd.valid", 1, "valid", "winograd"),
    ):
        previous = conv.use_algorithm(algorithm)
        y, cache = conv.conv2d_forward(x, w, np.full(4, 0.5, np.float32), stride, padding)
        conv.use_algorithm(previous)
        assert cache[0] == ("winograd" if algorithm == "winograd" else "im2col")
        out[name] = y
        dy = rng.standard_normal(y.shape).astype(np.float32)
        out[f"{name}.dx"], out[f"{name}.dw"], out[f"{name}.db"] = conv.conv2d_backward(dy, cache)
    return out


@pytest.mark.parametrize("workers", [2, 3])
def test_kernels_give_the_same_bits_for_any_number_of_workers(small_blocks, workers):
    parallel.set_workers(1)
    serial = _kernels(np.random.default_rng(0))
    parallel.set_workers(workers)
    threaded = _kernels(np.random.default_rng(0))
    for name, value in serial.items():
        assert np.array_equal(value, threaded[name]), name


def test_blocked_convolution_matches_whole_batch_im2col(small_blocks):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 6, 7, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    dy = rng.standard_normal((5, 6, 7, 4))
    y, cache = conv.conv2d_forward(x, w, None, 1, "same")
    cols = conv.im2col(x, (3, 3), (1, 1), (1, 1), (6, 7)).reshape(-1, 27)
    assert np.allclose(y.reshape(-1, 4), cols @ w.reshape(27, 4), rtol=1e-12, atol=1e-12)
    _, dw, _ = conv.conv2d_backward(dy, cache)
    assert np.allclose(dw.reshape(27, 4), cols.T @ dy.reshape(-1, 4), rtol=1e-12, atol=1e-12)


def test_for_blocks_covers_every_index_once_and_reports_worker_errors(small_blocks):
    parallel.set_workers(2)
    seen = np.zeros(1001, int)

    def mark(block):
        seen[block] += 1

    parallel.for_blocks(mark, 1001, 7)
    assert (seen == 1).all()

    def fail(block):
        if block.start >= 500:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        parallel.for_blocks(fail, 1001, 7)


@pytest.mark.parametrize(
    "length, most, expected",
    [
        (128, 256, 32),  # cifar_cnn's 4x4-output layer: 4 blocks of tiles, not one on one core
        (1024, 256, 256),  # blocks enough: the largest
        (1000, 7, 7),
        (3, 10, 1),  # fewer images than parts: one each
    ],
)
def test_even_blocks_cut_small_work_into_at_least_min_parts(length, most, expected):
    assert parallel.even_blocks(length, most) == expected


@pytest.mark.parametrize(
    "length, block, per_unit, expected",
    [
        (128, 14, 8, (11, 32)),  # cifar_cnn's last 3x3 layer: 4 equal units, not 112 + 16 images
        (1024, 256, 4, (256, 256)),  # speedrun94's 3x3 outputs: 4 units of one block, not one unit of 4
        (1024, 16, 4, (16, 64)),  # blocks enough: units of blocks_per_unit full blocks, as before
        (3, 5, 4, (3, 3)),  # one block: one unit
    ],
)
def test_units_of_blocks_are_even_and_at_least_min_units(length, block, per_unit, expected):
    got = parallel.units_of_blocks(length, block, per_unit)
    assert got == expected
    block, unit = got
    sizes = [min(unit, length - start) for start in range(0, length, unit)]
    assert len(sizes) >= min(parallel.MIN_PARTS, -(-length // block)) and max(sizes) - min(sizes) < block


def test_set_workers_returns_the_previous_count():
    assert parallel.set_workers(3) == 1
    assert parallel.workers() == 3
    assert parallel.set_workers(1) == 3


def test_a_slow_worker_does_not_hold_up_the_blocks_the_others_can_take():
    """Workers claim blocks one at a time: while one sleeps on its first block, the other takes the rest
    (a fixed half-split would leave half of the blocks to the sleeping worker)."""
    import threading
    import time

    parallel.set_workers(2)
    try:
        done_by: dict[int, str] = {}
        started = threading.Event()

        def work(block: slice) -> None:
            if block.start == 0:
                started.set()
                time.sleep(0.3)  # a core taken by another process
            else:
                started.wait(5)
            done_by[block.start] = threading.current_thread().name

        parallel.for_blocks(work, 20, 1)
        assert sorted(done_by) == list(range(20))
        slow = done_by[0]
        assert [start for start, name in done_by.items() if name == slow] == [0]
    finally:
        parallel.set_workers(1)


def test_workers_keep_the_callers_floating_point_error_state(small_blocks):
    """A training loop that checks for NaN itself silences NumPy's warnings with np.errstate; the pool's
    threads must honour it as the calling thread does."""
    parallel.set_workers(2)
    huge = np.full((7, 9, 9, 5), 1e30, np.float32)  # GELU's x**3 overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning in any thread fails the test
        with np.errstate(over="ignore", invalid="ignore"):
            F.gelu_forward(huge)
        with np.errstate(over="raise"), pytest.raises(FloatingPointError):
            F.gelu_forward(huge)
