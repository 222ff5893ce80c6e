"""Weight averaging: the moving average, its cubic warm-up, a late start, lookahead, and swapping in for evaluation."""

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
    with average.swapped_in(step=1):
        assert weights["w"][0] == 2.0
    assert weights["w"][0] == 7.0


def test_a_late_start_copies_the_weights_then_averages_and_evaluation_waits_for_it():
    weights = {"w": np.zeros(1, np.float32)}
    average = WeightAverage(weights, decay=0.5, every=5, lookahead=True, start_step=7)
    assert average.begin == 10, "the first multiple of every at or after the start"
    weights["w"][...] = 3.0
    average.update(5)  # before the start: no averaging, no lookahead
    assert average.average["w"][0] == 0.0 and weights["w"][0] == 3.0
    with average.swapped_in(step=9):
        assert weights["w"][0] == 3.0, "evaluation uses the model's own weights until the average begins"
    average.end_epoch(9)
    assert weights["w"][0] == 3.0, "nor does an epoch's end pull them"
    average.update(10)  # begins: a copy, not a blend with the initial weights
    assert average.average["w"][0] == 3.0
    weights["w"][...] = 5.0
    average.update(15)
    assert weights["w"][0] == 4.0 == average.average["w"][0]


def test_lookahead_sets_the_weights_to_the_average_at_an_epoch_end():
    weights = {"w": np.zeros(1, np.float32)}
    average = WeightAverage(weights, decay=0.5, every=5, lookahead=True)
    weights["w"][...] = 4.0
    average.update(5)
    weights["w"][...] = 9.0  # steps 6-7: not averaged yet
    average.end_epoch(7)
    assert weights["w"][0] == 2.0, "the steps since the last update are dropped, as airbench does"
    plain = WeightAverage({"w": np.full(1, 9.0, np.float32)}, decay=0.5)
    plain.end_epoch(7)
    assert plain.state["w"][0] == 9.0, "without lookahead the weights are left alone"
