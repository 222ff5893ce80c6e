"""Measuring a model on a split: an eval-mode pass in batches, with test-time augmentation if asked."""

from __future__ import annotations

import numpy as np

from cifar_scratch.data import Normalizer, Split
from cifar_scratch.data.augment import tta_views
from cifar_scratch.nn.model import Sequential
from cifar_scratch.nn.reference import cross_entropy

EVAL_BATCH = 256  # bounds the im2col buffers of convolutions in eval mode


def evaluate_split(
    model: Sequential, normalizer: Normalizer, split: Split, batch_size: int = EVAL_BATCH, tta: str = "none"
) -> tuple[float, float, np.ndarray]:
    """Eval-mode pass over a split -> (mean loss, accuracy, logits (N, K) float32).

    With test-time augmentation (``tta``: flip, flip+translate) the logits are the weighted mean over the views.
    """
    was_training = model.training
    model.eval()
    chunks = []
    for i in range(0, len(split), batch_size):
        (first, weight), *others = tta_views(split.images[i : i + batch_size], tta)
        logits = model.forward(normalizer(first))
        if others:
            logits = logits * logits.dtype.type(weight)
            for view, weight in others:
                logits += logits.dtype.type(weight) * model.forward(normalizer(view))
        chunks.append(logits)
    if was_training:
        model.train()
    if not chunks:
        return float("nan"), float("nan"), np.zeros((0, model.output_shape[0]), np.float32)
    logits = np.concatenate(chunks)
    return cross_entropy(logits, split.labels), float((logits.argmax(1) == split.labels).mean()), logits
