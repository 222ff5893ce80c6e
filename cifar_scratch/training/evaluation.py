"""Measuring a model on a split: an eval-mode pass in batches, with test-time augmentation if asked."""

from __future__ import annotations

import numpy as np

from cifar_scratch.data import Normalizer, Split
from cifar_scratch.data.augment import tta_views
from cifar_scratch.nn.model import Sequential
from cifar_scratch.nn.reference import cross_entropy

#: Images per batch where no run's training.batch_size applies (predict). A run and the evaluate command
#: measure in batches of the run's training batch size: a training step of that size, caches and all,
#: fitted, and larger batches go faster (speedrun94's test split: docs/measurements.md).
EVAL_BATCH = 256


def split_logits(
    model: Sequential, normalizer: Normalizer, split: Split, tta: str = "none", batch_size: int = EVAL_BATCH
) -> tuple[np.ndarray, np.ndarray | None]:
    """Eval-mode pass over a split -> (logits (N, K) float32, TTA logits (N, K) or None when ``tta`` is none).

    The TTA logits (``tta``: flip, flip+translate) are the weighted mean over the views; the first view
    is the images themselves, so the plain logits come from the same pass, not from another one.
    """
    was_training = model.training
    model.eval()
    plain, averaged = [], []
    for i in range(0, len(split), batch_size):
        (first, weight), *others = tta_views(split.images[i : i + batch_size], tta)
        logits = model.forward(normalizer(first))
        plain.append(logits)
        if others:
            mean = logits * logits.dtype.type(weight)
            for view, weight in others:
                mean += logits.dtype.type(weight) * model.forward(normalizer(view))
            averaged.append(mean)
    if was_training:
        model.train()

    def joined(chunks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(chunks) if chunks else np.zeros((0, model.output_shape[0]), np.float32)

    return joined(plain), (joined(averaged) if tta != "none" else None)


def scores(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """logits (N, K), labels (N,) -> (mean cross-entropy, accuracy); NaN for an empty split."""
    if not len(labels):
        return float("nan"), float("nan")
    return cross_entropy(logits, labels), float((logits.argmax(1) == labels).mean())


def evaluate_split(
    model: Sequential, normalizer: Normalizer, split: Split, batch_size: int = EVAL_BATCH, tta: str = "none"
) -> tuple[float, float, np.ndarray]:
    """Eval-mode pass over a split -> (mean loss, accuracy, logits (N, K) float32): of the TTA logits
    when ``tta`` is not none (:func:`split_logits` gives both)."""
    plain, averaged = split_logits(model, normalizer, split, tta, batch_size)
    logits = plain if averaged is None else averaged
    return (*scores(logits, split.labels), logits)
