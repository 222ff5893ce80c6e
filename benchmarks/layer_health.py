"""Cost of per-layer health (``output.health``) in training steps of a config, on CIFAR-shaped random images.

Usage: python benchmarks/layer_health.py [--config configs/cifar_cnn.yaml] [--steps 40] [--repeats 5] [--threads N]

Times blocks of ``--steps`` training steps (augmentation, forward, backward, gradient norms, update)
with the run's :class:`LayerHealth` attached and without, alternating in the same process, and prints
the median time per step of each and the relative cost. Health samples activations and updates every
``output.health_every`` steps, so a block should hold several samples. Evaluation and checkpoints,
which health does not touch, are left out: the share of a whole epoch is lower still.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from cifar_scratch.config import load_config
from cifar_scratch.data import Dataset, Split
from cifar_scratch.nn import kernels
from cifar_scratch.training.run import assemble
from cifar_scratch.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "cifar_cnn.yaml"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    config = load_config(args.config)
    rng = np.random.default_rng(0)
    batch = config.training.batch_size
    count = batch * args.steps

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))

    dataset = Dataset(split(count), split(batch), split(batch), tuple(f"c{i}" for i in range(10)), "random CIFAR-shaped images")
    with tempfile.TemporaryDirectory() as scratch, threadpool_limits(args.threads, user_api="blas"), kernels.using("fast"):
        trainer = Trainer(config, assemble(config, dataset), Path(scratch), [])
        health = trainer.health
        assert health is not None, "the config turns health off (output.health: false)"
        order = np.arange(count)
        times: dict[str, list[float]] = {"with health": [], "without": []}
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            for name in times:
                trainer.health = health if name == "with health" else None
                trainer.model.observe(health._observe if trainer.health is not None else None)
                started = time.perf_counter()
                for step in range(args.steps):
                    trainer._step(order[step * batch : (step + 1) * batch], 1e-3)
                if repeat:
                    times[name].append((time.perf_counter() - started) / args.steps)
    with_health, without = (statistics.median(times[k]) for k in ("with health", "without"))
    print(f"{Path(args.config).name}, batch {batch}, health every {config.output.health_every} steps")
    print(f"  step without health  {1e3 * without:8.2f} ms (median of {args.repeats} blocks of {args.steps})")
    print(f"  step with health     {1e3 * with_health:8.2f} ms")
    print(f"  cost                 {100 * (with_health / without - 1):+8.2f} %")


if __name__ == "__main__":
    main()
