"""Runs sharing a machine: N `cifar-scratch train` processes started at once (as `xargs -P N` does), at the
default thread count and with `--threads 1`. The issue's bar: the default within 1.3x of `--threads 1`.

Usage: python benchmarks/concurrent_runs.py [--runs 4] [--epochs 3] [--repeats 2] [--config configs/mlp3class.yaml]

Each run is a whole command (start-up, data from the cache, training, final metrics and plots) with its
own seed, exactly the README's `seq 0 3 | xargs -P 4 -I{} cifar-scratch train CONFIG training.seed={}`
plus `training.epochs`. The data cache is filled once before timing. Each repeat times the N runs with
the default threads, then with --threads 1, into fresh folders; prints every wall time, each run's
median epoch time, and the median ratio. Prints the CPU and how many CPUs this process may use.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def concurrent(config: Path, runs: int, epochs: int, threads: list[str], out: Path) -> tuple[float, list[float]]:
    """Wall seconds of ``runs`` concurrent train commands, and each run's median epoch time."""
    command = [sys.executable, "-m", "cifar_scratch", "train", str(config), f"training.epochs={epochs}", "--quiet"]
    start = time.perf_counter()
    processes = [
        subprocess.Popen([*command, f"training.seed={seed}", "--runs-dir", str(out), *threads], stdout=subprocess.PIPE, text=True)
        for seed in range(runs)
    ]
    folders = [Path(p.communicate()[0].strip().splitlines()[-1]) for p in processes]
    wall = time.perf_counter() - start
    if any(p.returncode for p in processes):
        raise SystemExit(f"a run failed: exit codes {[p.returncode for p in processes]}")
    epochs_s = []
    for folder in folders:
        with open(folder / "history.csv", newline="") as handle:
            epochs_s.append(statistics.median(float(row["epoch_time"]) for row in csv.DictReader(handle)))
    return wall, epochs_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "mlp3class.yaml")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cpu_name()}: {cpus} CPUs for this process; {args.runs} runs of {args.config.name}, {args.epochs} epochs each")
    with tempfile.TemporaryDirectory() as scratch:
        # Fill the data cache (decoding, splits) once, outside the timing.
        concurrent(args.config, 1, 1, ["--threads", "1"], Path(scratch) / "warm")
        walls: dict[str, list[float]] = {"default": [], "--threads 1": []}
        for repeat in range(args.repeats):
            for label, threads in (("default", []), ("--threads 1", ["--threads", "1"])):
                wall, epochs_s = concurrent(
                    args.config, args.runs, args.epochs, threads, Path(scratch) / f"r{repeat}-{len(threads)}"
                )
                walls[label].append(wall)
                print(
                    f"repeat {repeat + 1}: {label:<12} {wall:6.1f} s wall; median epoch per run: "
                    + ", ".join(f"{s:.1f}" for s in epochs_s)
                    + " s",
                    flush=True,
                )
    default, single = statistics.median(walls["default"]), statistics.median(walls["--threads 1"])
    print(f"medians: default {default:.1f} s, --threads 1 {single:.1f} s: the default takes {default / single:.2f}x")


if __name__ == "__main__":
    main()
