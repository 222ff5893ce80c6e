"""Classify image files with a trained run: top-k classes and their probabilities.

Images of any size and mode are read with Pillow and brought to the model's input the way
torchvision's ``Resize(size) + CenterCrop(size)`` does: the shorter side is scaled to the model's
size (bilinear, antialiased), then the centre is cropped, so the aspect ratio is kept. Colour images
become grayscale for a one-channel model (MNIST, Fashion-MNIST, digits) and grayscale ones RGB for a
three-channel one. The run's own normalisation (saved in its checkpoint) is applied, as in training.
MNIST-style models expect a light object on a dark background, as their training images are.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from cifar_scratch.data import images as pictures
from cifar_scratch.errors import DataError, UsageError
from cifar_scratch.fileio import format_bytes, open_regular
from cifar_scratch.inference.evaluate import locate, restore_run
from cifar_scratch.nn import kernels
from cifar_scratch.nn.reference import softmax
from cifar_scratch.training.evaluation import EVAL_BATCH

#: Largest image accepted, in pixels, checked from the header before decoding (decompression bombs).
MAX_PIXELS = 100_000_000
#: Largest image file accepted, checked from its size before anything is read: 100 megapixels of
#: 16-bit RGBA, uncompressed, are 800 MB.
MAX_IMAGE_BYTES = 1_000_000_000


def load_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file -> uint8 (H, W, C) of the model's input ``shape``."""
    height, width, channels = shape
    try:
        handle = open_regular(path)  # a FIFO would block, a device never end
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:  # a folder or a FIFO given as an image is a usage error; an unreadable file a data error
        raise (UsageError if exc.errno == errno.EINVAL else DataError)(f"{path}: {exc.strerror}") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_IMAGE_BYTES:
            raise DataError(
                f"{path}: not a readable image ({format_bytes(size)}; an image file here holds {format_bytes(MAX_IMAGE_BYTES)} at most)"
            )
        return _decode_to(handle, path, shape)


def _decode_to(handle, path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An opened image file as the run's training images were made (:mod:`cifar_scratch.data.images`):
    upright, in the model's channels, resized to cover ``shape`` and centre-cropped."""
    height, width, channels = shape
    with pictures.open_image(handle.read(), str(path), MAX_PIXELS) as image:
        return pictures.to_pixels(image, str(path), channels, (height, width))


def predict_images(
    target: Path, images: list[Path], top_k: int = 3, engine: str | None = None, notes: list[str] | None = None
) -> tuple[Path, list[dict]]:
    """-> (checkpoint used, one {"image", "predictions": [{"class", "probability"}...]} per image); ``engine``
    defaults to the run's ``training.engine``; ``notes`` collects what the user should know (user code imported)."""
    if not Path(target).exists():
        raise UsageError(f"{target}: no such run folder or checkpoint")
    run_dir, checkpoint = locate(target)
    config, model, normalizer, class_names = restore_run(run_dir, checkpoint, notes)
    pixels = np.stack([load_image(Path(path), model.input_shape) for path in images])
    with kernels.using(engine or config.training.engine, config.training.conv_algorithm):
        logits = np.concatenate(
            [model.forward(normalizer(pixels[i : i + EVAL_BATCH])) for i in range(0, len(pixels), EVAL_BATCH)]
        )
    probabilities = softmax(logits)
    k = min(top_k, len(class_names))
    results = []
    for path, row in zip(images, probabilities):
        order = np.argsort(-row, kind="stable")[:k]
        results.append(
            {"image": str(path), "predictions": [{"class": class_names[i], "probability": float(row[i])} for i in order]}
        )
    return checkpoint, results
