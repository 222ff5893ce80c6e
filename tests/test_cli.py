"""The command line through Typer's runner: exit codes, messages, the run folder as last line."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cifar_scratch.cli import app

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def env(tmp_path):
    return {"CIFAR_SCRATCH_DATA": str(tmp_path / "data")}


def test_train_prints_run_folder_last_and_evaluate_writes_report(tmp_path, digits_config, env):
    result = invoke("train", digits_config, "training.epochs=2", "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    run_dir = Path(lines[-1])
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.endswith("_tiny")
    assert any(line.startswith("epoch   2/2") for line in lines)  # plain lines: stdout is not a terminal
    assert "Trainable params:" in result.output

    result = invoke("evaluate", run_dir, env=env)
    assert result.exit_code == 0, result.output
    out_dir = Path(result.output.strip().splitlines()[-1])
    assert out_dir == run_dir / "eval" / "test"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class", "loss"} <= metrics.keys()
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    for name in ("confusion_matrix.json", "confusion_matrix.png", "confusion_matrix_normalized.png", "samples.png",
                 "misclassified.png"):
        assert (out_dir / name).is_file(), name
    matrix = json.loads((out_dir / "confusion_matrix.json").read_text())["matrix"]
    assert sum(map(sum, matrix)) == metrics["samples"]

    result = invoke("evaluate", run_dir / "checkpoints" / "last.npz", "--split", "val", "--quiet", env=env)
    assert result.exit_code == 0 and result.output.strip() == str(run_dir / "eval" / "val-last")


def test_quiet_prints_only_the_path(tmp_path, digits_config, env):
    result = invoke("train", digits_config, "training.epochs=1", "--quiet", "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 1


def test_resume_through_cli(tmp_path, digits_config, env):
    first = invoke("train", digits_config, "training.epochs=1", "--quiet", "--runs-dir", tmp_path / "runs", env=env)
    run_dir = first.output.strip()
    result = invoke("train", "--resume", run_dir, "training.epochs=2", "--quiet", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == run_dir
    assert len((Path(run_dir) / "history.csv").read_text().splitlines()) == 3


def test_config_error_exit_2_without_traceback(digits_config, env):
    result = invoke("train", digits_config, "training.epocs=3", "optimizer.lr=-1", env=env)
    assert result.exit_code == 2
    assert "error: training.epocs: unknown key (did you mean 'epochs'?)" in result.output
    assert "error: optimizer.lr: Input should be greater than 0 (got -1)" in result.output
    assert "Traceback" not in result.output


def test_missing_config_file_and_missing_arguments(tmp_path, env):
    result = invoke("train", tmp_path / "nope.yaml", env=env)
    assert result.exit_code == 2 and "cannot read config" in result.output
    result = invoke("train", env=env)
    assert result.exit_code == 2 and "give a config file" in result.output
    result = invoke("evaluate", tmp_path, env=env)
    assert result.exit_code == 1 and "no checkpoints/best.npz" in result.output
    result = invoke("evaluate", tmp_path, "--split", "train", env=env)
    assert result.exit_code == 2 and "'train' is not one of 'test', 'val'" in result.output


def test_print_config_resolves_overrides(digits_config, env):
    result = invoke("train", digits_config, "optimizer.lr=0.3", "--print-config", env=env)
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.output)
    assert resolved["optimizer"] == {"name": "sgd", "lr": 0.3, "momentum": 0.9, "nesterov": False, "l2": 0.0001,
                                     "weight_decay": 0.0}
    assert resolved["training"]["batch_size"] == 64


def test_missing_cifar_data_says_what_to_do(tmp_path, env):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "cifar10", "download": False},
                                      "model": {"layers": ["flatten", {"type": "dense"}]}}))
    result = invoke("train", config, env=env)
    assert result.exit_code == 1
    assert "cifar-10-python.tar.gz not found: download it from https://www.cs.toronto.edu" in result.output


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0 and "train" in result.output and "evaluate" in result.output
