"""TensorBoard event files of a run (``output.tensorboard``), written with tensorboardX (the tensorboard
extra): ``tensorboard --logdir runs/`` shows every run, and a sweep's HParams view its jobs.

What a run writes into ``<run>/tensorboard/``:

- per step: ``loss/step`` (the loss trained on) and ``lr/step``, at the step's index (0-based);
- per epoch, at the number of steps taken by its end: ``loss/train``, ``loss/val``, ``accuracy/train``,
  ``accuracy/val``, ``lr/epoch``, ``grad_norm/epoch``, ``time/epoch_s``, and per layer the health figures
  (``health/<figure>/<layer>``);
- every ``output.histogram_every`` epochs: a histogram of every weight and gradient;
- at the start, the model summary and the resolved config as text; at the end, ``final/<metric>`` for
  every figure of metrics.json.

A resumed run appends, without duplicates: everything is flushed to disk whenever ``last.npz`` is
written, so what was logged before a checkpoint is on disk, and a resumed run opens its writer with
``purge_step`` at the checkpoint's step, which hides from TensorBoard everything the stopped session
logged from there on; the one thing logged at that step before the checkpoint (the closing epoch's
figures, when it stopped between epochs) is logged again.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from cifar_scratch.errors import UsageError
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.training.trainer import Callback, Trainer

#: history.csv's columns and their TensorBoard tags.
EPOCH_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "lr": "lr/epoch",
    "grad_norm": "grad_norm/epoch",
    "epoch_time": "time/epoch_s",
}
HEALTH_FIGURES = ("act_mean", "act_std", "dead_fraction", "grad_norm", "update_ratio")
EXTRA = "pip install 'cifar-scratch[tensorboard]' (or pip install tensorboardX)"


def require_tensorboardx(where: str) -> None:
    """A clear usage error, before anything runs, when tensorboardX is not installed."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise UsageError(f"{where}: TensorBoard logging needs tensorboardX: {EXTRA}")


class TensorBoardLogger(Callback):
    """Logs a run into its folder's ``tensorboard/`` (see the module's docstring)."""

    def __init__(self, histogram_every: int = 5):
        self.histogram_every = histogram_every
        self.writer = None

    def on_train_start(self, trainer: Trainer) -> None:
        from tensorboardX import SummaryWriter

        s = trainer.state
        logdir = RunFolder(trainer.run_dir).tensorboard
        self.writer = SummaryWriter(logdir=str(logdir), purge_step=s.step if s.step else None, flush_secs=60)
        if s.step == 0:
            self.writer.add_text("model", _code(trainer.model.summary()), 0)
            config_file = RunFolder(trainer.run_dir).config
            if config_file.exists():
                self.writer.add_text("config", _code(config_file.read_text(encoding="utf-8")), 0)
        elif s.batch_in_epoch == 0 and s.history:  # stopped between epochs: the closing epoch's figures were purged
            self._epoch(trainer, s.history[-1])

    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None:
        step = trainer.state.step - 1
        self.writer.add_scalar("loss/step", loss, step)
        self.writer.add_scalar("lr/step", trainer.state.lrs[-1], step)

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        self._epoch(trainer, row)
        if row["epoch"] % self.histogram_every == 0:
            step = trainer.state.step
            grads = trainer.model.grads
            for name, value in trainer.model.params.items():
                if np.isfinite(value).all():
                    self.writer.add_histogram(f"weights/{name}", value, step)
                grad = grads.get(name)
                if grad is not None and np.isfinite(grad).all():
                    self.writer.add_histogram(f"gradients/{name}", grad, step)

    def _epoch(self, trainer: Trainer, row: dict) -> None:
        step = trainer.state.step
        for key, tag in EPOCH_TAGS.items():
            _scalar(self.writer, tag, row.get(key), step)
        if trainer.health is not None:
            # each epoch appends one row per layer: the closing epoch's are the last ones, not a search of all
            for health_row in trainer.health.rows[-len(trainer.health.layers) :]:
                if health_row["epoch"] == row["epoch"]:
                    for figure in HEALTH_FIGURES:
                        _scalar(self.writer, f"health/{figure}/{health_row['layer']}", health_row[figure], step)

    def on_checkpoint(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.flush()

    def on_metrics(self, trainer: Trainer, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            _scalar(self.writer, f"final/{key}", value, trainer.state.step)
        self.writer.close()
        self.writer = None


def _scalar(writer, tag: str, value, step: int) -> None:
    """A figure (a number, not a flag), finite ones only: TensorBoard draws no gap for NaN."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        writer.add_scalar(tag, value, step)


def _code(text: str) -> str:
    """Plain text as TensorBoard's markdown shows it unchanged: a code block."""
    return "\n".join("    " + line for line in text.splitlines())


#: The figures of a sweep's results.csv that the HParams view shows beside the sweep's metric.
HPARAM_METRICS = ("val_accuracy", "test_accuracy", "test_accuracy_tta", "best_epoch", "train_time_s")


def write_hparams(logdir: Path, rows: list[dict], parameters: list[str], metric: str) -> int:
    """One HParams session per completed job of a sweep (``results.csv``'s ``rows``), in ``logdir/job<N>``:
    its swept ``parameters`` and final figures (``metric`` first), for TensorBoard's HParams view.
    A job is written once (a folder already there is its session); -> the sessions written now."""
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams

    written = 0
    for row in rows:
        folder = Path(logdir) / f"job{row['job']}"
        if row.get("status") != "completed" or folder.exists():
            continue
        values = {key: _hparam_value(row.get(key)) for key in parameters}
        figures = {
            key: float(row[key])
            for key in dict.fromkeys([metric, *HPARAM_METRICS])
            if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool) and math.isfinite(row[key])
        }
        experiment, start, end = hparams(values, figures)
        with SummaryWriter(logdir=str(folder)) as writer:
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            for key, value in figures.items():
                writer.add_scalar(key, value, 0)
        written += 1
    return written


def _hparam_value(value):
    """HParams holds numbers, strings and booleans: anything else (a list, a mapping) as its text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)
