"""scikit-learn's bundled 8x8 handwritten digits: 1,797 images, offline, for quick demos and tests."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

CLASSES = tuple(str(d) for d in range(10))


def load() -> tuple[np.ndarray, np.ndarray]:
    """-> images (1797, 8, 8, 1) uint8 scaled from 0..16 to 0..255, labels (1797,) int64."""
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int64)
