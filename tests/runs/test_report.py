"""``cifar-scratch report``: one self-contained HTML page for a run or a sweep."""

import base64
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import cifar_scratch as cs
from cifar_scratch.cli import app
from tests.conftest import digits_tree

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a browser would load: the headings, table cells, images and every outside reference."""

    def __init__(self, text: str):
        super().__init__()
        self.headings, self.cells, self.images, self.outside, self._in = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in = tag
        if tag == "img":
            self.images.append(attrs["src"])
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.outside.append(attrs[key])
        if tag in ("link", "script", "iframe"):
            self.outside.append(tag)

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in in ("h1", "h2", "h3"):
            self.headings.append(data.strip())
        elif self._in in ("td", "th"):
            self.cells.append(data.strip())


def check_images(page: Page) -> None:
    assert page.images and not page.outside, page.outside
    for src in page.images:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64" and base64.b64decode(data).startswith(PNG)


@pytest.mark.slow
def test_a_run_report_holds_metrics_plots_health_history_and_config_in_one_file(tmp_path):
    run = cs.train(digits_tree(plots=True, epochs=2), runs_dir=tmp_path)
    result = runner.invoke(app, ["report", str(run.path)])
    assert result.exit_code == 0, result.output
    target = run.path / "report.html"
    assert result.output.strip() == str(target)
    page = Page(target.read_text(encoding="utf-8"))
    assert page.headings[:2] == [run.path.name, "Results"]
    assert {"Plots", "Per-layer health", "History", "Config", "Model"} <= set(page.headings)
    check_images(page)
    assert len(page.images) == len(list((run.path / "plots").glob("*.png")))  # every plot, once
    assert f"{run.metrics['test_accuracy']:.4g}" in page.cells and "dense1" in page.cells and "relu1" in page.cells
    assert page.cells.count("epoch") == 1 and [c for c in page.cells if c in ("1", "2")]  # the history table

    elsewhere = tmp_path / "shared" / "page.html"
    elsewhere.parent.mkdir()
    assert runner.invoke(app, ["report", str(run.path), "-o", str(elsewhere)]).exit_code == 0
    assert Page(elsewhere.read_text(encoding="utf-8")).images  # still whole, away from the run folder


def test_report_refuses_a_folder_that_is_neither_run_nor_sweep(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "neither a run folder" in result.output
    assert runner.invoke(app, ["report", str(tmp_path / "missing")]).exit_code == 2


@pytest.mark.slow
def test_a_sweep_report_ranks_the_jobs_and_draws_the_comparison(tmp_path):
    base = tmp_path / "tiny.yaml"
    base.write_text(yaml.safe_dump(digits_tree(plots=True, epochs=2)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": str(base), "parameters": {"optimizer.lr": {"values": [0.01, 0.1]}}}))
    folder = tmp_path / "sweep"
    assert runner.invoke(app, ["sweep", str(spec), "--out", str(folder)]).exit_code == 0
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    text = (folder / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert page.headings[0] == "Sweep sweep" and "Comparison" in page.headings
    assert {"Best job: 0", "Best job: 1"} & set(page.headings)
    check_images(page)
    rows = [line for line in text.splitlines() if line.startswith("<tr")]
    assert len(rows) == 2 and "class=best" in rows[0]  # the best job first


@pytest.mark.slow
def test_a_report_renders_in_headless_chromium(tmp_path):
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no Chromium on this machine: the page is checked by parsing only")
    run = cs.train(digits_tree(epochs=1), runs_dir=tmp_path)
    page = Path(runner.invoke(app, ["report", str(run.path)]).output.strip())
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 20_000
