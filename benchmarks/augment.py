"""Cost of online augmentation for one batch of CIFAR-shaped images, next to one training step.

Usage: python benchmarks/augment.py [--batch 512] [--repeats 50] [--threads N] [--config configs/cnn_im2col_study.yaml]

Times `cifar_scratch.data.augment.augment` (draw + apply) on a uint8 (batch, 32, 32, 3) batch for
several settings, and one training step (forward + backward + update) of --config at the same batch
size, in the same run. Prints medians.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from cifar_scratch.config import AugmentConfig, load_config
from cifar_scratch.data.augment import augment
from cifar_scratch.diagnostics.benchmark import OurModel, median_ms

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "flip": AugmentConfig(flip=True),
    "flip + translate 2 (reflect)": AugmentConfig(flip=True, translate=2),
    "flip + translate 4 (zero)": AugmentConfig(flip=True, translate=4, padding="zero"),
    "flip + translate 4 + cutout 8": AugmentConfig(flip=True, translate=4, padding="zero", cutout=8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--config", default="configs/cnn_im2col_study.yaml", help="default: the smallest shipped CNN")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    with threadpool_limits(args.threads, user_api="blas"):
        for name, config in SETTINGS.items():
            print(
                f"augment {name:32s} {median_ms(lambda: augment(images, config, rng), args.repeats):7.2f} ms / batch of {args.batch}"
            )
        step = OurModel(load_config(REPO / args.config), args.batch).train_step
        print(f"training step of {args.config} {median_ms(step, max(5, args.repeats // 5)):7.2f} ms / batch of {args.batch}")


if __name__ == "__main__":
    main()
