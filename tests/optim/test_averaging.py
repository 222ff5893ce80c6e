"""Weight averaging: the moving average, its cubic warm-up, lookahead, and swapping in for evaluation."""

import numpy as np
import pytest

from cifar_scratch.optim.averaging import WeightAverage


def test_average_updates_every_n_steps_with_a_cubic_ramp():
    weights = {"w": np.zeros(2, np.float32)}
    average = WeightAverage(weights, decay=0.5, every=2, warmup_steps=4)
    assert average.decay_at(2) == pytest.approx(0.5 * (2 / 4) ** 3) and average.decay_at(8) == 0.5
    weights["w"][...] = 1.0
    average.update(1)  # not a multiple of 2: nothing happens
    assert (average.average["w"] == 0).all()
    average.update(2)  # d = 0.0625: 0.0625 * 0 + 0.9375 * 1
    assert average.average["w"] == pytest.approx([0.9375, 0.9375])
    assert (weights["w"] == 1).all(), "without lookahead the weights are left alone"
    assert average.average["w"].dtype == np.float32


def test_lookahead_pulls_the_weights_and_swapping_restores_them():
    weights = {"w": np.zeros(1, np.float32)}
    average = WeightAverage(weights, decay=0.5, lookahead=True)
    weights["w"][...] = 4.0
    average.update(1)
    assert weights["w"][0] == 2.0 == average.average["w"][0]
    weights["w"][...] = 7.0
    with average.swapped_in():
        assert weights["w"][0] == 2.0
    assert weights["w"][0] == 7.0
