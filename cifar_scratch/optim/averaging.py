"""An exponential moving average of a model's weights, optionally as lookahead (airbench's form).

Every ``every`` optimizer steps: ``average = d * average + (1 - d) * weights`` for every parameter and
buffer, with ``d = decay * min(1, step / warmup_steps) ** 3`` (a cubic ramp, so early noisy weights are
forgotten quickly); with ``lookahead`` the weights are then set to the average. Evaluation swaps the
average in (:meth:`WeightAverage.swapped_in`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class WeightAverage:
    def __init__(
        self, state: dict[str, np.ndarray], decay: float, every: int = 1, warmup_steps: int = 0, lookahead: bool = False
    ):
        """``state``: the model's own arrays by name (``Module.state_dict()``), read and, with lookahead, written."""
        self.state, self.decay, self.every = state, decay, every
        self.warmup_steps, self.lookahead = warmup_steps, lookahead
        self.average = {name: value.copy() for name, value in state.items()}

    def decay_at(self, step: int) -> float:
        ramp = min(1.0, step / self.warmup_steps) ** 3 if self.warmup_steps else 1.0
        return self.decay * ramp

    def update(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based)."""
        if step % self.every:
            return
        keep = self.decay_at(step)
        for name, weights in self.state.items():
            average = self.average[name]
            average *= keep
            average += (1.0 - keep) * weights
            if self.lookahead:
                weights[...] = average

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own ones again after it."""
        saved = {name: value.copy() for name, value in self.state.items()}
        for name, value in self.state.items():
            value[...] = self.average[name]
        try:
            yield
        finally:
            for name, value in self.state.items():
                value[...] = saved[name]
