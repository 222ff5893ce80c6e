"""The training loop: shuffled mini-batches, validation, best/last checkpoints, early stopping.

It prints nothing: progress goes to :class:`Callback` objects. Its whole state (parameters,
optimizer slots, schedule, early-stopping counters, history, the position inside the current
epoch and the run's random generator) goes into checkpoints, so a resumed run continues
bit for bit as if it had never stopped.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_scratch.config import RunConfig
from cifar_scratch.data import Dataset, Normalizer, Split
from cifar_scratch.data.augment import augment, is_active
from cifar_scratch.errors import CheckpointError
from cifar_scratch.nn.functional import softmax_cross_entropy
from cifar_scratch.nn.model import Sequential
from cifar_scratch.optim.optimizers import Optimizer
from cifar_scratch.optim.schedules import Schedule
from cifar_scratch.training.checkpoint import group, load_checkpoint, save_checkpoint

EVAL_BATCH = 256  # bounds the im2col buffers of convolutions in eval mode
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time")


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once a checkpoint of the exact current state is written."""

    def __init__(self, signum: int, checkpoint: Path):
        self.signum, self.checkpoint = signum, checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name}; state saved to {checkpoint}")


class Callback:
    """Hooks for progress display; every method is optional."""

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...
    def on_batch_end(self, trainer: "Trainer", batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", row: dict) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stop_reason: str | None = None
    # Position inside an epoch that was interrupted (None between epochs).
    permutation: np.ndarray | None = None
    batch_in_epoch: int = 0
    running: dict = field(default_factory=lambda: {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0})


def evaluate_split(model: Sequential, normalizer: Normalizer, split: Split, batch_size: int = EVAL_BATCH) -> tuple[float, float, np.ndarray]:
    """Eval-mode pass over a split -> (mean loss, accuracy, logits (N, K) float32)."""
    was_training = model.layers[0].training if model.layers else False
    model.eval()
    chunks = [model.forward(normalizer(split.images[i : i + batch_size])) for i in range(0, len(split), batch_size)]
    if was_training:
        model.train()
    if not chunks:
        return float("nan"), float("nan"), np.zeros((0, model.output_shape[0]), np.float32)
    logits = np.concatenate(chunks)
    loss, _ = softmax_cross_entropy(logits, split.labels)
    return loss, float((logits.argmax(1) == split.labels).mean()), logits


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        dataset: Dataset,
        model: Sequential,
        normalizer: Normalizer,
        optimizer: Optimizer,
        schedule: Schedule,
        rng: np.random.Generator,
        run_dir: Path,
        callbacks: list[Callback] = (),
    ):
        self.config, self.dataset, self.model, self.normalizer = config, dataset, model, normalizer
        self.optimizer, self.schedule, self.rng, self.run_dir = optimizer, schedule, rng, run_dir
        self.callbacks = list(callbacks)
        self.state = TrainState()
        self._signal: int | None = None
        self.steps_per_epoch = steps_per_epoch(len(dataset.train), config.training.batch_size)
        augment_config = config.data.augment
        self.online_augment = augment_config if is_active(augment_config) and augment_config.copies == 0 else None

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.npz"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoints" / "best.npz"

    def save(self, path: Path) -> None:
        s = self.state
        arrays = {f"param/{k}": v for k, v in self.model.params.items()}
        arrays |= {f"buffer/{k}": v for k, v in self.model.buffers.items()}
        arrays |= {f"optim/{k}": v for k, v in self.optimizer.state_arrays().items()}
        arrays |= {"data/mean": self.normalizer.mean, "data/scale": self.normalizer.scale}
        if s.permutation is not None:
            arrays["train/permutation"] = s.permutation
        metadata = {
            "epoch": s.epoch,
            "step": s.step,
            "batch_in_epoch": s.batch_in_epoch,
            "running": s.running,
            "history": s.history,
            "best_value": s.best_value,
            "best_epoch": s.best_epoch,
            "bad_epochs": s.bad_epochs,
            "stop_reason": s.stop_reason,
            "optimizer_steps": self.optimizer.steps,
            "schedule": self.schedule.state_dict(),
            "rng": self.rng.bit_generator.state,
            "class_names": list(self.dataset.class_names),
            "input_shape": list(self.model.input_shape),
        }
        save_checkpoint(path, arrays, metadata)

    def restore(self, path: Path) -> None:
        """Load the full training state written by :meth:`save`."""
        arrays, meta = load_checkpoint(path)
        apply_weights(arrays, path, self.model, self.normalizer)
        self.optimizer.load_state_arrays(group(arrays, "optim"), meta["optimizer_steps"])
        self.schedule.load_state_dict(meta["schedule"])
        self.rng.bit_generator.state = meta["rng"]
        self.state = TrainState(
            epoch=meta["epoch"],
            step=meta["step"],
            history=meta["history"],
            best_value=meta["best_value"],
            best_epoch=meta["best_epoch"],
            bad_epochs=meta["bad_epochs"],
            stop_reason=meta["stop_reason"],
            permutation=arrays.get("train/permutation"),
            batch_in_epoch=meta["batch_in_epoch"],
            running=meta["running"],
        )

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainState:
        """Train until ``training.epochs`` or early stopping. Saves ``last`` (and ``best`` on improvement)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            self._emit("on_train_start", self)
            while self.state.epoch < self.config.training.epochs and self.state.stop_reason is None:
                self._run_epoch()
            if self.state.stop_reason is None:
                self.state.stop_reason = "completed"
            self.save(self.last_path)
            self._emit("on_train_end", self)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.state

    def _on_signal(self, signum, frame) -> None:
        # Finish the current step, then checkpoint and stop. A second signal stops at once.
        if self._signal is not None:
            raise KeyboardInterrupt
        self._signal = signum

    def _check_signal(self) -> None:
        if self._signal is not None:
            self.save(self.last_path)
            raise TrainingInterrupted(self._signal, self.last_path)

    def _run_epoch(self) -> None:
        s, cfg = self.state, self.config.training
        train = self.dataset.train
        epoch = s.epoch + 1
        if s.permutation is None:
            s.permutation = self.rng.permutation(len(train))
            s.batch_in_epoch = 0
            s.running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}
        self._emit("on_epoch_start", self, epoch)
        self.model.train()
        started = time.perf_counter() - s.running["elapsed"]
        batches = self.steps_per_epoch
        lr = self.schedule.lr_at(s.step)
        while s.batch_in_epoch < batches:
            self._check_signal()
            index = s.permutation[s.batch_in_epoch * cfg.batch_size : (s.batch_in_epoch + 1) * cfg.batch_size]
            labels = train.labels[index]
            images = train.images[index]
            if self.online_augment is not None:
                images = augment(images, self.online_augment, self.rng)
            logits = self.model.forward(self.normalizer(images))
            loss, dlogits = softmax_cross_entropy(logits, labels, cfg.label_smoothing)
            self.model.backward(dlogits, input_grad=False)
            lr = self.schedule.lr_at(s.step)
            self.optimizer.step(self.model.grads, lr)
            s.step += 1
            s.batch_in_epoch += 1
            correct = int((logits.argmax(1) == labels).sum())
            s.running["loss_sum"] += loss * len(index)
            s.running["correct"] += correct
            s.running["seen"] += len(index)
            s.running["elapsed"] = time.perf_counter() - started
            self._emit("on_batch_end", self, s.batch_in_epoch, batches, loss, correct / len(index))
            if not np.isfinite(loss):
                s.stop_reason = f"loss became {loss} at step {s.step}"
                break
        seen = max(1, s.running["seen"])
        row = {
            "epoch": epoch,
            "train_loss": s.running["loss_sum"] / seen,
            "train_accuracy": s.running["correct"] / seen,
        }
        if len(self.dataset.val):
            row["val_loss"], row["val_accuracy"], _ = evaluate_split(self.model, self.normalizer, self.dataset.val)
        else:
            row["val_loss"] = row["val_accuracy"] = float("nan")
        row["lr"] = lr
        row["epoch_time"] = time.perf_counter() - started
        s.epoch, s.permutation, s.batch_in_epoch = epoch, None, 0
        s.history.append(row)
        self.schedule.end_epoch(row)
        self._track_best(row)
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or s.stop_reason:
            self.save(self.last_path)
        self._emit("on_epoch_end", self, row)
        self._check_signal()

    def monitored(self, row: dict) -> float:
        """The value of ``training.monitor`` (train metrics stand in when there is no validation split)."""
        name = self.config.training.monitor
        return row[name] if len(self.dataset.val) else row[name.replace("val_", "train_")]

    def _track_best(self, row: dict) -> None:
        s, cfg = self.state, self.config.training
        value = self.monitored(row)
        sign = 1.0 if cfg.monitor.endswith("loss") else -1.0
        min_delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
        if np.isfinite(value) and (s.best_value is None or sign * value < sign * s.best_value - min_delta):
            s.best_value, s.best_epoch, s.bad_epochs = value, row["epoch"], 0
            self.save(self.best_path)
        else:
            s.bad_epochs += 1
            if cfg.early_stopping and s.bad_epochs >= cfg.early_stopping.patience:
                s.stop_reason = f"early stopping: no {cfg.monitor} improvement for {s.bad_epochs} epochs"

    def _emit(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def apply_weights(arrays: dict[str, np.ndarray], checkpoint: Path, model: Sequential, normalizer: Normalizer) -> None:
    """Copy a checkpoint's parameters, buffers and normalisation statistics into ``model`` and ``normalizer``."""
    try:
        model.load_arrays(group(arrays, "param"), group(arrays, "buffer"))
    except ValueError as exc:
        raise CheckpointError(f"{checkpoint}: does not fit the model in config.yaml ({exc})") from None
    normalizer.mean[...] = arrays["data/mean"]
    normalizer.scale[...] = arrays["data/scale"]


def load_weights(model: Sequential, normalizer: Normalizer, checkpoint: Path) -> dict:
    """Put a checkpoint's weights and normalisation into ``model``/``normalizer``; return its metadata."""
    arrays, meta = load_checkpoint(checkpoint)
    apply_weights(arrays, checkpoint, model, normalizer)
    return meta


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Mini-batches per epoch; the last, smaller batch is kept (as in Keras and PyTorch)."""
    return max(1, -(-samples // batch_size))
