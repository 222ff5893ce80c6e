"""What a run folder says about itself: status, progress and results, for ``runs``, ``compare`` and ``sweep``.

A run records its status in ``run.json`` (running, completed, interrupted, failed). A process killed
outright (SIGKILL, out of memory, power loss) cannot write anything, so "running" is believed only
while some process holds the run's lock (:meth:`cifar_scratch.runs.folder.RunFolder.lock`); otherwise
the run died and is reported as interrupted, resumable from its last checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from cifar_scratch.fileio import read_limited
from cifar_scratch.runs.folder import MAX_FILE_BYTES, RunFolder

STATUSES = ("running", "interrupted", "completed", "failed")


@dataclass
class RunSummary:
    path: Path
    name: str  # the config's name
    status: str  # one of STATUSES, or "unknown" for a folder without run.json
    started: float | None  # seconds since the epoch
    epochs_done: int
    epochs: int | None  # planned (training.epochs)
    monitor: str | None
    best_value: float | None
    best_epoch: int | None
    metrics: dict = field(default_factory=dict)  # metrics.json ({} until the run finishes)
    config: dict = field(default_factory=dict)  # config.yaml as written ({} when unreadable)
    overrides: list[str] = field(default_factory=list)
    error: str | None = None


def read_json(path: Path) -> dict:
    """A JSON object file as a dict; {} when it is absent, damaged or not an object (listings never fail)."""
    try:
        value = json.loads(read_limited(path, MAX_FILE_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def run_status(run_dir: Path, info: dict | None = None) -> str:
    folder = RunFolder(run_dir)
    info = folder.read_info_or_empty() if info is None else info
    status = info.get("status")
    if status not in STATUSES:
        return "unknown"
    if status == "running" and not folder.is_locked():
        return "interrupted"  # killed without a chance to say so
    return status


def summarize(run_dir: Path) -> RunSummary:
    """Everything a listing needs, read without loading checkpoints; never raises for a damaged run."""
    folder = RunFolder(run_dir)
    run_dir = folder.path
    info = folder.read_info_or_empty()
    metrics = read_json(folder.metrics)
    try:
        config = yaml.safe_load(read_limited(folder.config, MAX_FILE_BYTES).decode("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    history = folder.read_history()
    started = None
    if isinstance(info.get("started"), str):
        try:
            started = datetime.strptime(info["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            started = None
    monitor = metrics.get("monitor") or training.get("monitor")
    sizes = info.get("sizes") if isinstance(info.get("sizes"), dict) else {}
    if isinstance(monitor, str) and monitor.startswith("val_") and sizes.get("val") == 0:
        monitor = monitor.replace("val_", "train_", 1)  # what picked the best epoch: there is no validation split
    best_value, best_epoch = metrics.get("best_value"), metrics.get("best_epoch")
    if not metrics and history and monitor:  # still training: the best epoch so far
        values = [(row[monitor], int(row["epoch"])) for row in history if math.isfinite(row.get(monitor, math.nan))]
        if values:
            pick = min if monitor.endswith("loss") else max
            best_value, best_epoch = pick(values)
    return RunSummary(
        path=run_dir,
        name=str(config.get("name") or run_dir.name),
        status=run_status(run_dir, info),
        started=started,
        epochs_done=int(metrics.get("epochs") or (history[-1]["epoch"] if history else 0)),
        epochs=training.get("epochs"),
        monitor=monitor,
        best_value=best_value,
        best_epoch=best_epoch,
        metrics=metrics,
        config=config,
        overrides=[str(o) for o in info.get("overrides", [])] if isinstance(info.get("overrides"), list) else [],
        error=info.get("error"),
    )


def find_runs(root: Path) -> list[Path]:
    """Run folders at ``root`` or below it (a run folder itself, a runs dir, a sweep folder), by name (newest first)."""
    root = Path(root)
    if RunFolder(root).looks_like_a_run():
        return [root]  # a run folder (one whose run.json was lost still has its config and checkpoints)
    found = {path.parent for path in root.rglob(RunFolder.INFO)}
    # Hidden folders are half-received copies (a Dask job's run folder being unpacked), not runs.
    found = {path for path in found if not any(part.startswith(".") for part in path.relative_to(root).parts)}
    return sorted(found, key=lambda path: path.name, reverse=True)


def age(seconds: float) -> str:
    """A short human age: 45s, 12m, 3h, 5d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"
