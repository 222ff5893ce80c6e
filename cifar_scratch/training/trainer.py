"""The training loop: shuffled mini-batches, validation, best/last checkpoints, early stopping.

It prints nothing: progress goes to :class:`Callback` objects. Its whole state (parameters,
optimizer slots, schedule, early-stopping counters, history, the position inside the current
epoch and the run's random generator) goes into checkpoints, so a resumed run continues
bit for bit as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_scratch import signals
from cifar_scratch.config import RunConfig
from cifar_scratch.data import Dataset, Normalizer
from cifar_scratch.data.augment import alternate_flips, augment, is_active
from cifar_scratch.errors import CheckpointError
from cifar_scratch.nn.losses import CrossEntropy, Loss
from cifar_scratch.nn.model import Sequential
from cifar_scratch.nn.reference import cross_entropy
from cifar_scratch.optim.averaging import WeightAverage
from cifar_scratch.optim.clipping import clip_by_global_norm, global_norm, squared_norms
from cifar_scratch.optim.optimizers import Optimizer
from cifar_scratch.optim.schedules import Schedule
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.training.checkpoint import (
    CheckpointMetadata,
    apply_weights,
    check_array,
    group,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    weight_shapes,
)
from cifar_scratch.training.evaluation import evaluate_split
from cifar_scratch.training.health import LayerHealth

#: Second seed word of the stream that draws the parity bits of alternating flips.
ALTERNATE_FLIP_STREAM = 2
#: ``stop_reason`` of a run whose loss became NaN or infinite: it ends as a failure.
DIVERGED = "diverged"


class Callback:
    """Hooks into training (progress, logging, a stop of one's own); every method is optional. A hook
    may call ``trainer.stop(reason)``: the run ends after the current epoch, saved and measured.
    ``on_warning``: a layer-health warning (once per problem); ``on_checkpoint``: ``last.npz`` was just
    written; ``on_metrics``: the final metrics of the best weights, after training and its plots."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, batch: int, batches: int, loss: float, accuracy: float) -> None: ...
    def on_epoch_end(self, trainer: Trainer, row: dict) -> None: ...
    def on_warning(self, trainer: Trainer, message: str) -> None: ...
    def on_checkpoint(self, trainer: Trainer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...
    def on_metrics(self, trainer: Trainer, metrics: dict) -> None: ...


#: The running sums of an epoch as it starts.
FRESH_RUNNING = {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0, "grad_norm_sum": 0.0}


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
    running: dict = field(default_factory=lambda: dict(FRESH_RUNNING))
    lrs: list[float] = field(default_factory=list)  # the learning rate of every step taken, for lr.png

    @property
    def diverged(self) -> bool:
        return (self.stop_reason or "").startswith(DIVERGED)


@dataclass
class TrainingParts:
    """What a :class:`Trainer` runs, built from a config (``training.run.assemble``): by the time they
    exist, everything that could refuse the config has had its say, so a run folder can follow."""

    dataset: Dataset  # the splits, with any offline augmented copies appended to train
    model: Sequential
    normalizer: Normalizer
    optimizer: Optimizer
    schedule: Schedule
    rng: np.random.Generator  # the run's one generator: shuffling, dropout, augmentation
    steps_per_epoch: int
    data_fingerprint: dict[str, str]  # of the splits as loaded: a resume or evaluate refuses other data
    average: WeightAverage | None = None  # training.ema
    loss: Loss = field(default_factory=CrossEntropy)  # the config's loss


class Trainer:
    def __init__(self, config: RunConfig, parts: TrainingParts, run_dir: Path, callbacks: list[Callback] = ()):
        self.config, self.run_dir, self.callbacks = config, run_dir, list(callbacks)
        self.dataset, self.model, self.normalizer = parts.dataset, parts.model, parts.normalizer
        self.optimizer, self.schedule, self.rng = parts.optimizer, parts.schedule, parts.rng
        self.steps_per_epoch, self.data_fingerprint, self.average = parts.steps_per_epoch, parts.data_fingerprint, parts.average
        self.loss = parts.loss
        self.state = TrainState()
        # Per-layer health; it reads the arrays the optimizer trains, so it follows the optimizer's names.
        self.health = LayerHealth(self.model, self.optimizer.params, config.output.health_every) if config.output.health else None
        dataset = parts.dataset
        augment_config = config.data.augment
        self.online_augment = augment_config if is_active(augment_config) and augment_config.copies == 0 else None
        # Per-image parity bits of alternating flips, from their own stream: resume recomputes them.
        self.flip_parity = (
            np.random.default_rng([config.training.seed, ALTERNATE_FLIP_STREAM]).random(len(dataset.train)) < 0.5
            if self.online_augment is not None and augment_config.flip == "alternate"
            else None
        )

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return RunFolder(self.run_dir).last

    @property
    def best_path(self) -> Path:
        return RunFolder(self.run_dir).best

    def save(self, path: Path) -> None:
        s = self.state
        arrays = {f"param/{k}": v for k, v in self.model.params.items()}
        arrays |= {f"buffer/{k}": v for k, v in self.model.buffers.items()}
        arrays |= {f"optim/{k}": v for k, v in self.optimizer.state_arrays().items()}
        arrays |= {"data/mean": self.normalizer.mean, "data/scale": self.normalizer.scale}
        arrays["history/lr"] = np.asarray(s.lrs, dtype=np.float64)
        if self.average is not None:
            arrays |= {f"ema/{k}": v for k, v in self.average.average.items()}
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
            # What resume and evaluate check the run folder against: an edited config.yaml or a
            # changed dataset would otherwise silently train or test on other images.
            "config": self.config.model_dump(mode="json"),
            "data": self.data_fingerprint,
            "health": self.health.state_dict() if self.health is not None else None,
        }
        save_checkpoint(path, arrays, metadata)

    def save_last(self) -> None:
        """Save ``checkpoints/last.npz``, then tell the callbacks (a logger flushes what it holds up to it)."""
        self.save(self.last_path)
        self._emit("on_checkpoint", self)

    def restore(self, path: Path) -> CheckpointMetadata:
        """Load the full training state written by :meth:`save`; a damaged checkpoint is a CheckpointError."""
        arrays, raw = load_checkpoint(path, self._expected_shapes(path))
        meta = read_metadata(raw, path)
        # A diverged run's last state holds its NaN weights: restored only so that its finishing can run
        # again (on best.npz) and a resume can say what happened; such a run never trains on.
        finite = not (meta.stop_reason or "").startswith(DIVERGED)
        apply_weights(arrays, path, self.model, self.normalizer, finite)
        damaged = f"{path}: checkpoint is damaged"
        self._restore_optimizer(arrays, meta, damaged, finite)
        permutation = arrays.get("train/permutation")
        if permutation is not None and not (
            permutation.ndim == 1
            and permutation.dtype.kind in "iu"
            and np.array_equal(np.sort(permutation), np.arange(len(self.dataset.train)))
        ):
            raise CheckpointError(
                f"{damaged}: train/permutation is not a permutation of the {len(self.dataset.train)} training images"
            )
        if self.health is not None and meta.health is not None:
            try:
                self.health.load_state_dict(meta.health)
            except ValueError as exc:
                raise CheckpointError(f"{damaged}: {exc}") from None
        lrs = arrays.get("history/lr")
        if lrs is None or lrs.ndim != 1 or lrs.dtype != np.float64 or len(lrs) != meta.step:
            raise CheckpointError(f"{damaged}: history/lr must hold one float64 learning rate per step ({meta.step})")
        self.state = TrainState(
            epoch=meta.epoch,
            step=meta.step,
            history=[row.model_dump() for row in meta.history],
            best_value=meta.best_value,
            best_epoch=meta.best_epoch,
            bad_epochs=meta.bad_epochs,
            stop_reason=meta.stop_reason,
            permutation=permutation,
            batch_in_epoch=meta.batch_in_epoch,
            running={
                **meta.running.model_dump(),
                "loss_sum": _nan_if_none(meta.running.loss_sum),
                "grad_norm_sum": _nan_if_none(meta.running.grad_norm_sum),
            },
            lrs=lrs.tolist(),
        )
        return meta

    def _expected_shapes(self, path: Path):
        """The shape each array of this run's checkpoint must have (see :func:`load_checkpoint`)."""
        weights = weight_shapes(self.model, self.normalizer, path)
        slots = {f"optim/{k}": v.shape for k, v in self.optimizer.state_arrays().items()}
        if self.average is not None:
            slots |= {f"ema/{k}": v.shape for k, v in self.average.average.items()}

        def shapes(name: str, metadata: dict) -> tuple[int, ...] | None:
            if name == "history/lr":  # one rate per step taken
                return (metadata.get("step"),) if isinstance(metadata.get("step"), int) else (-1,)
            if name == "train/permutation":
                return (len(self.dataset.train),)
            if name in slots:
                return slots[name]
            if name.startswith(("optim/", "ema/")):
                raise CheckpointError(f"{path}: checkpoint is damaged: {name} is not state of this run's optimizer or average")
            return weights(name, metadata)

        return shapes

    def _restore_optimizer(self, arrays: dict, meta: CheckpointMetadata, damaged: str, finite: bool) -> None:
        """The optimizer's slots, the weight average, the schedule's state and the random stream."""
        slots = self.optimizer.state_arrays()
        stored_slots = group(arrays, "optim")
        if set(stored_slots) != set(slots):
            raise CheckpointError(
                f"{damaged}: optimizer state {sorted(set(slots) ^ set(stored_slots))[:3]} missing or unexpected"
            )
        for name, array in slots.items():
            check_array(stored_slots[name], array.shape, np.float32, f"{damaged}: optim/{name}", finite)
        if self.average is not None:
            stored = group(arrays, "ema")
            for name, value in self.average.average.items():
                check_array(stored.get(name), value.shape, np.float32, f"{damaged}: ema/{name}", finite)
                value[...] = stored[name]
        try:
            self.optimizer.load_state_arrays(stored_slots, meta.optimizer_steps)
            self.schedule.load_state_dict(meta.schedule)
            self.rng.bit_generator.state = meta.rng
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{damaged}: {type(exc).__name__} {exc}") from None

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainState:
        """Train until ``training.epochs`` or early stopping. Saves ``last`` (and ``best`` on improvement).

        SIGINT/SIGTERM finish the current step, save ``last`` and raise :class:`signals.Interrupted`;
        a second signal raises at once. A checkpoint exists from the first step on, so any stopped
        run can be resumed.
        """
        with signals.deferred():
            if not self.last_path.exists():
                self.save_last()
            self._emit("on_train_start", self)
            while self.state.epoch < self.config.training.epochs and self.state.stop_reason is None:
                self._run_epoch()
            if self.state.stop_reason is None:
                self.state.stop_reason = "completed"
            self.save_last()
            self._emit("on_train_end", self)
            self._check_signal()  # a signal during the final save still stops the command with 130/143
        return self.state

    def stop(self, reason: str = "stopped by a callback") -> None:
        """End the run after the current epoch, as early stopping does (best weights measured, run completed)."""
        if self.state.stop_reason is None:
            self.state.stop_reason = reason

    def _check_signal(self) -> None:
        signum = signals.pending()
        if signum is not None:
            self.save_last()
            raise signals.Interrupted(signum)

    def _run_epoch(self) -> None:
        s, cfg = self.state, self.config.training
        epoch = s.epoch + 1
        if s.permutation is None:
            s.permutation = self.rng.permutation(len(self.dataset.train))
            s.batch_in_epoch = 0
            s.running = dict(FRESH_RUNNING)
        self._emit("on_epoch_start", self, epoch)
        self.model.train()
        started = time.perf_counter() - s.running["elapsed"]
        batches = self.steps_per_epoch
        lr = self.schedule.lr_at(s.step)
        while s.batch_in_epoch < batches:
            self._check_signal()
            index = s.permutation[s.batch_in_epoch * cfg.batch_size : (s.batch_in_epoch + 1) * cfg.batch_size]
            lr = self.schedule.lr_at(s.step)
            loss, reported, correct = self._step(index, lr)
            s.running["loss_sum"] += reported * len(index)
            s.running["correct"] += correct
            s.running["seen"] += len(index)
            s.running["elapsed"] = time.perf_counter() - started
            self._emit("on_batch_end", self, s.batch_in_epoch, batches, reported, correct / len(index))
            if not np.isfinite(loss):
                s.stop_reason = f"{DIVERGED}: the training loss became {loss} at step {s.step} (epoch {epoch})"
                break
        if self.average is not None and s.batch_in_epoch == batches:
            self.average.end_epoch(s.step)
        if s.stop_reason is None and not all_finite(self.model.params):  # the last update can overflow a finite loss's weights
            s.stop_reason = f"{DIVERGED}: the weights became NaN or infinite by step {s.step} (epoch {epoch})"
        row = self._epoch_row(epoch, lr, started)
        warnings = self.health.end_epoch(epoch)[1] if self.health is not None else []
        s.epoch, s.permutation, s.batch_in_epoch = epoch, None, 0
        s.history.append(row)
        self.schedule.end_epoch(row)
        self._track_best(row)
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or s.stop_reason:
            self.save_last()
        self._emit("on_epoch_end", self, row)
        for message in warnings:
            self._emit("on_warning", self, message)
        self._check_signal()

    def _step(self, index: np.ndarray, lr: float) -> tuple[float, float, int]:
        """One training step on the training images ``index`` at learning rate ``lr``
        -> (the loss trained on, the plain cross-entropy reported, correct predictions)."""
        s = self.state
        labels, images = self.dataset.train.labels[index], self.dataset.train.images[index]
        if self.online_augment is not None:
            flip = alternate_flips(self.flip_parity, index, s.epoch) if self.flip_parity is not None else None
            images = augment(images, self.online_augment, self.rng, flip)
        health, clip = self.health, self.config.training.grad_clip
        if health is not None:
            health.begin_step(s.step)
        logits = self.model.forward(self.normalizer(images))
        loss, dlogits = self.loss(logits, labels)
        finished = self.optimizer.finished()
        self.model.backward(dlogits, input_grad=False, skip=finished)
        grads = self.model.grads
        trained = [name for name in self.optimizer.params if name not in finished]
        squares = squared_norms(grads, trained)
        norm = global_norm(squares)
        s.running["grad_norm_sum"] += norm
        if clip is not None:
            clip_by_global_norm(grads, trained, clip.max_norm, norm)
        if health is not None:
            health.after_backward(squares)
        self.optimizer.step(grads, lr)
        if health is not None:
            health.after_update()
        s.lrs.append(lr)
        s.step += 1
        if self.average is not None:
            self.average.update(s.step)
        s.batch_in_epoch += 1
        # History reports plain cross-entropy for every split; label smoothing or another loss only shapes the gradient.
        plain = isinstance(self.loss, CrossEntropy) and not self.loss.label_smoothing
        reported = loss if plain else cross_entropy(logits, labels)
        return loss, reported, int((logits.argmax(1) == labels).sum())

    def _epoch_row(self, epoch: int, lr: float, started: float) -> dict:
        """The epoch's line of history.csv: training means, validation figures, the last rate, the time."""
        s = self.state
        seen = max(1, s.running["seen"])
        row = {
            "epoch": epoch,
            "train_loss": s.running["loss_sum"] / seen,
            "train_accuracy": s.running["correct"] / seen,
            "val_loss": None,  # none without a validation split, or after divergence (NaN weights measure nothing)
            "val_accuracy": None,
        }
        if len(self.dataset.val) and not s.diverged:
            with self.evaluated_weights():
                row["val_loss"], row["val_accuracy"], _ = evaluate_split(
                    self.model, self.normalizer, self.dataset.val, self.config.training.batch_size
                )
        row["lr"] = lr
        row["grad_norm"] = s.running["grad_norm_sum"] / s.batch_in_epoch if s.batch_in_epoch else None
        row["epoch_time"] = time.perf_counter() - started
        return row

    @property
    def monitor(self) -> str:
        """The metric that picks the best epoch: ``training.monitor``, or its training counterpart when
        there is no validation split (train_accuracy for val_accuracy)."""
        name = self.config.training.monitor
        return name if len(self.dataset.val) else name.replace("val_", "train_", 1)

    def _track_best(self, row: dict) -> None:
        s, cfg = self.state, self.config.training
        value = row[self.monitor]
        sign = 1.0 if cfg.monitor.endswith("loss") else -1.0
        min_delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
        # A diverged epoch, or one whose losses are not finite (logits overflowed), is never the best: its
        # weights must not become best.npz, whatever its accuracy (NaN logits still have an argmax).
        measured = not s.diverged and all(row[k] is None or np.isfinite(row[k]) for k in ("train_loss", "val_loss"))
        if measured and np.isfinite(value) and (s.best_value is None or sign * value < sign * s.best_value - min_delta):
            s.best_value, s.best_epoch, s.bad_epochs = value, row["epoch"], 0
            with self.evaluated_weights():  # best.npz holds the weights that were measured
                self.save(self.best_path)
        else:
            s.bad_epochs += 1
            if cfg.early_stopping and s.bad_epochs >= cfg.early_stopping.patience:
                s.stop_reason = f"early stopping: no {cfg.monitor} improvement for {s.bad_epochs} epochs"

    def evaluated_weights(self):
        """The weights evaluation uses: the average with ``training.ema``, else the model's own."""
        return self.average.swapped_in(self.state.step) if self.average is not None else contextlib.nullcontext()

    def _emit(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def all_finite(arrays: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(array).all() for array in arrays.values())


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def steps_per_epoch(samples: int, batch_size: int, drop_last: bool = False) -> int:
    """Mini-batches per epoch. The last, smaller batch is kept (as in Keras and PyTorch) unless
    ``drop_last``: then every step sees ``batch_size`` images and the few left over by this epoch's
    shuffle are skipped (airbench's loader); at least one full batch must fit."""
    if drop_last:
        if samples < batch_size:
            raise ValueError(f"the training split has {samples} images, fewer than one batch of {batch_size}")
        return samples // batch_size
    return max(1, -(-samples // batch_size))
