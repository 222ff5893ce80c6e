"""Digests of what a run computed, to show that a change to the code changed no result.

Usage: python scripts/run_digest.py RUN_DIR [RUN_DIR ...]
       python scripts/run_digest.py --train CONFIG [OVERRIDES ...]   (trains into a temporary folder first)

For each run: SHA-256 of every array of checkpoints/last.npz and best.npz (names, dtypes, shapes and
bytes), of history.csv without its epoch_time column, and of metrics.json without train_time_s (the
two wall-clock figures), then one digest of them all. Run it before and after a change on the same
machine (results depend on the BLAS kernels a CPU runs), with the same thread count: equal digests
mean bit-identical runs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TIMING = ("epoch_time", "train_time_s")


def arrays_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with np.load(path, allow_pickle=False) as stored:
        for name in sorted(stored.files):
            array = stored[name]
            if not isinstance(array, np.ndarray):  # metadata.json: paths and timings, not results
                continue
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def history_digest(path: Path) -> str:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    kept = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def metrics_digest(path: Path) -> str:
    metrics = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
    return hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()


def digests(run_dir: Path) -> dict[str, str]:
    parts = {
        "checkpoints/last.npz": arrays_digest(run_dir / "checkpoints" / "last.npz"),
        "history.csv (no epoch_time)": history_digest(run_dir / "history.csv"),
        "metrics.json (no train_time_s)": metrics_digest(run_dir / "metrics.json"),
    }
    if (run_dir / "checkpoints" / "best.npz").exists():
        parts["checkpoints/best.npz"] = arrays_digest(run_dir / "checkpoints" / "best.npz")
    parts["all"] = hashlib.sha256("".join(parts[k] for k in sorted(parts)).encode()).hexdigest()
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--train", nargs=argparse.REMAINDER, help="CONFIG [OVERRIDES...]: train first, then digest")
    args = parser.parse_args()
    runs = list(args.runs)
    scratch = None
    if args.train:
        scratch = tempfile.TemporaryDirectory()
        command = [sys.executable, "-m", "cifar_scratch", "train", *args.train, "--quiet", "--runs-dir", scratch.name]
        runs.append(Path(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
    for run in runs:
        print(f"{run.name}:")
        for part, value in digests(run).items():
            print(f"  {part:32s} {value[:16]}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
