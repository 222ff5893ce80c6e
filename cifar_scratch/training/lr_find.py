"""The learning-rate range test (Smith, 2017; fastai's and Lightning's ``lr_find``): train from the
config's initial weights while the learning rate grows exponentially, step by step, from ``start_lr``
to ``end_lr``, and watch the loss. It falls slowly while the rate is too small, fast in the useful
range, and blows up past it; the suggestion is the rate where the smoothed loss falls fastest.

The ramp sets the optimizer's base rate, so parameter groups keep their ``lr_scale`` and Muon its
``fallback_lr / lr`` ratio. Everything else is the config's: model, initialisation, batches,
augmentation, seed; the same config gives the same curve. Results go into a folder of their own
(``lr_find.json``, ``lr_find.png``), never into a run folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cifar_scratch import reports
from cifar_scratch.config import RunConfig, dump_config
from cifar_scratch.data import load_dataset
from cifar_scratch.fileio import atomic_write_json, atomic_write_text
from cifar_scratch.nn import kernels
from cifar_scratch.training.run import assemble
from cifar_scratch.training.trainer import Trainer

#: Smoothing of the loss: an exponential moving average with this weight on the past, bias-corrected (fastai).
BETA = 0.98
#: Points at the start of the curve the suggestion skips: the average is still settling there (Lightning: 10).
SKIP_START = 10


@dataclass
class LRFindResult:
    folder: Path
    lrs: list[float]  # the rate of each step taken
    losses: list[float]  # the training loss of each step
    smoothed: list[float]
    suggestion: float | None  # None when the curve never fell
    lowest: float | None  # the rate of the smoothed loss's lowest point (a tenth of it: fastai's older rule)
    stop_reason: str
    settings: dict

    def suggested_overrides(self, config: RunConfig) -> list[str]:
        """``optimizer.lr=…`` (and Muon's ``fallback_lr``, which keeps its ratio to lr)."""
        if self.suggestion is None:
            return []
        overrides = [f"optimizer.lr={self.suggestion:.3g}"]
        fallback = getattr(config.optimizer, "fallback_lr", None)
        if fallback is not None:
            overrides.append(f"optimizer.fallback_lr={self.suggestion * fallback / config.optimizer.lr:.3g}")
        return overrides


def suggest(lrs: list[float], smoothed: list[float], skip_start: int = SKIP_START) -> float | None:
    """The rate where the smoothed loss falls fastest against log(rate) (Lightning's steepest point), among
    the points after the first ``skip_start`` and before the loss's lowest point; None if it never falls."""
    values = np.asarray(smoothed, dtype=np.float64)
    if len(values) < skip_start + 3 or not np.isfinite(values).any():
        return None
    lowest = int(np.nanargmin(values))
    if lowest <= skip_start + 1:
        return None
    window = slice(skip_start, lowest + 1)
    slopes = np.gradient(values[window], np.log(np.asarray(lrs[window], dtype=np.float64)))
    steepest = int(np.argmin(slopes))
    return float(lrs[skip_start + steepest]) if slopes[steepest] < 0 else None


def lr_find(
    config: RunConfig,
    data_dir: Path,
    folder: Path,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    diverge: float = 4.0,
    progress: bool = True,
    on_step: Callable[[int, float, float], None] = lambda step, lr, loss: None,
) -> LRFindResult:
    """Run the range test for ``config`` and write ``lr_find.json`` and ``lr_find.png`` into ``folder``
    (created). Stops after ``steps`` steps, or once the smoothed loss exceeds ``diverge`` times its
    lowest value or a loss is not finite. ``on_step(step, lr, loss)`` follows it. The rates are checked by
    its callers (:func:`cifar_scratch.api.lr_find`, the command), which say what was wrong in their own terms."""
    # No layer health, no checkpoints: the trainer only takes steps here.
    config = config.model_copy(update={"output": config.output.model_copy(update={"health": False})})
    dataset = load_dataset(config.data, data_dir, progress)
    trainer = Trainer(config, assemble(config, dataset), folder, [])
    batch = config.training.batch_size
    lrs, losses, smoothed, average = [], [], [], 0.0
    stop_reason = f"the ramp ended at {end_lr:g}"
    order = np.empty(0, dtype=np.int64)
    started = time.perf_counter()
    with (
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        kernels.using(config.training.engine, config.training.conv_algorithm),
    ):
        for step in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (step / max(1, steps - 1))
            position = (step % trainer.steps_per_epoch) * batch
            if position == 0:  # a new pass over the training split, shuffled by the run's generator
                order = trainer.rng.permutation(len(trainer.dataset.train))
                trainer.state.epoch = step // trainer.steps_per_epoch
            loss = float(trainer._step(order[position : position + batch], lr)[0])
            lrs.append(lr)
            losses.append(loss)
            on_step(step, lr, loss)
            if not math.isfinite(loss):
                stop_reason = f"the loss became {loss} at lr {lr:.3g}"
                break
            average = BETA * average + (1 - BETA) * loss
            smoothed.append(average / (1 - BETA ** (step + 1)))  # bias-corrected: the first steps are not pulled to 0
            if step > SKIP_START and smoothed[-1] > diverge * min(smoothed):
                stop_reason = f"the smoothed loss passed {diverge:g}x its lowest at lr {lr:.3g}"
                break
    finite = len(smoothed)
    suggestion = suggest(lrs[:finite], smoothed)
    settings = {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "steps": steps,
        "diverge": diverge,
        "batch_size": batch,
        "seed": config.training.seed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    lowest = float(lrs[int(np.argmin(smoothed))]) if smoothed else None
    result = LRFindResult(folder, lrs, losses, smoothed, suggestion, lowest, stop_reason, settings)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", dump_config(config))
    atomic_write_json(
        folder / "lr_find.json",
        {**asdict(result), "folder": str(folder), "suggested_overrides": result.suggested_overrides(config)},
    )
    reports.plot_lr_find(lrs[:finite], losses[:finite], smoothed, suggestion, folder / "lr_find.png", config.name)
    return result
