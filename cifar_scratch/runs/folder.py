"""A run folder: its layout (every file name once), its creation, its lock, its ``run.json`` and history.

::

    runs/<YYYYmmdd-HHMMSS>_<name>[-N]/
        config.yaml          the resolved config: exactly what ran
        run.json             command, versions, data dir, dataset, status, every resume
        summary.txt          model summary
        history.csv/.jsonl   one row per epoch
        metrics.json         final metrics of the best weights (train/val/test)
        checkpoints/         last.npz (full state, for --resume), best.npz
        plots/               loss, accuracy, learning rate, confusion matrices
        eval/<split>/        what `evaluate` writes
        code/                a copy of each user source file the model uses, and SHA256SUMS
        .lock                held while a process trains or finishes the run
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cifar_scratch.errors import CheckpointError, ConfigError, UserError
from cifar_scratch.fileio import atomic_write_json, atomic_write_text, file_digest, json_safe, read_limited

#: run.json holds a few hundred bytes per resume; anything near this is not one.
MAX_INFO_BYTES = 16_000_000
#: A run's other small files (metrics.json, config.yaml, history.csv) are far smaller; a bigger one is not read.
MAX_FILE_BYTES = 64_000_000
#: The columns of history.csv.
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "grad_norm", "epoch_time")


class RunFolder:
    """The files of one run, by name. ``RunFolder(path)`` reads an existing folder; :meth:`create` makes one."""

    CONFIG = "config.yaml"
    INFO = "run.json"
    SUMMARY = "summary.txt"
    HISTORY = "history.csv"
    HISTORY_JSONL = "history.jsonl"
    DIAGNOSTICS = "diagnostics.csv"
    TENSORBOARD = "tensorboard"
    METRICS = "metrics.json"
    CHECKPOINTS = "checkpoints"
    LAST = "last.npz"
    BEST = "best.npz"
    PLOTS = "plots"
    EVALUATIONS = "eval"
    CODE = "code"
    CODE_SUMS = "SHA256SUMS"
    LOCK = ".lock"
    #: What ``evaluate`` writes into ``eval/<split>/``.
    EVAL_FILES = (
        "metrics.json",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "samples.png",
        "misclassified.png",
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ layout
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def info(self) -> Path:
        return self.path / self.INFO

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def diagnostics(self) -> Path:
        return self.path / self.DIAGNOSTICS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / self.LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / self.BEST

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    @property
    def code(self) -> Path:
        return self.path / self.CODE

    def evaluation(self, split: str, checkpoint: Path) -> Path:
        """``eval/<split>`` for the best checkpoint, ``eval/<split>-<checkpoint name>`` for another."""
        return self.path / self.EVALUATIONS / (split if checkpoint.name == self.BEST else f"{split}-{checkpoint.stem}")

    def written_folders(self) -> list[Path]:
        """The folders this program writes files into (where a killed write can leave a temporary)."""
        evaluations = self.path / self.EVALUATIONS
        splits = [p for p in evaluations.iterdir() if p.is_dir() and not p.is_symlink()] if evaluations.is_dir() else []
        return [self.path, self.checkpoints, self.plots, evaluations, *splits]

    def looks_like_a_run(self) -> bool:
        """A run.json, or (when that was lost) a config.yaml beside a checkpoints folder."""
        return self.info.exists() or (self.config.exists() and self.checkpoints.is_dir())

    @classmethod
    def create(cls, runs_dir: str | Path, name: str, now: float | None = None) -> RunFolder:
        """A fresh ``<runs_dir>/<YYYYmmdd-HHMMSS>_<name>``. ``mkdir`` is atomic, so runs started in the same
        second by a shell loop or in parallel each get their own folder (``-2``, ``-3``, ... on collision)."""
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        base = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}_{name}"
        for attempt in range(1, 10_000):
            candidate = runs_dir / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            folder = cls(candidate)
            folder.checkpoints.mkdir()
            folder.plots.mkdir()
            return folder
        raise RuntimeError(f"could not create a run folder under {runs_dir}")

    # ------------------------------------------------------------------ the user's code
    def keep_code(self, files: list[Path]) -> dict[Path, Path]:
        """Copy each of the user's source ``files`` into ``code/`` and record their SHA-256 in
        ``code/SHA256SUMS`` (``sha256sum -c`` reads it) -> {original: copy}. Two files of one name
        are kept apart by a number."""
        copies: dict[Path, Path] = {}
        if not files:
            return copies
        self.code.mkdir(exist_ok=True)
        for index, original in enumerate(files):
            name = original.name if original.name not in {c.name for c in copies.values()} else f"{index}_{original.name}"
            copy = self.code / name
            atomic_write_text(copy, original.read_text(encoding="utf-8"))
            copies[original] = copy
        sums = "".join(f"{file_digest(copy)}  {copy.name}\n" for copy in copies.values())
        atomic_write_text(self.code / self.CODE_SUMS, sums)
        return copies

    def checked_code(self) -> list[Path]:
        """The run's copies of user code, each checked against ``code/SHA256SUMS``: an edited copy is a
        ConfigError, as an edited config.yaml is ([] for a run without user code)."""
        sums = self.code / self.CODE_SUMS
        if not sums.is_file():
            return []
        files = []
        for line in read_limited(sums, MAX_FILE_BYTES).decode("utf-8", errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            path = self.code / name
            if not name or "/" in name or not path.is_file():
                raise ConfigError(f"{sums}: names {name!r}, which is not in {self.code}")
            if file_digest(path) != digest:
                raise ConfigError(
                    f"{path}: edited after the run started (its SHA-256 differs from {self.CODE}/{self.CODE_SUMS}); "
                    "restore it, or copy it elsewhere and start a new run"
                )
            files.append(path)
        return files

    # ------------------------------------------------------------------ run.json
    def read_info(self) -> dict:
        """``run.json`` as a dict ({} when absent); a damaged or unreadable file is a CheckpointError."""
        if not self.info.exists() and not self.info.is_symlink():
            return {}
        try:
            info = json.loads(read_limited(self.info, MAX_INFO_BYTES).decode("utf-8"))
        except OSError as exc:
            raise CheckpointError(
                f"{self.info}: cannot read run.json ({exc.strerror or exc}); fix or delete it (pass --data-dir then)"
            ) from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CheckpointError(
                f"{self.info}: run.json is damaged ({type(exc).__name__}); fix or delete it (pass --data-dir then)"
            ) from None
        if not isinstance(info, dict):
            raise CheckpointError(
                f"{self.info}: run.json is damaged (not a JSON object); fix or delete it (pass --data-dir then)"
            )
        return info

    def read_info_or_empty(self) -> dict:
        """``run.json``, or {} when it is absent, damaged or unreadable: listings never fail."""
        try:
            return self.read_info()
        except CheckpointError:
            return {}

    def update_info(self, updates: dict) -> None:
        """Merge ``updates`` into ``run.json`` (rewritten whole: a damaged one must not stop a run from recording its state)."""
        info = self.read_info_or_empty()
        info.update(updates)
        atomic_write_json(self.info, info)

    def record_failure(self, status: str, error: str) -> None:
        """Best effort: a run that stops on an error says so in run.json (the disk may be what failed)."""
        try:
            self.update_info({"status": status, "error": error, "stopped": now()})
        except (OSError, UserError):
            pass

    # ------------------------------------------------------------------ the lock
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One process at a time trains or finishes a run (a second ``--resume`` is refused)."""
        lock = FileLock(self.path / self.LOCK)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            raise UserError(f"{self.path}: another process is training this run right now") from None
        try:
            yield
        finally:
            lock.release()

    def is_locked(self) -> bool:
        """Whether a process trains or finishes this run right now (holds its lock)."""
        path = self.path / self.LOCK
        if not path.exists():
            return False
        lock = FileLock(path)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            return True
        except OSError:  # a read-only folder: nobody can be training in it
            return False
        lock.release()
        return False

    # ------------------------------------------------------------------ history
    def write_history(self, history: list[dict]) -> None:
        """history.csv and history.jsonl, rewritten whole (through temporary names)."""
        atomic_write_text(self.history, _csv_text(HISTORY_FIELDS, history))
        atomic_write_text(
            self.path / self.HISTORY_JSONL, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in history)
        )

    def write_diagnostics(self, rows: list[dict], fields: tuple[str, ...]) -> None:
        """diagnostics.csv (per-layer health, one row per layer and epoch), rewritten whole; NaN as an empty cell."""
        atomic_write_text(self.diagnostics, _csv_text(fields, json_safe(rows)))

    def read_diagnostics(self) -> list[dict]:
        """``diagnostics.csv`` as dicts (numbers as floats, empty cells left out); [] when absent or unreadable."""
        return _read_csv(self.diagnostics, text_columns=("layer", "config", "kind"))

    def read_history(self) -> list[dict]:
        """``history.csv`` as dicts of floats (epoch first); [] when absent or unreadable; empty cells are left out."""
        return _read_csv(self.history)


def _csv_text(fields: tuple[str, ...], rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _read_csv(path: Path, text_columns: tuple[str, ...] = ()) -> list[dict]:
    """A CSV file this folder wrote, as dicts: ``text_columns`` as they are, the others as floats, empty
    cells left out; a row that does not parse is skipped; [] when absent or unreadable."""
    try:
        raw_rows = list(csv.DictReader(io.StringIO(read_limited(path, MAX_FILE_BYTES).decode("utf-8"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    rows = []
    for raw in raw_rows:
        try:
            rows.append({k: v if k in text_columns else float(v) for k, v in raw.items() if v not in (None, "")})
        except (TypeError, ValueError):  # TypeError: a row with more cells than the header (key None, a list)
            continue
    return rows


def now() -> str:
    """The time as run.json records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
