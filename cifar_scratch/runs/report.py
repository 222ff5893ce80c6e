"""``cifar-scratch report``: one self-contained HTML page for a run or a sweep, to share or archive.

Everything is inside the file (styles, every figure as a base64 PNG): it opens offline in any
browser, with nothing beside it. A run's page: status, final metrics and warnings, every plot, the
per-layer health of the last epoch, the history, the config and the model. A sweep's page: its
spec, the results of every job (best first), the comparison figure, and the best job's curves.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from pathlib import Path

import yaml

from cifar_scratch.errors import UsageError
from cifar_scratch.fileio import atomic_write_text, read_limited
from cifar_scratch.runs.folder import MAX_FILE_BYTES, RunFolder
from cifar_scratch.runs.index import read_json

#: The order plots appear in (others follow by name).
PLOT_ORDER = ("loss", "accuracy", "lr", "confusion_matrix_normalized", "confusion_matrix")
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left}
tr.best td{background:#eef6ee;font-weight:600} pre{background:#f7f7f7;padding:.8rem;overflow-x:auto;font-size:.8rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top} figure img{max-width:100%}
figcaption{color:#666;font-size:.8rem} .warn{color:#9a4b00} .scroll{max-height:28rem;overflow:auto}
"""


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Write the page for the run or sweep in ``folder`` to ``out`` (default: ``folder/report.html``); -> its path."""
    from cifar_scratch.sweeps.ledger import SweepFolder

    folder = Path(folder)
    sweep = SweepFolder(folder)
    if sweep.exists():
        page = sweep_page(sweep)
    elif RunFolder(folder).config.is_file():
        page = run_page(RunFolder(folder))
    else:
        raise UsageError(f"{folder}: neither a run folder (config.yaml) nor a sweep folder (spec.yaml, jobs.jsonl)")
    target = Path(out) if out is not None else folder / "report.html"
    atomic_write_text(target, page)
    return target


# --------------------------------------------------------------------------- a run
def run_page(run: RunFolder) -> str:
    info, metrics = read_json(run.info), read_json(run.metrics)
    name = run.path.name
    status = info.get("status", "unknown")
    facts = [
        f"status: {status}",
        f"started {info['started']}" if info.get("started") else "",
        f"finished {info['finished']}" if info.get("finished") else "",
        info.get("dataset", ""),
        f"commit {info['git_commit']}" if info.get("git_commit") else "",
    ]
    body = [f"<h1>{_text(name)}</h1>", f"<p class=sub>{_text(' · '.join(f for f in facts if f))}</p>"]
    body += _metrics_section(metrics, info)
    plots = sorted(run.plots.glob("*.png"), key=_plot_rank) if run.plots.is_dir() else []
    curves = [p for p in plots if p.stem != "layers"]
    if curves:
        body += ["<h2>Plots</h2>", *(_figure(p.read_bytes(), p.stem.replace("_", " ")) for p in curves)]
    for evaluation in sorted(run.path.glob(f"{RunFolder.EVALUATIONS}/*/")):
        figures = sorted(evaluation.glob("*.png"))
        if figures:
            body += [f"<h2>Evaluation: {_text(evaluation.name)}</h2>", *(_figure(p.read_bytes(), p.stem) for p in figures)]
    body += _health_section(run, [p for p in plots if p.stem == "layers"])
    history = run.read_history()
    if history:
        columns = list(history[0])
        body += ["<h2>History</h2>", "<div class=scroll>", _table(columns, history), "</div>"]
    body += ["<h2>Config</h2>", f"<pre>{_text(_read(run.config))}</pre>"]
    if run.summary.is_file():
        body += ["<h2>Model</h2>", f"<pre>{_text(_read(run.summary))}</pre>"]
    return _page(f"{name}: cifar-scratch run", body)


def _metrics_section(metrics: dict, info: dict) -> list[str]:
    if not metrics:
        note = f" ({info['error']})" if info.get("error") else ""
        return [f"<h2>Results</h2><p>No metrics.json yet: the run has not finished{_text(note)}.</p>"]
    figures = [(key, value) for key, value in metrics.items() if _is_number(value) or isinstance(value, str)]
    rows = [{"metric": key, "value": value} for key, value in figures]
    out = ["<h2>Results</h2>", _table(["metric", "value"], rows, left={"metric", "value"})]
    warnings = metrics.get("warnings") or []
    if warnings:
        out += ["<h3>Warnings</h3><ul>", *(f"<li class=warn>{_text(w)}</li>" for w in warnings), "</ul>"]
    return out


def _health_section(run: RunFolder, figures: list[Path]) -> list[str]:
    rows = run.read_diagnostics()
    if not rows and not figures:
        return []
    out = ["<h2>Per-layer health</h2>"]
    out += [_figure(p.read_bytes(), "per-layer health by epoch") for p in figures]
    if rows:
        last = max(row["epoch"] for row in rows)
        shown = [row for row in rows if row["epoch"] == last]
        columns = ["layer", "config", "kind", "act_mean", "act_std", "dead_fraction", "grad_norm", "update_ratio"]
        out += [
            f"<p>Epoch {last:g} (every epoch: diagnostics.csv).</p>",
            _table(columns, shown, left={"layer", "config", "kind"}),
        ]
    return out


# --------------------------------------------------------------------------- a sweep
def sweep_page(sweep) -> str:
    from cifar_scratch.runs import compare as comparing
    from cifar_scratch.sweeps.spec import load_spec

    spec = load_spec(sweep.spec_path)
    rows = sweep.results(spec, sweep.jobs(spec))
    metric, sign = spec.metric.name, (-1 if spec.metric.goal == "maximize" else 1)
    scored = [row for row in rows if _is_number(row.get(metric))]
    ranked = sorted(scored, key=lambda row: sign * row[metric]) + [row for row in rows if row not in scored]
    best = ranked[0] if scored else None
    done = sum(row["status"] == "completed" for row in rows)
    body = [
        f"<h1>Sweep {_text(sweep.name)}</h1>",
        f"<p class=sub>{len(rows)} jobs, {done} completed · {spec.method} search · {_text(metric)} ({spec.metric.goal})</p>",
    ]
    if rows:
        columns = [c for c in rows[0] if c != "run_dir"] + ["run_dir"]
        body += ["<h2>Results (best first)</h2>", "<div class=scroll>"]
        body += [_table(columns, ranked, left={"status", "run_dir"}, best=best), "</div>"]
    runs = [Path(row["run_dir"]) for row in rows if row["run_dir"] and Path(row["run_dir"]).is_dir()]
    if runs:
        with tempfile.TemporaryDirectory() as scratch:
            figure = Path(scratch) / "compare.png"
            comparing.draw(comparing.collect(runs), figure, sweep.metric_by_parameter(spec))
            body += [
                "<h2>Comparison</h2>",
                _figure(figure.read_bytes(), f"every job's validation accuracy; {metric} by parameter"),
            ]
    if best is not None and best["run_dir"]:
        plots = RunFolder(Path(best["run_dir"])).plots
        chosen = [plots / f"{stem}.png" for stem in ("accuracy", "loss", "layers") if (plots / f"{stem}.png").is_file()]
        if chosen:
            body += [f"<h2>Best job: {best['job']}</h2>", *(_figure(p.read_bytes(), p.stem) for p in chosen)]
    body += ["<h2>Spec</h2>", f"<pre>{_text(yaml.safe_dump(spec.model_dump(mode='json'), sort_keys=False))}</pre>"]
    return _page(f"{sweep.name}: cifar-scratch sweep", body)


# --------------------------------------------------------------------------- HTML
def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f"<meta name=viewport content='width=device-width, initial-scale=1'>\n<title>{_text(title)}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _table(columns: list[str], rows: list[dict], left: set[str] = frozenset(), best: dict | None = None) -> str:
    head = "".join(f"<th{' class=l' if c in left else ''}>{_text(c)}</th>" for c in columns)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for row in rows:
        cells = "".join(f"<td{' class=l' if c in left else ''}>{_text(_format(row.get(c)))}</td>" for c in columns)
        lines.append(f"<tr{' class=best' if row is best else ''}>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<figure><img src='data:image/png;base64,{data}' alt='{_text(caption)}'><figcaption>{_text(caption)}</figcaption></figure>"


def _format(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plot_rank(path: Path) -> tuple[int, str]:
    return (PLOT_ORDER.index(path.stem) if path.stem in PLOT_ORDER else len(PLOT_ORDER), path.stem)


def _text(value) -> str:
    return html.escape(str(value), quote=True)


def _read(path: Path) -> str:
    return read_limited(path, MAX_FILE_BYTES).decode("utf-8", errors="replace")
