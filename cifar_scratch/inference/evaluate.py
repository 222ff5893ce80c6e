"""``cifar-scratch evaluate``: a trained checkpoint measured on the test (or validation) split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifar_scratch import reports
from cifar_scratch.builders import build_model, model_input_shape
from cifar_scratch.config import RunConfig, load_config
from cifar_scratch.data import Normalizer, load_dataset
from cifar_scratch.errors import CheckpointError, DataError, UsageError
from cifar_scratch.fileio import atomic_folder, atomic_write_json
from cifar_scratch.nn import kernels
from cifar_scratch.nn.model import Sequential
from cifar_scratch.nn.reference import softmax
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.training.checkpoint import CheckpointMetadata, check_checkpoint_matches, load_weights
from cifar_scratch.training.evaluation import EVAL_BATCH, scores, split_logits

GRID_SIZE = 32


def locate(target: Path) -> tuple[Path, Path]:
    """A run folder (its best checkpoint, else last) or a checkpoint file -> (run folder, checkpoint)."""
    target = Path(target)
    if target.is_file():
        if target.suffix in (".yaml", ".yml"):
            raise UsageError(f"{target}: this is a config, not a run folder; train it first: cifar-scratch train {target}")
        run_dir = target.parent.parent if target.parent.name == RunFolder.CHECKPOINTS else target.parent
        return run_dir, target
    folder = RunFolder(target)
    for checkpoint in (folder.best, folder.last):
        if checkpoint.is_file():
            return target, checkpoint
    raise CheckpointError(f"{target}: no checkpoints/best.npz or checkpoints/last.npz (is it a run folder?)")


def run_config(run_dir: Path, notes: list[str] | None = None) -> RunConfig:
    """The config a run folder was trained with (its config.yaml). Its copies of user code must be as
    they were; ``notes`` gets a line for each, since loading the run imports (runs) it."""
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise CheckpointError(f"{run_dir}: config.yaml is missing, so the model cannot be rebuilt")
    for file in folder.checked_code():
        if notes is not None:
            notes.append(
                f"imports the run's copy of user code {file} (a run folder with user code is code: load only runs you trust)"
            )
    return load_config(folder.config)


def restore_model(
    config: RunConfig, checkpoint: Path, image_shape: tuple[int, ...], classes: int
) -> tuple[Sequential, Normalizer, CheckpointMetadata]:
    """The config's model with the checkpoint's weights, and the normalisation it was trained with."""
    model = build_model(config.model, image_shape, classes, np.random.default_rng(0), EVAL_BATCH)
    channels = image_shape[-1]
    normalizer = Normalizer(np.zeros(channels, np.float32), np.ones(channels, np.float32))  # filled from the checkpoint
    meta = load_weights(model, normalizer, checkpoint)
    return model, normalizer, meta


def restore_run(
    run_dir: Path, checkpoint: Path, notes: list[str] | None = None
) -> tuple[RunConfig, Sequential, Normalizer, list[str]]:
    """A run folder's config, its model (eval mode) with ``checkpoint``'s weights, its normalisation and its
    class names, from config.yaml and run.json, for inference without the data (predict, export, the API).
    A run from before run.json recorded ``image_shape`` takes its dataset's input shape."""
    config = run_config(run_dir, notes)
    info = RunFolder(run_dir).read_info()
    class_names = info.get("class_names")
    if not isinstance(class_names, list) or not class_names:
        raise CheckpointError(f"{run_dir}: run.json lists no class_names")
    recorded = info.get("image_shape")
    shape = tuple(recorded) if isinstance(recorded, list) and len(recorded) == 3 else model_input_shape(config)
    model, normalizer, _ = restore_model(config, checkpoint, shape, len(class_names))
    return config, model.eval(), normalizer, [str(name) for name in class_names]


def evaluate_checkpoint(
    target: Path,
    split: str = "test",
    data_dir: Path | None = None,
    progress: bool = True,
    notes: list[str] | None = None,
    tta: str | None = None,
    engine: str | None = None,
) -> tuple[Path, dict]:
    """Write metrics.json, confusion_matrix.json/.png, samples.png and misclassified.png; return (folder, metrics).

    ``notes`` collects what the user should know about the weights measured (an unfinished run, say);
    ``tta`` and ``engine`` default to the run's ``training.tta`` and ``training.engine``.
    """
    notes = notes if notes is not None else []
    run_dir, checkpoint = locate(target)
    config = run_config(run_dir, notes)
    info = RunFolder(run_dir).read_info()
    dataset = load_dataset(config.data, data_dir or Path(info.get("data_dir", "data")), progress)
    data = dataset.split(split)
    if not len(data):
        raise DataError(f"the {split} split is empty (data.val_fraction is 0?)")
    model, normalizer, meta = restore_model(config, checkpoint, dataset.image_shape, len(dataset.class_names))
    check_checkpoint_matches(meta, config, dataset.fingerprint(), dataset.class_names, checkpoint)
    notes += _caveats(info.get("status"), meta, config, checkpoint.name == RunFolder.LAST and Path(target).is_dir())
    tta, engine = tta or config.training.tta, engine or config.training.engine
    with kernels.using(engine, config.training.conv_algorithm):
        metrics, logits, report = _measure(model, normalizer, data, dataset.class_names, tta, config.training.batch_size)
    head = {"checkpoint": str(checkpoint), "epoch": meta.epoch, "notes": notes, "split": split, "samples": len(data)}
    metrics = head | {"engine": engine} | metrics
    # Everything goes into a temporary folder that replaces eval/<split>/ whole: an interrupted
    # evaluate leaves the previous results, never a mix of old and new files.
    out_dir = RunFolder(run_dir).evaluation(split, checkpoint)
    with atomic_folder(out_dir, RunFolder.EVAL_FILES) as staging:
        atomic_write_json(staging / "metrics.json", metrics)
        atomic_write_json(
            staging / "confusion_matrix.json",
            {"class_names": list(dataset.class_names), "predictions": metrics["report_of"], "matrix": report["confusion_matrix"]},
        )
        subject = f"{split}, TTA {tta}" if tta != "none" else split
        reports.plot_confusion(report["confusion_matrix"], dataset.class_names, staging, subject)
        _image_grids(data, softmax(logits), dataset.class_names, split, staging)
    return out_dir, metrics


def _caveats(status: str | None, meta: CheckpointMetadata, config: RunConfig, last_of_folder: bool) -> list[str]:
    """What a user should know about the weights measured: an unfinished run, an untrained model."""
    notes = []
    if status != "completed":
        notes.append(
            f"the run is not finished (run.json status: {status or 'unknown'}, {meta.epoch} of "
            f"{config.training.epochs} epochs trained)"
        )
    if last_of_folder:
        notes.append(
            f"no best checkpoint yet: measuring checkpoints/last.npz, the weights after epoch {meta.epoch} "
            f"(step {meta.step})" + (", i.e. untrained" if meta.step == 0 else "")
        )
    return notes


def _measure(
    model: Sequential, normalizer: Normalizer, data, names: tuple[str, ...], tta: str, batch_size: int
) -> tuple[dict, np.ndarray, dict]:
    """Loss, accuracy and the classification report of ``data``, plain and (unless ``tta`` is none) with
    TTA, in batches of ``batch_size`` (the run's) -> (metrics, the logits reported on, their report): the
    TTA ones when there are any."""
    logits, averaged = split_logits(model, normalizer, data, tta, batch_size)
    loss, accuracy = scores(logits, data.labels)
    report = reports.classification_summary(data.labels, logits.argmax(1), names)
    metrics = {"samples": len(data), "tta": tta, "loss": loss, "accuracy": accuracy, **_averages(report, names, "")}
    if averaged is not None:  # the report, confusion matrix and grids then show the TTA predictions
        (loss_tta, accuracy_tta), logits = scores(averaged, data.labels), averaged
        report = reports.classification_summary(data.labels, logits.argmax(1), names)
        metrics |= {"loss_tta": loss_tta, "accuracy_tta": accuracy_tta, **_averages(report, names, "_tta")}
    of = f"the TTA predictions ({tta})" if tta != "none" else "the plain predictions (no TTA)"
    return metrics | {"report_of": of, "report": report["text"]}, logits, report


def _image_grids(data, probabilities: np.ndarray, names: tuple[str, ...], split: str, folder: Path) -> None:
    """samples.png (a seeded random sample) and misclassified.png (the most confident mistakes)."""
    predictions = probabilities.argmax(1)
    sample = np.sort(np.random.default_rng(0).choice(len(data), size=min(GRID_SIZE, len(data)), replace=False))
    confidence = probabilities[np.arange(len(data)), predictions]
    wrong = np.flatnonzero(predictions != data.labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:GRID_SIZE]
    for chosen, filename, title in (
        (sample, "samples.png", f"random {split} images: predicted (true)"),
        (worst, "misclassified.png", f"most confident mistakes on {split}: predicted p (true)"),
    ):
        captions = [f"{names[predictions[i]]} {confidence[i]:.2f}\n({names[data.labels[i]]})" for i in chosen]
        correct = list(predictions[chosen] == data.labels[chosen])
        reports.plot_image_grid(data.images[chosen], captions, correct, folder / filename, title)


def _averages(report: dict, names: tuple[str, ...], suffix: str) -> dict:
    """Macro and weighted averages and per-class figures of a classification report, keys ending in ``suffix``."""
    return {
        f"macro_precision{suffix}": report["macro avg"]["precision"],
        f"macro_recall{suffix}": report["macro avg"]["recall"],
        f"macro_f1{suffix}": report["macro avg"]["f1-score"],
        f"weighted_f1{suffix}": report["weighted avg"]["f1-score"],
        f"per_class{suffix}": {n: {k: report[n][k] for k in ("precision", "recall", "f1-score", "support")} for n in names},
    }
