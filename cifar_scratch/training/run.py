"""A run's life: set up from a config, train, resume, and finish with metrics and plots, in a run
folder (:class:`cifar_scratch.runs.folder.RunFolder`, which owns its layout)."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_scratch import __version__, reports, runtime, signals
from cifar_scratch.builders import build_loss, build_model, build_optimizer, build_schedule
from cifar_scratch.config import RESUMABLE_KEYS, RunConfig, build_config, changed_keys, dump_config, load_config
from cifar_scratch.data import Dataset, Normalizer, Split, load_dataset
from cifar_scratch.data.augment import augmented_copies
from cifar_scratch.errors import CheckpointError, ConfigError, TrainingFailed, UsageError
from cifar_scratch.fileio import atomic_write_json, atomic_write_text, remove_stale_temporaries
from cifar_scratch.kinds import user
from cifar_scratch.nn import kernels
from cifar_scratch.nn.layers import Conv2D
from cifar_scratch.nn.model import Sequential
from cifar_scratch.optim.averaging import WeightAverage
from cifar_scratch.runs.folder import RunFolder, now
from cifar_scratch.training.checkpoint import check_checkpoint_matches, load_weights
from cifar_scratch.training.evaluation import scores, split_logits
from cifar_scratch.training.health import HEALTH_FIELDS
from cifar_scratch.training.tensorboard import TensorBoardLogger, require_tensorboardx
from cifar_scratch.training.trainer import Callback, Trainer, TrainingParts, steps_per_epoch

OFFLINE_AUGMENT_STREAM = 1  # second seed word of the generator that draws data.augment.copies


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


class HistoryWriter(Callback):
    """Rewrites history.csv, history.jsonl and diagnostics.csv atomically after each epoch, from the
    checkpointed history and layer health."""

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        folder = RunFolder(trainer.run_dir)
        folder.write_history(trainer.state.history)
        if trainer.health is not None:
            folder.write_diagnostics(trainer.health.rows, HEALTH_FIELDS)


def assemble(config: RunConfig, dataset: Dataset) -> TrainingParts:
    """Everything a run needs, built from the config with one seeded generator; any ConfigError
    (model size, whitening, drop_last) is raised here, before a run folder exists."""
    rng = np.random.default_rng(config.training.seed)
    normalizer = Normalizer.fit(dataset.train.images, config.data.normalize)
    fingerprint = dataset.fingerprint()
    if config.data.augment.copies:
        # Own stream derived from the seed: resume rebuilds the same copies without touching `rng`.
        copies_rng = np.random.default_rng([config.training.seed, OFFLINE_AUGMENT_STREAM])
        images, labels = augmented_copies(dataset.train.images, dataset.train.labels, config.data.augment, copies_rng)
        dataset = dataclasses.replace(dataset, train=Split(images, labels))
    model = build_model(config.model, dataset.image_shape, len(dataset.class_names), rng, config.training.batch_size)
    whiten_first_layer(model, dataset.train.images, normalizer, config.training.seed)
    try:
        batches = steps_per_epoch(len(dataset.train), config.training.batch_size, config.training.drop_last)
    except ValueError as exc:
        raise ConfigError(f"training.drop_last: {exc}") from None
    optimizer = build_optimizer(config.optimizer, model, batches)
    schedule = build_schedule(config, batches)
    average = None
    ema = config.training.ema
    if ema is not None:
        warmup, start = (round(epochs * batches) for epochs in (ema.warmup_epochs, ema.start_epochs))
        average = WeightAverage(model.state_dict(), ema.decay, ema.every, warmup, ema.lookahead, start)
    return TrainingParts(dataset, model, normalizer, optimizer, schedule, rng, batches, fingerprint, average, build_loss(config))


def run_callbacks(config: RunConfig) -> list[Callback]:
    """What every run writes as it trains: its history (and health), and TensorBoard's files when asked."""
    loggers: list[Callback] = [HistoryWriter()]
    if config.output.tensorboard:
        loggers.append(TensorBoardLogger(config.output.histogram_every))
    return loggers


def build_trainer(config: RunConfig, dataset: Dataset, run_dir: Path, callbacks: list[Callback]) -> Trainer:
    """A :class:`Trainer` for ``config`` that keeps its run in ``run_dir`` (history written after each epoch)."""
    return Trainer(config, assemble(config, dataset), run_dir, [*run_callbacks(config), *callbacks])


#: Images sampled for the whitening of a first convolution (init: whiten); every patch of each is used.
WHITENING_IMAGES = 5000
WHITENING_STREAM = 3  # second seed word of the generator that samples them


def whiten_first_layer(model: Sequential, train_images: np.ndarray, normalizer: Normalizer, seed: int) -> None:
    """Give a convolution with ``init: whiten`` the whitening of the patches of a seeded sample of
    ``train_images`` ((N, H, W, C) uint8), normalised as the model sees them: airbench's, from the
    uncentred second moment of every patch of 5,000 images.

    Only the model's first layer sees image patches, so ``whiten`` anywhere else is a config error.
    The sample comes from a stream derived from the seed: the weights are reproducible.
    """
    whitened = [(path, m) for path, m in model.named_modules() if isinstance(m, Conv2D) and m.init == "whiten"]
    if not whitened:
        return
    first = model.layers[0]
    for path, conv in whitened:
        if conv is not first:
            raise ConfigError(f"model.layers: {path}: init: whiten is for the model's first layer (it whitens image patches)")
    chosen = np.random.default_rng([seed, WHITENING_STREAM]).choice(
        len(train_images), min(len(train_images), WHITENING_IMAGES), replace=False
    )
    try:
        first.adapt(normalizer(train_images[np.sort(chosen)]))
    except ValueError as exc:
        raise ConfigError(f"model.layers.0.filters: {exc}") from None


def git_commit() -> str | None:
    """The commit of the code that runs, with ``+dirty`` for uncommitted changes; None outside a git checkout."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def start_run(
    config: RunConfig,
    data_dir: Path,
    callbacks: list[Callback] = (),
    progress: bool = True,
    runs_dir: Path | None = None,
    overrides: list[str] = (),
) -> RunResult:
    """Create a run folder for ``config``, train, and finish. Returns the folder and final metrics.

    Everything that can refuse (data, model size) runs before the folder exists, so a refused
    run leaves nothing behind. ``runs_dir`` overrides ``output.runs_dir``; the folder actually used
    is written into the run's ``config.yaml``, as an absolute path. ``overrides`` (the command line's
    dotted overrides, already applied to ``config``) are recorded in ``run.json`` for listings.
    """
    if config.output.tensorboard:
        require_tensorboardx("output.tensorboard")
    dataset = load_dataset(config.data, data_dir, progress)
    runs_dir = Path(runs_dir or config.output.runs_dir).expanduser().resolve()
    # config.yaml (and every checkpoint) records what ran: the folder used and the one data source used,
    # so a resume or evaluate reads that source and no other.
    config = config.model_copy(
        update={
            "output": config.output.model_copy(update={"runs_dir": str(runs_dir)}),
            "data": config.data.model_copy(update={"source": dataset.source}),
        }
    )
    parts = assemble(config, dataset)  # what can refuse the config refuses it here, before the folder exists
    folder = RunFolder.create(runs_dir, config.name)
    config = keep_user_code(config, folder)
    trainer = Trainer(config, parts, folder.path, [*run_callbacks(config), *callbacks])
    with folder.lock():
        atomic_write_text(folder.config, dump_config(config, folder.path))
        atomic_write_text(folder.summary, trainer.model.summary() + "\n")
        folder.update_info(
            {
                "cifar_scratch": __version__,
                "git_commit": git_commit(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                # What its times ran on: CPU model, AVX2 or AVX-512, BLAS kernels, threads (each resume: its own).
                "machine": runtime.machine(),
                "command": sys.argv,
                "overrides": list(overrides),
                "cwd": os.getcwd(),
                "started": now(),
                "data_dir": str(data_dir.resolve()),
                "dataset": dataset.description,
                "data_source": dataset.source,
                "data_sources_passed_over": list(dataset.passed_over),
                "class_names": list(dataset.class_names),
                "image_shape": list(dataset.image_shape),
                "sizes": {"train": len(trainer.dataset.train), "val": len(dataset.val), "test": len(dataset.test)},
                "status": "running",
                "resumes": [],
            },
        )
        return _train_and_finish(trainer)


def resume_run(
    run_dir: Path,
    overrides: list[str],
    data_dir: Path | None,
    callbacks: list[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """Bring the run in ``run_dir`` to its complete state from ``checkpoints/last.npz``, bit-exactly.

    An interrupted run trains on; a run whose training ended but whose final metrics and plots
    were not all written (stopped in its last seconds) only finishes. ``overrides`` may only touch
    :data:`RESUMABLE_KEYS` (for example ``training.epochs=30`` to train longer).
    """
    folder = RunFolder(run_dir)
    run_dir = folder.path
    config = resume_config(run_dir, overrides)
    if config.output.tensorboard:
        require_tensorboardx("output.tensorboard")
    last = folder.last
    if not last.exists():
        raise CheckpointError(f"{run_dir}: not a resumable run folder (checkpoints/last.npz is missing)")
    info = folder.read_info()
    with folder.lock():
        removed = remove_stale_temporaries(folder.written_folders(), owned=RunFolder.EVAL_FILES)
        data_dir = data_dir or Path(info.get("data_dir", "data"))
        dataset = load_dataset(config.data, data_dir, progress)
        trainer = build_trainer(config, dataset, run_dir, list(callbacks))
        meta = trainer.restore(last)
        check_checkpoint_matches(meta, config, trainer.data_fingerprint, dataset.class_names, last)
        state = trainer.state
        if state.stop_reason == "completed" and state.epoch < config.training.epochs:
            state.stop_reason = None  # asked to train longer
        # Finished means finishing ran to its end: completed, or failed by divergence after it (a failure
        # such as a full disk while finishing leaves the run to be finished again).
        status = info.get("status")
        finished = status == "completed" or (status == "failed" and info.get("error") == state.stop_reason)
        if state.stop_reason is not None and finished:
            if state.diverged:
                raise UsageError(
                    f"{run_dir}: {state.stop_reason}; a diverged run cannot be resumed (its weights are NaN or "
                    f"infinite): start a new run with a lower learning rate, e.g. cifar-scratch train "
                    f"{run_dir / 'config.yaml'} optimizer.lr={config.optimizer.lr / 10:g}"
                )
            raise UsageError(
                f"{run_dir}: run already finished after {state.epoch} epochs ({state.stop_reason}); "
                f"pass training.epochs=N with N > {state.epoch} to train longer"
            )
        atomic_write_text(folder.config, dump_config(config, folder.path))
        resumes = info.get("resumes") if isinstance(info.get("resumes"), list) else []
        resume = {
            "time": now(),
            "overrides": list(overrides),
            "from_epoch": state.epoch,
            "from_step": state.step,
            "removed_temporaries": len(removed),
            "git_commit": git_commit(),
            "machine": runtime.machine(),
        }
        folder.update_info({"status": "running", "resumes": [*resumes, resume]})
        return _train_and_finish(trainer)


def keep_user_code(config: RunConfig, folder: RunFolder) -> RunConfig:
    """Copy the user source files the model names into the run folder (``code/``, with their SHA-256)
    -> the config with each user layer's ``type`` naming the copy, which resume and evaluate then use."""
    tree = config.model_dump(mode="json")
    files = [user.source_file(reference) for reference in user.references(tree) if user.is_file_reference(reference)]
    copies = folder.keep_code(list(dict.fromkeys(files)))
    if not copies:
        return config

    def to_copy(reference: str, path: str) -> str:
        file, _, name = reference.rpartition(":")
        return f"{copies[Path(file)]}:{name}" if user.is_file_reference(reference) else reference

    return build_config(user.map_references(tree, to_copy))


def resume_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The run's config with resume overrides applied; anything but :data:`RESUMABLE_KEYS` is refused.
    The run's copies of user code must be as they were (:meth:`RunFolder.checked_code`)."""
    config_path = RunFolder(run_dir).config
    if not config_path.exists():
        hint = " (it is a config file: train it with 'cifar-scratch train FILE')" if run_dir.is_file() else ""
        raise CheckpointError(f"{run_dir}: not a resumable run folder (config.yaml is missing){hint}")
    RunFolder(run_dir).checked_code()
    old = load_config(config_path)
    config = load_config(config_path, overrides)
    refused = [
        k for k in changed_keys(old.model_dump(mode="json"), config.model_dump(mode="json")) if not k.startswith(RESUMABLE_KEYS)
    ]
    if refused:
        raise ConfigError([f"{k}: cannot change when resuming (allowed: {', '.join(RESUMABLE_KEYS)})" for k in refused])
    return config


def _train_and_finish(trainer: Trainer) -> RunResult:
    """Train (or finish) and record the outcome in run.json: completed, interrupted or failed."""
    run_dir, folder = trainer.run_dir, RunFolder(trainer.run_dir)
    try:
        # The loop detects NaN and infinity itself and ends the run with one clear error, so NumPy's
        # floating-point warnings (overflow in matmul, invalid value in subtract) would only be noise.
        with (
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
            kernels.using(trainer.config.training.engine, trainer.config.training.conv_algorithm),
        ):
            trainer.fit()
            metrics = finish(trainer)
    except signals.Interrupted as exc:
        exc.run_dir = run_dir
        exc.checkpoint = trainer.last_path if trainer.last_path.exists() else None
        folder.record_failure("interrupted", f"{exc} after {trainer.state.epoch} epochs")
        raise
    except Exception as exc:
        folder.record_failure("failed", f"{type(exc).__name__}: {exc}")
        raise
    state = trainer.state
    if state.diverged:
        best = (
            f"metrics.json reports the best epoch before it ({state.best_epoch})"
            if state.best_epoch
            else "no epoch finished before it, so metrics.json has no metrics"
        )
        folder.record_failure("failed", state.stop_reason)
        raise TrainingFailed(f"{state.stop_reason}; {best}. Lower optimizer.lr or check the data normalisation")
    folder.update_info({"status": "completed", "finished": now(), "error": None})
    return RunResult(run_dir, metrics)


def finish(trainer: Trainer) -> dict:
    """Restore the best weights, measure every split, write metrics.json and plots.

    Every step rewrites its files whole (through temporary names), so running it again after an
    interruption gives the same result: ``--resume`` re-runs it until run.json says completed.
    A run that diverged before its first finished epoch has no weights worth measuring: its
    metrics.json says so instead.
    """
    state, folder, dataset = trainer.state, RunFolder(trainer.run_dir), trainer.dataset
    if trainer.best_path.exists():
        load_weights(trainer.model, trainer.normalizer, trainer.best_path)
    metrics: dict = {
        "stop_reason": state.stop_reason,
        "epochs": state.epoch,
        "steps": state.step,
        "best_epoch": state.best_epoch,
        "monitor": trainer.monitor,
        "best_value": state.best_value,
        "dataset": dataset.description,
        "class_names": list(dataset.class_names),
        "train_time_s": float(sum(r["epoch_time"] for r in state.history)),
        "tta": trainer.config.training.tta,
    }
    if trainer.health is not None:
        metrics["warnings"] = list(trainer.health.warned.values())
    if trainer.best_path.exists() or not state.diverged:
        metrics |= _measure(trainer)
    else:
        metrics["note"] = "the run diverged before any epoch finished with finite weights: there is nothing to measure"
    atomic_write_json(folder.metrics, metrics)
    if trainer.config.output.plots:
        reports.plot_history(state.history, folder.plots, state.best_epoch)
        reports.plot_lr(
            state.lrs, trainer.steps_per_epoch, trainer.config.schedule.name, folder.plots / "lr.png", state.best_epoch
        )
        if trainer.health is not None and trainer.health.rows:
            reports.plot_layer_health(trainer.health.rows, folder.plots / "layers.png")
    trainer._emit("on_metrics", trainer, metrics)
    return metrics


def _measure(trainer: Trainer) -> dict:
    """Loss and accuracy of the model on every split (with TTA beside them on val and test), the test
    split's macro F1 (of the TTA predictions too, when TTA is on) and its confusion matrix plots."""
    dataset, tta, metrics = trainer.dataset, trainer.config.training.tta, {}
    names = ("train", "val", "test") if trainer.config.training.evaluate_train else ("val", "test")
    for name in names:
        split = dataset.split(name)
        if not len(split):
            continue
        plain, averaged = split_logits(
            trainer.model, trainer.normalizer, split, tta if name != "train" else "none", trainer.config.training.batch_size
        )
        metrics[f"{name}_loss"], metrics[f"{name}_accuracy"] = scores(plain, split.labels)
        if averaged is not None:
            metrics[f"{name}_loss_tta"], metrics[f"{name}_accuracy_tta"] = scores(averaged, split.labels)
        if name != "test":
            continue
        report = reports.classification_summary(split.labels, plain.argmax(1), dataset.class_names)
        metrics["test_macro_f1"] = report["macro avg"]["f1-score"]
        if averaged is not None:
            report = reports.classification_summary(split.labels, averaged.argmax(1), dataset.class_names)
            metrics["test_macro_f1_tta"] = report["macro avg"]["f1-score"]
        if trainer.config.output.plots:  # of the TTA predictions when TTA is on, and titled so
            title = f"test, TTA {tta}" if tta != "none" else "test"
            reports.plot_confusion(report["confusion_matrix"], dataset.class_names, RunFolder(trainer.run_dir).plots, title)
    return metrics
