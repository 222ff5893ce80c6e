"""An exponential moving average of a model's weights, optionally as lookahead (airbench's form).

The average begins as a copy of the weights at step ``begin``: the first multiple of ``every`` at or
after ``start_step`` (step 0 by default; airbench starts after 3 epochs, once the early, fast-moving
weights are behind). From there, every ``every`` optimizer steps: ``average = d * average + (1 - d) *
weights`` for every parameter and buffer, with ``d = decay * min(1, step / warmup_steps) ** 3`` (a cubic
ramp, so early noisy weights are forgotten quickly). With ``lookahead`` the weights are then set to the
average, and again at the end of each epoch (dropping the steps since the last update, as airbench
does). Evaluation swaps the average in once it has begun (:meth:`WeightAverage.swapped_in`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


class WeightAverage:
    def __init__(
        self,
        state: dict[str, np.ndarray],
        decay: float,
        every: int = 1,
        warmup_steps: int = 0,
        lookahead: bool = False,
        start_step: int = 0,
    ):
        """``state``: the model's own arrays by name (``Module.state_dict()``), read and, with lookahead, written."""
        self.state, self.decay, self.every = state, decay, every
        self.warmup_steps, self.lookahead = warmup_steps, lookahead
        self.begin = -(-start_step // every) * every
        self.average = {name: value.copy() for name, value in state.items()}

    def decay_at(self, step: int) -> float:
        ramp = min(1.0, step / self.warmup_steps) ** 3 if self.warmup_steps else 1.0
        return self.decay * ramp

    def update(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based)."""
        if step % self.every or step < self.begin:
            return
        if step == self.begin:
            for name, weights in self.state.items():
                self.average[name][...] = weights
            return
        keep = self.decay_at(step)
        for name, weights in self.state.items():
            average = self.average[name]
            average *= keep
            average += (1.0 - keep) * weights
            if self.lookahead:
                weights[...] = average

    def end_epoch(self, step: int) -> None:
        """Call when an epoch ends after ``step`` steps: lookahead sets the weights to the average."""
        if self.lookahead and step >= self.begin:
            for name, weights in self.state.items():
                weights[...] = self.average[name]

    def swapped_in(self, step: int):
        """A context in which the model holds the averaged weights (its own ones before step ``begin``)."""
        return self._swapped() if step >= self.begin else contextlib.nullcontext()

    @contextlib.contextmanager
    def _swapped(self) -> Iterator[None]:
        saved = {name: value.copy() for name, value in self.state.items()}
        for name, value in self.state.items():
            value[...] = self.average[name]
        try:
            yield
        finally:
            for name, value in self.state.items():
                value[...] = saved[name]
