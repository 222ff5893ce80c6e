"""Wall time of a sweep of 8 digits runs with -j 1 and with -j 2 (the issue's bar: -j 2 <= 0.6x).

Usage: python benchmarks/sweep_parallel.py [--repeats 2] [--epochs 20]

The sweep is configs/digits.yaml over 4 learning rates x 2 seeds, each job a full `cifar-scratch
train` process (start-up, data, training, final metrics and plots). Each repeat runs the whole
sweep with -j 1, then with -j 2, into fresh folders; prints each time and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep_seconds(spec: Path, out: Path, jobs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cifar_scratch", "sweep", str(spec), "-j", str(jobs), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        spec = Path(scratch) / "spec.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "base": str(REPO / "configs" / "digits.yaml"),
                    "parameters": {
                        "optimizer.lr": {"values": [0.01, 0.03, 0.05, 0.1]},
                        "training.seed": {"values": [0, 1]},
                        "training.epochs": {"values": [args.epochs]},
                    },
                }
            )
        )
        times: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for jobs in (1, 2):
                seconds = sweep_seconds(spec, Path(scratch) / f"r{repeat}-j{jobs}", jobs)
                times[jobs].append(seconds)
                print(f"repeat {repeat + 1}: -j {jobs}: {seconds:.1f} s", flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"8 digits runs on {os.cpu_count()} cores: -j 1 {one:.1f} s, -j 2 {two:.1f} s (medians): -j 2 takes {two / one:.2f}x")


if __name__ == "__main__":
    main()
