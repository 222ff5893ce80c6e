"""Losses: logits and labels in, the mean loss and its gradient with respect to the logits out.

A loss is a callable object, ``loss(logits, labels) -> (value, dlogits)`` with logits (N, K) float and
labels (N,) int in [0, K), as cs231n's ``softmax_loss``. A user's loss subclasses :class:`Loss` and
writes :meth:`Loss.forward`; the training loop calls it on every batch and ``gradcheck`` checks the
model through it. The history reports plain cross-entropy whichever loss trains, so runs compare.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.nn.reference import softmax_cross_entropy


class Loss:
    """Mean loss over a batch and its gradient; subclasses write :meth:`forward`."""

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """logits (N, K), labels (N,) -> (mean loss, dlogits (N, K) in the logits' dtype)."""
        raise NotImplementedError

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        return self.forward(logits, labels)


class CrossEntropy(Loss):
    """Softmax cross-entropy, with optional label smoothing (``training.label_smoothing``)."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def forward(self, logits, labels):
        return softmax_cross_entropy(logits, labels, self.label_smoothing)
