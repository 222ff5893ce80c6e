"""Run folders: ``<runs_dir>/<YYYYmmdd-HHMMSS>_<name>[-N]``, created atomically and never reused."""

from __future__ import annotations

import time
from pathlib import Path

#: What ``evaluate`` writes into ``eval/<split>/``.
EVAL_FILES = (
    "metrics.json",
    "confusion_matrix.json",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "samples.png",
    "misclassified.png",
)


def create_run_dir(runs_dir: str | Path, name: str, now: float | None = None) -> Path:
    """Make a fresh run folder. ``mkdir`` is atomic, so runs started in the same second by a
    shell loop or in parallel each get their own folder (``-2``, ``-3``, ... on collision)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{stamp}_{name}"
    for attempt in range(1, 10_000):
        candidate = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        (candidate / "checkpoints").mkdir()
        (candidate / "plots").mkdir()
        return candidate
    raise RuntimeError(f"could not create a run folder under {runs_dir}")


def written_folders(run_dir: Path) -> list[Path]:
    """The folders of a run that this program writes files into (where a killed write can leave a temporary)."""
    evaluations = run_dir / "eval"
    splits = [p for p in evaluations.iterdir() if p.is_dir() and not p.is_symlink()] if evaluations.is_dir() else []
    return [run_dir, run_dir / "checkpoints", run_dir / "plots", evaluations, *splits]
