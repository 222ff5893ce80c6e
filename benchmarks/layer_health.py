"""Cost of per-layer health (``output.health``) in training steps of a config, on CIFAR-shaped random images.

Usage: python benchmarks/layer_health.py [--config configs/cifar_cnn.yaml] [--blocks 30] [--threads 2]

Two measures, in one process, with the threads a run takes:

- the time spent inside health's hooks (the activation observer, the gradient and update sums, the
  weight copy of sampled steps) over all steps taken with health, against those steps' total time;
- paired blocks of ``output.health_every`` steps (each holds one sampled step), one with health and
  one without, in alternating order: the median of the pairs' time ratios. The machine's drift makes
  single blocks noisy; pairing side by side cancels most of it.

Evaluation and checkpoints, which health does not touch, are left out: the share of a whole epoch is
lower still.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from cifar_scratch import runtime
from cifar_scratch.config import load_config
from cifar_scratch.data import Dataset, Split
from cifar_scratch.nn import kernels
from cifar_scratch.training.run import assemble
from cifar_scratch.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
HOOKS = ("begin_step", "_observe", "after_backward", "after_update")


def timed(health, spent: list[float]) -> None:
    """Wrap the hooks of ``health`` so that their time adds up in ``spent[0]``."""
    for name in HOOKS:
        method = getattr(health, name)

        def wrapper(*args, _method=method, **kwargs):
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        setattr(health, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "cifar_cnn.yaml"))
    parser.add_argument("--blocks", type=int, default=30, help="pairs of blocks")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config = load_config(args.config)
    rng = np.random.default_rng(0)
    batch, every = config.training.batch_size, config.output.health_every
    count = batch * every

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))

    dataset = Dataset(split(count), split(batch), split(batch), tuple(f"c{i}" for i in range(10)), "random CIFAR-shaped images")
    # The threads a run takes (BLAS and the engine's pool), as `cifar-scratch train --threads` sets them.
    with tempfile.TemporaryDirectory() as scratch, runtime.compute(args.threads), kernels.using("fast"):
        trainer = Trainer(config, assemble(config, dataset), Path(scratch), [])
        health = trainer.health
        assert health is not None, "the config turns health off (output.health: false)"
        spent = [0.0]
        timed(health, spent)
        order = np.arange(count)

        def block(on: bool) -> float:
            trainer.health = health if on else None
            trainer.model.observe(health._observe if on else None)
            trainer.state.step = 0  # the block's first step is a sampled one
            started = time.perf_counter()
            for step in range(every):
                trainer._step(order[step * batch : (step + 1) * batch], 1e-3)
            return time.perf_counter() - started

        block(True), block(False)  # warm-up
        spent[0] = 0.0
        ratios, with_health = [], 0.0
        for pair in range(args.blocks):
            first = pair % 2 == 0
            a, b = block(first), block(not first)
            on, off = (a, b) if first else (b, a)
            ratios.append(on / off)
            with_health += on
    print(f"{Path(args.config).name}, batch {batch}, health every {every} steps, {args.threads} threads")
    print(f"  time in health's hooks: {100 * spent[0] / with_health:.2f} % of the steps taken with health")
    print(
        f"  paired blocks of {every} steps, with / without: median {statistics.median(ratios):.4f} "
        f"(quartiles {np.percentile(ratios, 25):.4f}-{np.percentile(ratios, 75):.4f}, {args.blocks} pairs)"
    )


if __name__ == "__main__":
    main()
