"""Seconds per training epoch of the shipped MLP configs over 45,000 CIFAR-shaped images.

Usage: python benchmarks/mlp_epoch.py [--images 45000] [--repeats 3] [--threads N]

Synthetic uint8 images (the data's content does not change the arithmetic), the config's model,
optimizer, batch size and schedule; one full epoch of forward + backward + update, timed with the
same code path as `cifar-scratch train` (Trainer._run_epoch, validation excluded). Prints the median
and the spread of --repeats epochs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from cifar_scratch.config import load_config
from cifar_scratch.data import Dataset, Split
from cifar_scratch.training.run import build_trainer

REPO = Path(__file__).resolve().parents[1]


def epoch_seconds(config_path: Path, images: int, repeats: int) -> list[float]:
    config = load_config(config_path, ["data.val_fraction=0", "training.early_stopping=null", "output.plots=false"])
    rng = np.random.default_rng(0)
    classes = len(config.data.classes or range(10))
    split = Split(rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, images))
    empty = Split(split.images[:0], split.labels[:0])
    dataset = Dataset(split, empty, empty, tuple(str(i) for i in range(classes)), "synthetic")
    trainer = build_trainer(config, dataset, Path("/nonexistent"), [])
    trainer.save = lambda path: None  # time the arithmetic, not checkpoint writes
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer._run_epoch()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=45_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("configs", nargs="*", default=["configs/mlp3class.yaml", "configs/mlp10.yaml"])
    args = parser.parse_args()
    with threadpool_limits(args.threads, user_api="blas"):
        blas = [
            f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        ]
        print(f"numpy {np.__version__}, BLAS: {', '.join(blas)}, images per epoch: {args.images}")
        for name in args.configs:
            times = epoch_seconds(REPO / name, args.images, args.repeats)
            print(
                f"{name:28s} median {statistics.median(times):6.2f} s/epoch  "
                f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeats} epochs)  "
                f"{args.images / statistics.median(times):,.0f} images/s"
            )


if __name__ == "__main__":
    main()
