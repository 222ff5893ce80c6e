"""A run's life: set up from a config, train, resume, and finish with metrics and plots.

Layout of a run folder::

    config.yaml          resolved config: exactly what ran
    run.json             command, versions, data dir, dataset, status
    summary.txt          model summary
    history.csv/.jsonl   one row per epoch
    metrics.json         final metrics of the best weights (train/val/test)
    checkpoints/         last.npz (full state, for --resume), best.npz
    plots/               loss, accuracy, learning rate, confusion matrices
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_scratch import __version__
from cifar_scratch.config import RunConfig, build_config, dump_config, read_yaml_mapping
from cifar_scratch.data import Dataset, Normalizer, Split, load_dataset
from cifar_scratch.data.augment import augmented_copies
from cifar_scratch.errors import CheckpointError, ConfigError, UserError
from cifar_scratch.fileio import atomic_write_json, atomic_write_text, json_safe
from cifar_scratch.nn.model import build_model
from cifar_scratch.optim.optimizers import build_optimizer
from cifar_scratch.optim.schedules import Schedule
from cifar_scratch import reports
from cifar_scratch.training.run_dir import create_run_dir
from cifar_scratch.training.trainer import (
    HISTORY_FIELDS,
    Callback,
    Trainer,
    TrainingInterrupted,
    evaluate_split,
    load_weights,
    steps_per_epoch,
)

OFFLINE_AUGMENT_STREAM = 1  # second seed word of the generator that draws data.augment.copies

#: Keys that may change on --resume; anything else would make config.yaml lie about what ran.
RESUMABLE_KEYS = ("training.epochs", "training.early_stopping", "training.checkpoint_every", "output.plots")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


class HistoryWriter(Callback):
    """Rewrites history.csv and history.jsonl atomically after each epoch, from the checkpointed history."""

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        write_history(trainer.run_dir, trainer.state.history)


def write_history(run_dir: Path, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "history.csv", text.getvalue())
    atomic_write_text(run_dir / "history.jsonl", "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in history))


def build_trainer(config: RunConfig, dataset: Dataset, run_dir: Path, callbacks: list[Callback]) -> Trainer:
    """Everything a run needs, built from the config with one seeded generator."""
    rng = np.random.default_rng(config.training.seed)
    normalizer = Normalizer.fit(dataset.train.images, config.data.normalize)
    if config.data.augment.copies:
        # Own stream derived from the seed: resume rebuilds the same copies without touching `rng`.
        copies_rng = np.random.default_rng([config.training.seed, OFFLINE_AUGMENT_STREAM])
        images, labels = augmented_copies(dataset.train.images, dataset.train.labels, config.data.augment, copies_rng)
        dataset = dataclasses.replace(dataset, train=Split(images, labels))
    model = build_model(config.model, dataset.image_shape, len(dataset.class_names), rng)
    optimizer = build_optimizer(config.optimizer, model.params)
    schedule = Schedule(
        config.schedule, config.optimizer.lr, steps_per_epoch(len(dataset.train), config.training.batch_size), config.training.epochs
    )
    return Trainer(config, dataset, model, normalizer, optimizer, schedule, rng, run_dir, [HistoryWriter(), *callbacks])


def _write_run_info(run_dir: Path, updates: dict) -> None:
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    info.update(updates)
    atomic_write_json(path, info)


def start_run(
    config: RunConfig, data_dir: Path, callbacks: list[Callback] = (), progress: bool = True, runs_dir: Path | None = None
) -> RunResult:
    """Create a run folder for ``config``, train, and finish. Returns the folder and final metrics."""
    dataset = load_dataset(config.data, data_dir, progress)
    run_dir = create_run_dir(runs_dir or config.output.runs_dir, config.name)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    trainer = build_trainer(config, dataset, run_dir, list(callbacks))
    atomic_write_text(run_dir / "summary.txt", trainer.model.summary() + "\n")
    _write_run_info(
        run_dir,
        {
            "cifar_scratch": __version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.platform(),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "data_dir": str(data_dir.resolve()),
            "dataset": dataset.description,
            "class_names": list(dataset.class_names),
            "sizes": {"train": len(trainer.dataset.train), "val": len(dataset.val), "test": len(dataset.test)},
            "status": "running",
        },
    )
    return _train_and_finish(trainer)


def resume_run(
    run_dir: Path, overrides: list[str], data_dir: Path | None, callbacks: list[Callback] = (), progress: bool = True
) -> RunResult:
    """Continue the run in ``run_dir`` from ``checkpoints/last.npz``, bit-exactly.

    ``overrides`` may only touch :data:`RESUMABLE_KEYS` (for example ``training.epochs=30`` to train longer).
    """
    run_dir = Path(run_dir)
    config_path, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.npz"
    for needed in (config_path, last):
        if not needed.exists():
            raise CheckpointError(f"{run_dir}: not a resumable run folder ({needed.name} is missing)")
    old = build_config(read_yaml_mapping(config_path))
    config = build_config(read_yaml_mapping(config_path), overrides)
    changed = _changed_keys(old.model_dump(mode="json"), config.model_dump(mode="json"))
    refused = [k for k in changed if not k.startswith(RESUMABLE_KEYS)]
    if refused:
        raise ConfigError([f"{k}: cannot change when resuming (allowed: {', '.join(RESUMABLE_KEYS)})" for k in refused])
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    data_dir = data_dir or Path(info.get("data_dir", "data"))
    dataset = load_dataset(config.data, data_dir, progress)
    trainer = build_trainer(config, dataset, run_dir, list(callbacks))
    trainer.restore(last)
    state = trainer.state
    if state.stop_reason == "completed" and state.epoch < config.training.epochs:
        state.stop_reason = None  # asked to train longer
    if state.stop_reason is not None:
        raise UserError(
            f"{run_dir}: run already finished after {state.epoch} epochs ({state.stop_reason}); "
            f"pass training.epochs=N with N > {state.epoch} to train longer"
        )
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    _write_run_info(run_dir, {"status": "running", "resumed": [*info.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")]})
    return _train_and_finish(trainer)


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [c for k in keys for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in _changed_keys(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _train_and_finish(trainer: Trainer) -> RunResult:
    try:
        trainer.fit()
    except (TrainingInterrupted, KeyboardInterrupt):
        _write_run_info(trainer.run_dir, {"status": "interrupted", "epochs_done": trainer.state.epoch})
        raise
    metrics = finish(trainer)
    _write_run_info(trainer.run_dir, {"status": "completed", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return RunResult(trainer.run_dir, metrics)


def finish(trainer: Trainer) -> dict:
    """Restore the best weights, measure every split, write metrics.json and plots."""
    state, run_dir, dataset = trainer.state, trainer.run_dir, trainer.dataset
    if trainer.best_path.exists():
        load_weights(trainer.model, trainer.normalizer, trainer.best_path)
    metrics: dict = {
        "stop_reason": state.stop_reason,
        "epochs": state.epoch,
        "steps": state.step,
        "best_epoch": state.best_epoch,
        "monitor": trainer.config.training.monitor,
        "best_value": state.best_value,
        "dataset": dataset.description,
        "class_names": list(dataset.class_names),
        "train_time_s": float(sum(r["epoch_time"] for r in state.history)),
    }
    test_logits = None
    for name in ("train", "val", "test"):
        split = dataset.split(name)
        if len(split):
            loss, accuracy, logits = evaluate_split(trainer.model, trainer.normalizer, split)
            metrics[f"{name}_loss"], metrics[f"{name}_accuracy"] = loss, accuracy
            if name == "test":
                test_logits = logits
    if test_logits is not None:
        report = reports.classification_summary(dataset.test.labels, test_logits.argmax(1), dataset.class_names)
        metrics["test_macro_f1"] = report["macro avg"]["f1-score"]
        if trainer.config.output.plots:
            reports.plot_confusion(report["confusion_matrix"], dataset.class_names, run_dir / "plots", "test")
    atomic_write_json(run_dir / "metrics.json", metrics)
    if trainer.config.output.plots:
        reports.plot_history(state.history, run_dir / "plots")
        reports.plot_lr(trainer.schedule, state, run_dir / "plots" / "lr.png")
    return metrics
