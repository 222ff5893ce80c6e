"""Metrics (scikit-learn) and figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402

from cifar_scratch.config import PlateauSchedule  # noqa: E402


def classification_summary(labels: np.ndarray, predictions: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix."""
    classes = list(range(len(class_names)))
    report = classification_report(
        labels, predictions, labels=classes, target_names=list(class_names), output_dict=True, zero_division=0
    )
    report["accuracy"] = float(np.mean(labels == predictions)) if len(labels) else float("nan")
    report["confusion_matrix"] = confusion_matrix(labels, predictions, labels=classes).tolist()
    return report


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_history(history: list[dict], directory: Path) -> None:
    """loss.png and accuracy.png: train vs validation per epoch."""
    epochs = [row["epoch"] for row in history]
    for metric, label in (("loss", "cross-entropy loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for split in ("train", "val"):
            values = [np.nan if row[f"{split}_{metric}"] is None else row[f"{split}_{metric}"] for row in history]
            ax.plot(epochs, values, marker="o", markersize=3, label="validation" if split == "val" else split)
        ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        _save(fig, directory / f"{metric}.png")


def plot_lr(schedule, state, path: Path) -> None:
    """The learning rate of every step taken (per epoch for plateau, whose rate depends on metrics)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if isinstance(schedule.spec, PlateauSchedule):
        ax.step([r["epoch"] for r in state.history], [r["lr"] for r in state.history], where="post")
        ax.set_xlabel("epoch")
    else:
        steps = np.arange(state.step)
        ax.plot(steps, [schedule.lr_at(int(s)) for s in steps])
        ax.set_xlabel("step")
    ax.set(ylabel="learning rate", title=f"schedule: {schedule.spec.name}")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion(matrix, class_names: tuple[str, ...], directory: Path, split: str) -> None:
    """confusion_matrix.png (counts) and confusion_matrix_normalized.png (rows sum to 1)."""
    counts = np.asarray(matrix)
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(class_names) + 2)
    for values, suffix, fmt in ((counts, "", "d"), (normalized, "_normalized", ".2f")):
        fig, ax = plt.subplots(figsize=(size + 1, size))
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046)
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha="right")
        ax.set_yticks(ticks, class_names)
        ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({split}{', row-normalized' if suffix else ''})")
        threshold = values.max() / 2 if values.size else 0
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > threshold else "black")
        _save(fig, directory / f"confusion_matrix{suffix}.png")


def plot_image_grid(images: np.ndarray, titles: list[str], correct: list[bool], path: Path, title: str, columns: int = 8) -> None:
    """Images (N, H, W, C) uint8 with a caption each; green captions are right, red ones wrong."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, image, caption, ok in zip(np.atleast_1d(axes).ravel(), images, titles, correct):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(caption, fontsize=7, color="green" if ok else "red")
    fig.suptitle(title)
    _save(fig, path)
