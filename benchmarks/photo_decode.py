"""Decoding a folder of phone-sized photos: one thread against the pool ``imagefolder`` uses for large files.

Usage: python benchmarks/photo_decode.py [--photos 300] [--width 4000] [--height 3000] [--size 64] [--repeats 3]

Writes ``--photos`` JPEGs (quality 90, smooth noise, so they compress like photos: about a megabyte
each at 12 megapixels) into a temporary flat folder of 3 classes once, then times
``imagefolder.load`` to ``--size`` x ``--size`` without its cache, with 1 worker and with the default
pool (:data:`cifar_scratch.data.imagefolder.PARALLEL_BYTES` decides), each ``--repeats`` times
alternately, and prints the medians, the images per second and the peak memory of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cifar_scratch.data import imagefolder


def write_photos(root: Path, count: int, width: int, height: int) -> int:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (count, height // 50, width // 50, 3), dtype=np.uint8)
    total = 0
    for i in range(count):
        image = Image.fromarray(small[i]).resize((width, height), Image.Resampling.BICUBIC)  # smooth, like a photo
        path = root / f"class{i % 3}" / f"IMG_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        total += path.stat().st_size
    return total


def timed(root: Path, size: int, workers: int | None) -> float:
    original = imagefolder.PARALLEL_BYTES
    if workers == 1:
        imagefolder.PARALLEL_BYTES = float("inf")
    try:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            imagefolder.load(root, Path(cache), progress=False, size=(size, size))
            return time.perf_counter() - start
    finally:
        imagefolder.PARALLEL_BYTES = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "photos"
        total = write_photos(root, args.photos, args.width, args.height)
        print(
            f"{args.photos} photos of {args.width}x{args.height}, {total / args.photos / 1e6:.2f} MB each; {os.cpu_count()} CPUs"
        )
        times: dict[str, list[float]] = {"1 thread": [], "pool": []}
        for _ in range(args.repeats):
            times["1 thread"].append(timed(root, args.size, 1))
            times["pool"].append(timed(root, args.size, None))
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"{name:>8}: {median:6.2f} s median of {', '.join(f'{v:.2f}' for v in values)}; {args.photos / median:,.0f} photos/s"
            )
        print(f"pool / 1 thread: {statistics.median(times['pool']) / statistics.median(times['1 thread']):.2f}x the time")
        print(f"peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
