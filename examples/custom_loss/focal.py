"""Focal loss (Lin et al., 2017): cross-entropy that down-weights the examples already classified well,
-(1 - p_t)^gamma log p_t, averaged over the batch.

A loss of your own, in your own file: loss: {name: focal.py:Focal, gamma: 2.0}. It shapes the gradient;
the history still reports plain cross-entropy, so runs with different losses compare.
"""

import numpy as np

from cifar_scratch.nn.losses import Loss


class Focal(Loss):
    def __init__(self, gamma: float = 2.0):
        self.gamma = gamma

    def forward(self, logits, labels):
        """logits (N, K), labels (N,) -> (mean loss, dlogits (N, K))."""
        n = len(labels)
        shifted = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(axis=1, keepdims=True)
        pt = p[np.arange(n), labels]
        log_pt = np.log(np.maximum(pt, np.finfo(logits.dtype).tiny))
        weight = (1.0 - pt) ** self.gamma
        loss = -(weight * log_pt).mean()
        # d/d(log pt) of -(1 - pt)^g log pt, with d(pt)/d(log pt) = pt; then d(log pt)/d(logits) = onehot - p.
        dlog_pt = -weight + self.gamma * (1.0 - pt) ** (self.gamma - 1.0) * pt * log_pt
        onehot = np.zeros_like(p)
        onehot[np.arange(n), labels] = 1.0
        dlogits = (dlog_pt / n)[:, None] * (onehot - p)
        return float(loss), dlogits.astype(logits.dtype)
