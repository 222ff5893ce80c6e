"""``method: bayes`` sweeps through Optuna's ask/tell: jobs proposed from results, rebuilt from the ledger."""

import csv
import json

import pytest

from cifar_scratch import sweeps

from .test_local import invoke, ledger, write_spec

pytest.importorskip("optuna", reason="method: bayes needs the optuna extra: pip install -e '.[optuna]'")
from cifar_scratch.sweeps.bayes import BayesSearch  # noqa: E402

PARAMETERS = {
    "optimizer.lr": {"distribution": "log_uniform", "min": 0.01, "max": 0.3},
    "model.layers.1.units": {"distribution": "int_uniform", "min": 8, "max": 24},
    "data.augment": {"values": [{"flip": False}, {"flip": True}]},
}


@pytest.mark.slow
def test_a_bayes_sweep_runs_run_cap_jobs_and_goes_on_when_run_cap_is_raised(tmp_path):
    spec = write_spec(tmp_path, PARAMETERS, method="bayes", run_cap=3, seed=1)
    out = tmp_path / "sw"
    result = invoke("sweep", spec, "-j", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert "bayes search of 3 jobs, 0 so far" in result.output
    started = [e for e in ledger(out) if e["status"] == "started"]
    assert [e["job"] for e in sorted(started, key=lambda e: e["job"])] == [0, 1, 2]
    for entry in started:
        params = entry["params"]
        assert 0.01 <= params["optimizer.lr"] <= 0.3 and 8 <= params["model.layers.1.units"] <= 24
        assert params["data.augment"] in ({"flip": False}, {"flip": True})
        assert entry["overrides"] == sweeps.Job(entry["job"], params).overrides
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["status"] for row in rows] == ["completed"] * 3 and all(row["val_accuracy"] for row in rows)

    # Raising run_cap continues the same search: the 3 finished jobs are kept, 2 new ones run.
    spec = write_spec(tmp_path, PARAMETERS, method="bayes", run_cap=5, seed=1)
    result = invoke("sweep", spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert "bayes search of 5 jobs, 3 so far, 3 done, 0 to run" in result.output
    last = {e["job"]: e for e in ledger(out)}
    assert sorted(last) == [0, 1, 2, 3, 4] and all(e["status"] == "completed" for e in last.values())
    assert sum(e["status"] == "started" for e in ledger(out)) == 5  # nothing ran twice

    # Another search in the same folder is refused.
    spec = write_spec(tmp_path, PARAMETERS, method="bayes", run_cap=5, seed=2)
    result = invoke("sweep", spec, "--out", out)
    assert result.exit_code == 2 and "holds a different sweep" in result.output


def test_the_search_is_rebuilt_from_the_ledger_and_told_each_result(tmp_path):
    spec = sweeps.SweepSpec(base="b.yaml", method="bayes", run_cap=4, parameters=PARAMETERS)
    folder = sweeps.SweepFolder(tmp_path / "sw")
    folder.prepare(spec)
    for index, accuracy in enumerate([0.5, 0.9]):
        run_dir = folder.runs_dir / f"x_sw-{index:03d}"
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(json.dumps({"val_accuracy": accuracy}))
        params = {"optimizer.lr": 0.05 * (index + 1), "model.layers.1.units": 10 + index, "data.augment": {"flip": False}}
        folder.record({"job": index, "status": "started", "params": params})
        folder.record({"job": index, "status": "completed", "run_dir": str(run_dir)})
    folder.record({"job": 2, "status": "started", "params": {**params, "data.augment": {"flip": True}}})
    folder.record({"job": 2, "status": "failed", "run_dir": None})

    search = BayesSearch(spec, folder)
    trials = search.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert [t.value for t in trials[:2]] == [0.5, 0.9] and search.study.best_trial.params["optimizer.lr"] == 0.1
    assert trials[2].params["data.augment"] == 1  # a categorical value is told by its position
    job = search.ask()
    assert job.index == 3 and search.ask() is None  # run_cap 4: jobs 0-3
    assert set(job.params) == set(PARAMETERS) and job.params["data.augment"] in ({"flip": False}, {"flip": True})


def test_a_typo_in_a_bayes_parameter_stops_the_sweep_before_any_job_runs(tmp_path):
    spec = write_spec(
        tmp_path, {"optimizer.lrr": {"distribution": "uniform", "min": 0.01, "max": 0.1}}, method="bayes", run_cap=2
    )
    result = invoke("sweep", spec, "--out", tmp_path / "sw")
    assert result.exit_code == 2 and "parameters.optimizer.lrr: unknown key" in result.output
    assert not (tmp_path / "sw").exists()
    spec = write_spec(tmp_path, {"optimizer.lr": {"distribution": "uniform", "min": -1, "max": 0.1}}, method="bayes", run_cap=2)
    result = invoke("sweep", spec, "--out", tmp_path / "sw")
    assert result.exit_code == 2 and "parameters.optimizer.lr" in result.output, result.output
