"""Compare runs: the config keys that differ between them against their results.

Rows are runs, or groups of runs that differ only by ``training.seed`` (mean ± std over the seeds,
with n). Columns are the differing config keys (dotted, as overrides are written), then status,
best epoch, train/val/test accuracy and loss, test accuracy with TTA, and training wall time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from cifar_scratch.errors import UsageError
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.runs.index import RunSummary, find_runs, summarize
from cifar_scratch.tables import text_table

#: Result columns, in the order shown; each is a key of metrics.json.
RESULTS = (
    "best_epoch",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "test_accuracy_tta",
    "train_loss",
    "val_loss",
    "test_loss",
    "train_time_s",
)
#: Config keys that differ between any two runs without saying anything about them.
IGNORED_KEYS = ("name", "output.")
SEED = "training.seed"


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """{"optimizer": {"lr": 0.1}, "model": {"layers": [...]}} -> {"optimizer.lr": 0.1, "model.layers.0.units": ...}."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, object] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not flat and prefix:  # an empty list or mapping is a value too
        flat[prefix] = tree
    return flat


def collect(paths: list[Path]) -> list[RunSummary]:
    """Every run folder under ``paths`` (each a run, a sweep folder or a runs dir), each once."""
    seen, runs = set(), []
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such folder")
        found = find_runs(Path(path))
        if not found:
            raise UsageError(f"{path}: no run folders (a run folder holds run.json)")
        for run_dir in found:
            if run_dir.resolve() not in seen:
                seen.add(run_dir.resolve())
                runs.append(summarize(run_dir))
    return runs


def differing_keys(configs: list[dict[str, object]]) -> list[str]:
    keys = sorted({key for config in configs for key in config})
    return [
        key
        for key in keys
        if not any(key == ignored or key.startswith(ignored) for ignored in IGNORED_KEYS)
        and len({json.dumps(config.get(key), sort_keys=True, default=str) for config in configs}) > 1
    ]


def table(runs: list[RunSummary], group_seeds: bool = True) -> tuple[list[str], list[dict]]:
    """-> (columns, rows). Each row maps a column to a value: a number, a string, or for a group of
    seeds (mean, std) per result with ``n`` runs."""
    configs = [flatten(run.config) for run in runs]
    shown = differing_keys(configs)
    others = [key for key in shown if key != SEED]
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        label = json.dumps([config.get(key) for key in others], default=str) if group_seeds else str(index)
        groups.setdefault(label, []).append(index)
    grouped = any(len(members) > 1 for members in groups.values())
    rows = []
    for members in groups.values():
        first = configs[members[0]]
        row: dict = {"run": runs[members[0]].path.name if len(members) == 1 else f"{len(members)} runs"}
        row.update({key: first.get(key) for key in others})
        if SEED in shown:  # the seeds of a group are listed, never hidden
            seeds = sorted(
                (configs[i].get(SEED) for i in members), key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else 0)
            )
            row[SEED] = seeds[0] if len(members) == 1 else ", ".join(map(str, seeds))
        statuses = sorted({runs[i].status for i in members})
        row["status"] = statuses[0] if len(statuses) == 1 else "/".join(statuses)
        row["n"] = len(members)
        for column in RESULTS:
            values = [runs[i].metrics.get(column) for i in members]
            values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
            if not values:
                row[column] = None
            elif len(members) == 1:
                row[column] = values[0]
            else:
                row[column] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
        rows.append(row)
    columns = ["run", *shown, "status", "n", *RESULTS]
    if not grouped:
        columns.remove("n")
    return [c for c in columns if any(row.get(c) is not None for row in rows) or c in ("run", "status")], rows


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    """Best first: descending for accuracies, ascending otherwise (losses, times, epochs); missing last."""
    descending = "accuracy" in column or column.endswith("f1")

    def key(row):
        value = row.get(column)
        value = value[0] if isinstance(value, tuple) else value
        if value is None:
            return (1, 0, "")
        if isinstance(value, (int, float)):
            return (0, -value if descending else value, "")
        return (0, 0, str(value))

    return sorted(rows, key=key)


def cell(value, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):  # mean ± std, both to the mean's decimals: 0.169 ± 0.000, not 0.169 ± 7.37e-05
        mean, std, _ = value
        decimals = _decimals(mean, column)
        return f"{mean:.{decimals}f} ± {std:.{decimals}f}"
    if isinstance(value, float) and column in RESULTS:
        return f"{value:.{_decimals(value, column)}f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _decimals(value: float, column: str) -> int:
    """Decimals shown for a result: 4 for accuracies and losses, 1 for epochs and for times of 10 s and
    more, three significant figures for shorter times."""
    if column == "train_time_s":
        return 1 if abs(value) >= 10 else max(0, 2 - math.floor(math.log10(abs(value)))) if value else 1
    return 1 if column == "best_epoch" else 4


def render(columns: list[str], rows: list[dict], fmt: str) -> str:
    """The table as ``table`` (aligned text), ``markdown``, ``csv`` (means and stds in their own
    columns) or ``json`` (a list of objects)."""
    if fmt == "json":
        records = []
        for row in rows:
            record = {}
            for column in columns:
                value = row.get(column)
                if isinstance(value, tuple):
                    record[column] = {"mean": value[0], "std": value[1], "n": value[2]}
                else:
                    record[column] = value
            records.append(record)
        return json.dumps(records, indent=2, default=str)
    if fmt == "csv":
        grouped = {column for column in columns if any(isinstance(row.get(column), tuple) for row in rows)}
        header = []
        for column in columns:
            header += [column, f"{column}_std"] if column in grouped else [column]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            line = []
            for column in columns:
                value = row.get(column)
                if isinstance(value, tuple):
                    line += [value[0], value[1]]
                else:
                    line += [("" if value is None else value)] + ([""] if column in grouped else [])
            writer.writerow(line)
        return buffer.getvalue().rstrip("\n")
    cells = [[cell(row.get(column), column) for column in columns] for row in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    return text_table(columns, cells)


def labels(runs: list[RunSummary]) -> list[str]:
    """A short legend entry per run: its differing config values, else its folder name."""
    configs = [flatten(run.config) for run in runs]
    keys = differing_keys(configs)
    return [
        " ".join(f"{key.split('.')[-1]}={config.get(key)}" for key in keys) or run.path.name for run, config in zip(runs, configs)
    ]


def draw(runs: list[RunSummary], path: Path, panels: list[tuple[str, str, list, list]] = ()) -> None:
    """The runs' curves, one line each labelled by :func:`labels`, and a sweep's metric by parameter
    (``panels``), into the PNG ``path``."""
    from cifar_scratch import reports  # matplotlib: only when a figure is drawn

    curves = list(zip(labels(runs), (RunFolder(run.path).read_history() for run in runs)))
    reports.plot_comparison(curves, path, panels)
