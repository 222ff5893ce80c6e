"""Metrics (scikit-learn) and figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, confusion_matrix  # noqa: E402

from cifar_scratch.fileio import atomic_open  # noqa: E402


def classification_summary(labels: np.ndarray, predictions: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix."""
    classes = list(range(len(class_names)))
    report = classification_report(
        labels, predictions, labels=classes, target_names=list(class_names), output_dict=True, zero_division=0
    )
    report["accuracy"] = float(np.mean(labels == predictions)) if len(labels) else float("nan")
    report["confusion_matrix"] = confusion_matrix(labels, predictions, labels=classes).tolist()
    report["text"] = classification_report(
        labels, predictions, labels=classes, target_names=list(class_names), digits=4, zero_division=0
    )
    return report


def _save(fig, path: Path) -> None:
    """Write the figure through a temporary name (a killed run never leaves half a PNG)."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _mark_best(ax, best_epoch: int | None) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")


def plot_history(history: list[dict], directory: Path, best_epoch: int | None = None) -> None:
    """loss.png and accuracy.png: train vs validation per epoch, the best epoch marked."""
    epochs = [row["epoch"] for row in history]
    for metric, label in (("loss", "cross-entropy loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for split, style in (("train", "o-"), ("val", "s--")):
            values = [np.nan if row[f"{split}_{metric}"] is None else row[f"{split}_{metric}"] for row in history]
            if not np.isnan(values).all():  # a run without a validation split draws no empty "validation" entry
                ax.plot(epochs, values, style, markersize=3, label="validation" if split == "val" else split)
        _mark_best(ax, best_epoch)
        ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run that diverged in its first epoch has nothing to draw
            ax.legend()
        _save(fig, directory / f"{metric}.png")


def plot_lr(lrs: list[float], steps_per_epoch: int, schedule_name: str, path: Path, best_epoch: int | None = None) -> None:
    """The learning rate of every step actually taken (so an extended or resumed run shows what ran), by epoch."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = (np.arange(len(lrs)) + 1) / steps_per_epoch
    ax.plot(epochs, lrs, linewidth=1.2)
    _mark_best(ax, best_epoch)
    ax.set(xlabel="epoch", ylabel="learning rate", title=f"learning rate of each step (schedule: {schedule_name})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if best_epoch is not None:
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix, class_names: tuple[str, ...], directory: Path, subject: str) -> None:
    """confusion_matrix.png (counts) and confusion_matrix_normalized.png (rows sum to 1, colours on [0, 1])."""
    counts = np.asarray(matrix)
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(class_names) + 2)
    for values, suffix, fmt, limits in (
        (counts, "", "d", {"vmin": 0}),
        (normalized, "_normalized", ".2f", {"vmin": 0, "vmax": 1}),
    ):
        fig, ax = plt.subplots(figsize=(size + 1, size))
        display = ConfusionMatrixDisplay(values, display_labels=list(class_names))
        display.plot(ax=ax, cmap="Blues", values_format=fmt, xticks_rotation=45, colorbar=True, im_kw=limits)
        for text in display.text_.ravel():
            text.set_fontsize(8)
        ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({subject}{', row-normalized' if suffix else ''})")
        _save(fig, directory / f"confusion_matrix{suffix}.png")


def plot_image_grid(images: np.ndarray, titles: list[str], correct: list[bool], path: Path, title: str, columns: int = 8) -> None:
    """Images (N, H, W, C) uint8 with a caption each. Right and wrong differ by a mark and by colour
    (blue/orange, which colour-blind readers tell apart), never by colour alone."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.7 + 0.6), layout="constrained")
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, image, caption, ok in zip(np.atleast_1d(axes).ravel(), images, titles, correct):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(("\u2713 " if ok else "\u2717 ") + caption, fontsize=7, color="tab:blue" if ok else "tab:orange")
    fig.suptitle(title)
    _save(fig, path)


def plot_comparison(curves: list[tuple[str, list[dict]]], path: Path, panels: list[tuple[str, str, list, list]] = ()) -> None:
    """One figure: the validation accuracy per epoch of every run (training accuracy for runs without
    a validation split, dashed), then one panel per swept parameter: (parameter, metric, x values, y values)."""
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(6 + 4 * len(panels), 4), squeeze=False, layout="constrained")
    ax = axes[0][0]
    for label, history in curves:
        epochs = [row["epoch"] for row in history]
        val = [np.nan if row.get("val_accuracy") is None else row["val_accuracy"] for row in history]
        if history and all(np.isnan(v) for v in val):
            ax.plot(epochs, [row.get("train_accuracy", np.nan) for row in history], "--", label=f"{label} (train)")
        else:
            ax.plot(epochs, val, "-", label=label)
    ax.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if 0 < len(curves) <= 12:
        ax.legend(fontsize="small")
    for ax, (parameter, metric, xs, ys) in zip(axes[0][1:], panels):
        # A seed names a draw, it measures nothing: its values are categories, not points on an axis.
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs) and not parameter.endswith("seed")
        if numeric:
            ax.plot(xs, ys, "o", alpha=0.7)
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and max(xs) / min(xs) >= 20:
                ax.set_xscale("log")
        else:
            names = [
                str(x) for x in sorted(set(xs), key=lambda x: (isinstance(x, str), x if isinstance(x, (int, float)) else str(x)))
            ]
            ax.plot([names.index(str(x)) for x in xs], ys, "o", alpha=0.7)
            ax.set_xticks(range(len(names)), names)
        ax.set(xlabel=parameter, ylabel=metric, title=f"{metric} by {parameter}")
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_layer_health(rows: list[dict], path: Path) -> None:
    """layers.png: per layer (x, in the model's order) and epoch (one line each, light to dark), the
    activations' standard deviation, the share of dead units, the gradient norm and the update ratio
    (against cs231n's rule of thumb, 1e-3). ``rows``: diagnostics.csv's."""
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    every = sorted({row["epoch"] for row in rows})
    # At most 8 epochs (the first, the last, evenly between): more lines would only blur together.
    epochs = sorted({every[round(i)] for i in np.linspace(0, len(every) - 1, min(8, len(every)))})
    at = {(row["epoch"], row["layer"]): row for row in rows}
    panels = (
        ("act_std", "activation std", "linear"),
        ("dead_fraction", "share of dead units", "linear"),
        ("grad_norm", "gradient norm", "log"),
        ("update_ratio", "update / weight ratio", "log"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(max(8.0, 0.45 * len(layers) + 4), 7.5))
    fig.subplots_adjust(hspace=0.55, wspace=0.35)  # room for the layer names (a constrained layout costs 0.4 s here)
    colours = plt.get_cmap("viridis")(np.linspace(0.9, 0.1, len(epochs)))
    for ax, (key, label, scale) in zip(axes.ravel(), panels):
        shown = [layer for layer in layers if any(at.get((e, layer), {}).get(key) is not None for e in epochs)]
        for colour, epoch in zip(colours, epochs):
            values = [at.get((epoch, layer), {}).get(key) for layer in shown]
            values = [np.nan if v is None or (scale == "log" and v <= 0) else v for v in values]
            ax.plot(range(len(shown)), values, "o-", color=colour, markersize=3, linewidth=1, label=f"epoch {epoch:g}")
        if key == "update_ratio":
            ax.axhline(1e-3, color="0.4", linestyle="--", linewidth=1, label="1e-3")
        if scale == "log" and ax.has_data() and np.isfinite(ax.dataLim.ymin) and ax.dataLim.ymin > 0:
            ax.set_yscale("log")
            # 1, 2 and 5 per decade as labelled ticks, no minor ones (they double the drawing time)
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xticks(range(len(shown)), shown, rotation=60, ha="right", fontsize=7)
        ax.set(ylabel=label, title=label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"per-layer health, epochs {', '.join(f'{e:g}' for e in epochs)}: light to dark")
    _save(fig, path)


def plot_lr_find(
    lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float | None, path: Path, name: str
) -> None:
    """lr_find.png: the loss of each step (light) and its smoothed curve against the learning rate (log
    scale), the suggested rate marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(lrs, losses, color="tab:blue", alpha=0.25, linewidth=1, label="loss of each step")
    ax.plot(lrs[: len(smoothed)], smoothed, color="tab:blue", linewidth=1.8, label="smoothed")
    if suggestion is not None:
        at = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - np.log(suggestion))))
        ax.axvline(suggestion, color="tab:orange", linestyle="--", linewidth=1)
        ax.plot([suggestion], [smoothed[at]], "o", color="tab:orange", label=f"suggested lr {suggestion:.3g}")
    if smoothed:  # the blow-up would flatten the useful part of the curve
        low, high = min(smoothed), smoothed[min(10, len(smoothed) - 1)]
        ax.set_ylim(low - 0.1 * (high - low + 1e-12), max(high, smoothed[0]) + 0.5 * (high - low + 1e-12))
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="training loss", title=f"learning-rate range test: {name}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)
