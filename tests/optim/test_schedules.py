"""Learning-rate schedules against hand-computed values."""

import math

import pytest

from cifar_scratch.config import (
    ConstantSchedule,
    CosineSchedule,
    CyclicSchedule,
    ExponentialSchedule,
    OneCycleSchedule,
    PlateauSchedule,
    StepSchedule,
)
from cifar_scratch.optim.schedules import Schedule


def make(spec, base_lr, steps_per_epoch, epochs) -> Schedule:
    """The engine's schedule with the options (and defaults) of a config section."""
    return Schedule(spec.name, base_lr, steps_per_epoch, epochs, **spec.model_dump(exclude={"name"}))


def test_constant_with_warmup():
    s = make(ConstantSchedule(name="constant", warmup_epochs=1), 0.1, steps_per_epoch=4, epochs=3)
    assert [s.lr_at(i) for i in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_step_and_exponential_are_per_epoch():
    s = make(StepSchedule(name="step", step_epochs=2, gamma=0.5), 1.0, steps_per_epoch=3, epochs=6)
    assert [s.lr_at(e * 3) for e in range(6)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    assert s.lr_at(5) == 1.0
    e = make(ExponentialSchedule(name="exponential", gamma=0.9), 1.0, steps_per_epoch=2, epochs=3)
    assert [e.lr_at(i) for i in range(6)] == pytest.approx([1, 1, 0.9, 0.9, 0.81, 0.81])


def test_cosine_endpoints_and_midpoint():
    s = make(CosineSchedule(name="cosine", min_lr=0.01), 0.11, steps_per_epoch=10, epochs=10)
    assert s.lr_at(0) == pytest.approx(0.11)
    assert s.lr_at(50) == pytest.approx(0.06)
    assert s.lr_at(100) == pytest.approx(0.01)


def test_cosine_after_warmup_starts_at_peak():
    s = make(CosineSchedule(name="cosine", warmup_epochs=2), 0.1, steps_per_epoch=5, epochs=12)
    assert s.lr_at(0) == pytest.approx(0.01)
    assert s.lr_at(9) == pytest.approx(0.1)
    assert s.lr_at(10) == pytest.approx(0.1)
    assert s.lr_at(35) == pytest.approx(0.05)


def test_one_cycle():
    s = make(OneCycleSchedule(name="onecycle", pct_start=0.25, div_factor=10, final_div_factor=100), 1.0, 10, 10)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(24) == pytest.approx(1.0)  # peak at pct_start * total - 1
    assert s.lr_at(99) == pytest.approx(0.001)
    assert max(s.lr_at(i) for i in range(100)) == pytest.approx(1.0)


def test_cyclic_triangles_grow_and_decay():
    spec = CyclicSchedule(name="cyclic", base_lr=0.0, step_epochs=1, step_growth=2.0, decay=0.5)
    s = make(spec, 1.0, steps_per_epoch=2, epochs=20)
    # cycle 0: half-length 2 steps, peak 1.0
    assert [s.lr_at(i) for i in range(4)] == pytest.approx([0.0, 0.5, 1.0, 0.5])
    # cycle 1: half-length 4 steps, peak 0.5
    assert [s.lr_at(i) for i in range(4, 12)] == pytest.approx([0, 0.125, 0.25, 0.375, 0.5, 0.375, 0.25, 0.125])
    assert s.lr_at(12) == pytest.approx(0.0)


def test_plateau_reduces_after_patience_and_keeps_state():
    spec = PlateauSchedule(name="plateau", factor=0.5, patience=1, min_lr=0.2)
    s = make(spec, 1.0, 5, 10)
    for loss in (1.0, 0.9, 0.95, 0.95):
        s.end_epoch({"val_loss": loss})
    assert s.lr_at(0) == pytest.approx(0.5)
    for loss in (0.95, 0.95, 0.95, 0.95):
        s.end_epoch({"val_loss": loss})
    assert s.lr_at(0) == pytest.approx(0.2)  # floored at min_lr
    restored = make(spec, 1.0, 5, 10)
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(3) == s.lr_at(3)


def test_plateau_on_accuracy_maximises():
    s = make(PlateauSchedule(name="plateau", monitor="val_accuracy", factor=0.1, patience=0), 1.0, 5, 10)
    s.end_epoch({"val_accuracy": 0.5})
    s.end_epoch({"val_accuracy": 0.6})
    assert s.lr_at(0) == 1.0
    s.end_epoch({"val_accuracy": 0.55})
    assert math.isclose(s.lr_at(0), 0.1)


def test_a_half_cycle_shorter_than_a_step_is_a_config_error_not_a_hang():
    from cifar_scratch.builders import build_schedule
    from cifar_scratch.config import build_config
    from cifar_scratch.errors import ConfigError

    config = build_config(
        {"model": {"layers": ["flatten", {"type": "dense"}]}, "schedule": {"name": "cyclic", "step_epochs": 1e-300}}
    )
    with pytest.raises(ConfigError, match="schedule.step_epochs: must last at least one step"):
        build_schedule(config, steps_per_epoch=100)


def test_cyclic_rate_costs_the_same_at_any_step():
    """Closed form: step 10**9 of a 1-step half-cycle is as quick as step 1 (the old loop walked every cycle)."""
    s = make(CyclicSchedule(name="cyclic", base_lr=0.0, step_epochs=1, step_growth=1.0), 1.0, steps_per_epoch=1, epochs=10)
    assert s.lr_at(10**9) == 0.0 and s.lr_at(10**9 + 1) == 1.0


def test_piecewise_runs_straight_between_points_and_flat_beyond():
    from cifar_scratch.config import PiecewiseSchedule

    s = make(PiecewiseSchedule(name="piecewise", points=[[0, 0.2], [2.5, 1.0], [10, 0.0]]), 0.4, steps_per_epoch=4, epochs=12)
    assert s.lr_at(0) == pytest.approx(0.08) and s.lr_at(5) == pytest.approx(0.24) and s.lr_at(10) == pytest.approx(0.4)
    assert s.lr_at(25) == pytest.approx(0.4 * (1 - 3.75 / 7.5)) and s.lr_at(40) == 0.0 and s.lr_at(47) == 0.0
