"""Learning-rate schedules as functions of the global step.

Every schedule but ``plateau`` is a pure function ``lr_at(step)``, so resuming at any step gives
the same rate. ``plateau`` also reacts to a validation metric at each epoch end and keeps a
small state (``state_dict``) that is saved in checkpoints.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

NAMES = ("constant", "step", "exponential", "cosine", "onecycle", "cyclic", "plateau", "piecewise")


class Schedule:
    """``Schedule("cosine", 0.1, steps_per_epoch=100, epochs=10, min_lr=0.0, warmup_epochs=1)``: the
    options are those of the schedule's config section (see the README's config reference)."""

    def __init__(self, name: str, lr: float, steps_per_epoch: int, epochs: int, /, **options) -> None:
        if name not in NAMES:
            raise ValueError(f"unknown schedule {name!r}")
        self.spec = SimpleNamespace(name=name, **options)
        self.base_lr = lr  # the peak; the cyclic schedule's own base_lr option is its bottom
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = max(1, steps_per_epoch * epochs)
        self.warmup_steps = round(options.get("warmup_epochs", 0.0) * steps_per_epoch)
        self.scale = 1.0  # plateau reductions multiply this
        self.best: float | None = None
        self.bad_epochs = 0

    def lr_at(self, step: int) -> float:
        """Learning rate for global step ``step`` (0-based)."""
        lr = self._shape(step) * self.scale
        if step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return lr

    def _shape(self, step: int) -> float:
        spec, base = self.spec, self.base_lr
        epoch = step // self.steps_per_epoch
        if spec.name in ("constant", "plateau"):
            return base
        if spec.name == "step":
            return base * spec.gamma ** (epoch // spec.step_epochs)
        if spec.name == "exponential":
            return base * spec.gamma**epoch
        if spec.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0, step - self.warmup_steps) / span)
            return spec.min_lr + (base - spec.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if spec.name == "onecycle":
            return self._one_cycle(step)
        if spec.name == "piecewise":  # straight lines between (epoch, multiplier) points, flat beyond the ends
            epochs, multipliers = zip(*spec.points)
            return base * float(np.interp(step / self.steps_per_epoch, epochs, multipliers))
        return self._cyclic(step)

    def _one_cycle(self, step: int) -> float:
        """Cosine up from lr/div_factor to lr over pct_start of the steps, then cosine down (PyTorch's OneCycleLR)."""
        spec = self.spec
        start = self.base_lr / spec.div_factor
        end = start / spec.final_div_factor
        peak_step = max(1.0, spec.pct_start * self.total_steps - 1)
        if step <= peak_step:
            low, high, progress = start, self.base_lr, step / peak_step
        else:
            low, high = self.base_lr, end
            progress = min(1.0, (step - peak_step) / max(1.0, self.total_steps - 1 - peak_step))
        return high + (low - high) * 0.5 * (1 + math.cos(math.pi * progress))

    def _cyclic(self, step: int) -> float:
        """Triangles from base_lr up to the peak and back. Cycle c lasts 2 * h0 * step_growth**c steps
        and peaks at base_lr + (lr - base_lr) * decay**c: longer, gentler cycles as training settles.

        The cycle is found in closed form (a geometric series), so the cost does not grow with the step.
        """
        spec = self.spec
        first_half = spec.step_epochs * self.steps_per_epoch
        growth = spec.step_growth
        if growth == 1.0:
            cycle = math.floor(step / (2 * first_half))
        else:  # cycles 0..c-1 span 2 h0 (g^c - 1) / (g - 1) steps
            cycle = math.floor(math.log1p(step * (growth - 1) / (2 * first_half)) / math.log(growth))
        start = 2 * first_half * (cycle if growth == 1.0 else (growth**cycle - 1) / (growth - 1))
        half = first_half * growth**cycle
        position = min(max(step - start, 0.0), 2 * half)  # guards the last ulp of the log
        amplitude = (self.base_lr - spec.base_lr) * spec.decay**cycle
        return spec.base_lr + amplitude * (1.0 - abs(position / half - 1.0))

    # ------------------------------------------------------------ plateau
    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Feed the epoch's metrics; ``plateau`` reduces its rate after ``patience`` epochs without improvement."""
        spec = self.spec
        if spec.name != "plateau":
            return
        value = metrics[spec.monitor]
        sign = 1.0 if spec.monitor == "val_loss" else -1.0  # minimise loss, maximise accuracy
        if self.best is None or sign * value < sign * self.best - spec.threshold * abs(self.best):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > spec.patience:
            self.scale = max(self.scale * spec.factor, spec.min_lr / self.base_lr)
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]
