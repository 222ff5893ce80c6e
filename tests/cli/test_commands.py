"""The command line through Typer's runner: exit codes, messages, the run folder as last line."""

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cifar_scratch.cli import app
from tests.conftest import REPO

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def env(tmp_path):
    return {"CIFAR_SCRATCH_DATA": str(tmp_path / "data")}


@pytest.mark.slow
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
    for name in (
        "confusion_matrix.json",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "samples.png",
        "misclassified.png",
    ):
        assert (out_dir / name).is_file(), name
    matrix = json.loads((out_dir / "confusion_matrix.json").read_text())["matrix"]
    assert sum(map(sum, matrix)) == metrics["samples"]

    result = invoke("evaluate", run_dir / "checkpoints" / "last.npz", "--split", "val", "--quiet", env=env)
    assert result.exit_code == 0 and result.output.strip() == str(run_dir / "eval" / "val-last")


def test_quiet_prints_only_the_path(tmp_path, digits_config, env):
    result = invoke("train", digits_config, "training.epochs=1", "--quiet", "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "RUN", "--split", "train"], "Invalid value for '--split': 'train' is not one of 'test', 'val'"),
        (["train", "c.yaml", "--threads", "0"], "Invalid value for '--threads'"),
        (["train", "--bogus"], "No such option: --bogus"),
        (["evaluate"], "Missing argument"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(tmp_path, args, message):
    result = invoke(*[str(tmp_path) if a == "RUN" else a for a in args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}") and "--help)" in lines[0], result.output


def test_bare_command_shows_help():
    result = invoke()
    assert result.exit_code == 0 and "Commands" in result.output and "train" in result.output


def test_print_config_resolves_overrides(digits_config, env):
    result = invoke("train", digits_config, "optimizer.lr=0.3", "--print-config", env=env)
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.output)
    assert resolved["optimizer"] == {
        "name": "sgd",
        "lr": 0.3,
        "momentum": 0.9,
        "nesterov": False,
        "l2": 0.0001,
        "weight_decay": 0.0,
        "groups": [],
    }
    assert resolved["training"]["batch_size"] == 64


def test_missing_cifar_data_says_what_to_do(tmp_path, env):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"dataset": "cifar10", "download": False}, "model": {"layers": ["flatten", {"type": "dense"}]}})
    )
    result = invoke("train", config, env=env)
    assert result.exit_code == 1
    assert "cifar-10-python.tar.gz not found: download it from https://www.cs.toronto.edu" in result.output


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0 and "train" in result.output and "evaluate" in result.output


# --------------------------------------------------------------------------- the run contract at the command line
def train_quiet(config, tmp_path, env, *overrides):
    result = invoke("train", config, *overrides, "--quiet", "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def test_help_shows_defaults_version_and_completion():
    help_text = " ".join(invoke("train", "--help").output.split())  # unwrapped
    assert (
        "[default: $CIFAR_SCRATCH_DATA, else ./data]" in help_text
        and "[default: $CIFAR_SCRATCH_THREADS, else the CPUs other processes leave free]" in help_text
    )
    assert "--install-completion" in invoke("--help").output
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("cifar-scratch 0.")


def test_usage_errors_exit_2(tmp_path, digits_config, env):
    assert invoke("gradcheck", "--against", "pytorch").exit_code == 2
    result = invoke("evaluate", digits_config, env=env)
    assert result.exit_code == 2 and "this is a config, not a run folder" in result.stderr
    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    result = invoke("train", "--resume", run_dir, env=env)
    assert result.exit_code == 2 and "already finished after 1 epochs" in result.stderr


@pytest.mark.slow
def test_resume_print_config_and_run_json_records_resumes(tmp_path, digits_config, env):
    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    result = invoke("train", "--resume", run_dir, "training.epochs=2", "--print-config", env=env)
    assert result.exit_code == 0 and yaml.safe_load(result.output)["training"]["epochs"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["epochs"] == 1, "print-config changes nothing"
    assert invoke("train", "--resume", run_dir, "training.epochs=2", "--quiet", env=env).exit_code == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert "git_commit" in info and info["status"] == "completed"
    assert [(r["overrides"], r["from_epoch"]) for r in info["resumes"]] == [(["training.epochs=2"], 1)]
    # Every session names what its times ran on: CPU, vector instructions, BLAS kernels, threads.
    for machine in (info["machine"], info["resumes"][0]["machine"]):
        assert machine["isa"] in ("AVX-512", "AVX2", "no AVX2") and machine["cpu"] and machine["threads"] >= 1
        assert machine["blas"] and "blas_kernels" in machine


def test_config_yaml_records_absolute_paths_and_works_from_any_folder(tmp_path, env, monkeypatch):
    images = tmp_path / "project" / "images"
    for cls in ("a", "b"):
        (images / "train" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((4, 4, 3), 10 * i + (120 if cls == "b" else 0), np.uint8)).save(
                images / "train" / cls / f"{i}.png"
            )
    (tmp_path / "project" / "configs").mkdir()
    config = tmp_path / "project" / "configs" / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"dataset": "imagefolder", "source": "../images", "val_fraction": 0.25, "test_fraction": 0.25},
                "model": {"layers": ["flatten", {"type": "dense"}]},
                "training": {"epochs": 1},
                "output": {"plots": False},
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_dir = train_quiet(config, tmp_path, env)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["source"] == str(images) and saved["output"]["runs_dir"] == str(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    assert invoke("evaluate", run_dir, "--quiet", env=env).exit_code == 0
    assert invoke("train", "--resume", run_dir, "training.epochs=2", "--quiet", env=env).exit_code == 0
    # The dataset moves: pointing config.yaml at the copy is fine, since the fingerprint shows the same images.
    shutil.move(images, tmp_path / "moved")
    (run_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text().replace(str(images), str(tmp_path / "moved")))
    assert invoke("evaluate", run_dir, "--quiet", env=env).exit_code == 0


def test_edited_config_yaml_is_refused_on_resume_and_evaluate(tmp_path, digits_config, env):
    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("split_seed: 0", "split_seed: 5"))
    for command in (["train", "--resume", run_dir, "training.epochs=2"], ["evaluate", run_dir]):
        result = invoke(*command, env=env)
        assert result.exit_code == 2, result.output
        assert "data.split_seed: config.yaml says 5, but" in result.stderr and "was trained with 0" in result.stderr


@pytest.mark.slow
def test_run_from_before_a_schema_key_was_added_still_evaluates(tmp_path, digits_config, env):
    """A checkpoint whose recorded config lacks a key added since reads it as the key's default."""
    from tests.test_fuzz import rewrite_checkpoint

    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    for name in ("last.npz", "best.npz"):
        rewrite_checkpoint(run_dir / "checkpoints" / name, lambda a, m: m["config"]["data"].pop("split_method"))
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text("\n".join(line for line in text.splitlines() if "split_method" not in line))
    result = invoke("evaluate", run_dir, "--quiet", env=env)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_checkpoint_with_non_finite_weights_is_refused(tmp_path, digits_config, env):
    from tests.test_fuzz import rewrite_checkpoint

    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    rewrite_checkpoint(run_dir / "checkpoints" / "last.npz", lambda a, m: a["param/dense1.weight"].flat.__setitem__(3, np.nan))
    result = invoke("train", "--resume", run_dir, "training.epochs=2", env=env)
    assert result.exit_code == 1 and "param/dense1.weight holds NaN or infinite values" in result.stderr


@pytest.mark.slow
def test_evaluate_on_an_unfinished_run_says_which_weights_it_measures(tmp_path, digits_config, env):
    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    (run_dir / "checkpoints" / "best.npz").unlink()
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    result = invoke("evaluate", run_dir, env=env)
    assert result.exit_code == 0
    assert "note: the run is not finished (run.json status: interrupted" in result.stderr
    assert "note: no best checkpoint yet: measuring checkpoints/last.npz" in result.stderr
    assert "weighted avg" in result.stdout  # scikit-learn's full report, with support


def test_files_where_folders_should_be_and_a_full_disk(tmp_path, digits_config, env, monkeypatch):
    (tmp_path / "afile").write_text("x")
    result = invoke("train", digits_config, "--runs-dir", tmp_path / "afile", env=env)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.output
    result = invoke("train", digits_config, "--data-dir", tmp_path / "afile", "data.dataset=cifar10", env=env)
    assert result.exit_code == 1 and result.stderr.startswith("error: ")

    from cifar_scratch.training import trainer as trainer_module

    real_save, calls = trainer_module.save_checkpoint, []

    def disk_fills_up(path, arrays, metadata):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device", str(path))
        real_save(path, arrays, metadata)

    monkeypatch.setattr(trainer_module, "save_checkpoint", disk_fills_up)
    result = invoke("train", digits_config, "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 1 and "No space left on device" in result.stderr, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "No space left" in info["error"]
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert invoke("train", "--resume", run_dir, "--quiet", env=env).exit_code == 0  # the last complete checkpoint


@pytest.mark.slow
def test_a_full_disk_while_finishing_leaves_the_run_to_be_finished(tmp_path, digits_config, env, monkeypatch):
    from cifar_scratch import reports

    real_plot = reports.plot_lr

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "lr.png")

    monkeypatch.setattr(reports, "plot_lr", full)
    result = invoke("train", digits_config, "training.epochs=1", "output.plots=true", "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "metrics.json").exists() and not (run_dir / "plots" / "lr.png").exists()
    monkeypatch.setattr(reports, "plot_lr", real_plot)
    assert invoke("train", "--resume", run_dir, "--quiet", env=env).exit_code == 0
    assert (run_dir / "plots" / "lr.png").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("command, signum", [("train", signal.SIGTERM), ("evaluate", signal.SIGINT)])
def test_signal_outside_training_exits_with_its_code_and_a_message(tmp_path, digits_config, env, monkeypatch, command, signum):
    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    import cifar_scratch.inference.evaluate
    import cifar_scratch.training.run

    module = cifar_scratch.training.run if command == "train" else cifar_scratch.inference.evaluate
    real = module.load_dataset

    def slow_load(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "load_dataset", slow_load)
    result = invoke(*([command, digits_config] if command == "train" else [command, run_dir]), env=env)
    assert result.exit_code == 128 + signum and f"interrupted by {signal.Signals(signum).name}" in result.stderr
    assert "nothing was written" in result.stderr or command == "evaluate"


@pytest.mark.slow
def test_an_interrupted_evaluate_writes_nothing_and_keeps_the_earlier_results(tmp_path, digits_config, env, monkeypatch):
    from cifar_scratch import reports

    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    assert invoke("evaluate", run_dir, "--quiet", env=env).exit_code == 0
    out = run_dir / "eval" / "test"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = reports.plot_image_grid

    def interrupted(*args, **kwargs):  # Ctrl-C while the last figures are drawn: half the files are new
        if str(args[3]).endswith("misclassified.png"):
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(reports, "plot_image_grid", interrupted)
    result = invoke("evaluate", run_dir, "--tta", "flip", env=env)
    assert result.exit_code == 130 and "nothing was written" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the earlier results stay whole"
    assert [p.name for p in (run_dir / "eval").iterdir()] == ["test"], "no temporary folder is left"


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path, digits_config, env):
    from filelock import FileLock

    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    with FileLock(run_dir / ".lock"):
        result = invoke("train", "--resume", run_dir, "training.epochs=2", env=env)
    assert result.exit_code == 1 and "another process is training this run" in result.stderr


def test_model_too_big_for_memory_is_refused_with_the_figure(tmp_path, digits_config, env):
    result = invoke("train", digits_config, "model.layers.1.units=1000000000", "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 2 and "model.layers: a training step would need about" in result.stderr
    assert "TB" in result.stderr and not (tmp_path / "runs").exists(), "a refused run leaves nothing behind"


@pytest.mark.slow
def test_evaluate_with_tta_reports_both_accuracies(tmp_path, digits_config, env):
    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    result = invoke("evaluate", run_dir, "--tta", "flip+translate", env=env)
    assert result.exit_code == 0, result.output
    # Each figure says which predictions it is of: plain, or with TTA.
    plain, tta, of = result.stdout.splitlines()[:3]
    assert plain.startswith("test, plain: accuracy ") and " macro F1 " in plain
    assert tta.startswith("test, TTA flip+translate: accuracy ") and " macro F1 " in tta
    assert of == "report of the TTA predictions (flip+translate):"
    metrics = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())
    assert metrics["tta"] == "flip+translate" and 0 <= metrics["accuracy_tta"] <= 1 and 0 <= metrics["accuracy"] <= 1
    assert f"macro F1 {metrics['macro_f1']:.4f}" in plain and f"macro F1 {metrics['macro_f1_tta']:.4f}" in tta
    assert metrics["per_class"].keys() == metrics["per_class_tta"].keys()
    assert metrics["report_of"] == "the TTA predictions (flip+translate)"
    matrix = json.loads((run_dir / "eval" / "test" / "confusion_matrix.json").read_text())
    assert matrix["predictions"] == metrics["report_of"]


def test_a_run_that_diverges_in_its_first_epoch_ends_cleanly_and_says_so_on_resume(tmp_path, env, recwarn):
    """The issue's case: SGD at lr 100 with momentum 0.999 on a deep MLP blows up at step 4."""
    args = [
        "train",
        REPO / "configs" / "digits.yaml",
        "optimizer={name: sgd, lr: 100, momentum: 0.999}",
        "model.layers=[flatten, {type: dense, units: 256}, {type: dense, units: 256}, {type: dense}]",
        "--runs-dir",
        tmp_path / "runs",
    ]
    result = invoke(*args, env=env)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: diverged: the training loss became nan at step 4 (epoch 1)"), errors
    assert "no epoch finished before it" in errors[0]
    assert not [w for w in recwarn if issubclass(w.category, (RuntimeWarning, UserWarning))], [str(w.message) for w in recwarn]
    assert not any("nan" in line for line in result.stdout.splitlines() if line.startswith("epoch") and "val" in line)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    for name in ("history.csv", "metrics.json", "plots/loss.png", "plots/accuracy.png", "plots/lr.png", "checkpoints/last.npz"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoints" / "best.npz").exists(), "non-finite weights never become best.npz"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] is None and "nothing to measure" in metrics["note"]
    result = invoke("train", "--resume", run_dir, env=env)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "a diverged run cannot be resumed" in line and f"cifar-scratch train {run_dir / 'config.yaml'} optimizer.lr=10" in line


def test_without_a_validation_split_the_console_and_metrics_say_what_picked_the_best_epoch(tmp_path, digits_config, env):
    result = invoke(
        "train", digits_config, "data.val_fraction=0", "training.monitor=val_accuracy", "--runs-dir", tmp_path / "runs", env=env
    )
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs and not any("val" in line or "nan" in line or "-0.0000" in line for line in epochs), epochs
    assert "no validation split: train_accuracy picks the best epoch" in result.stdout
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "train_accuracy" and "val_accuracy" not in metrics
    assert ",," in (run_dir / "history.csv").read_text().splitlines()[1], "no validation figures: empty cells, not nan"


def test_figures_print_no_negative_zero():
    from cifar_scratch.cli.console import figure

    assert figure(-1e-9) == "0.0000" and figure(-0.0) == "0.0000" and figure(-0.5) == "-0.5000" and figure(0.12345) == "0.1235"


@contextlib.contextmanager
def not_blocked_by(fifo, seconds=20):
    """Fail if the block still reads ``fifo`` after ``seconds``: a watchdog then opens it for writing and
    closes it, which ends a blocked read (so a regression fails instead of hanging the test suite)."""
    import threading

    done, blocked = threading.Event(), []

    def watchdog():
        if not done.wait(seconds):
            blocked.append(fifo)
            with open(fifo, "wb"):
                pass

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert not blocked, f"blocked on {fifo} for more than {seconds} s"


@pytest.mark.slow
def test_fifos_and_devices_planted_as_files_are_one_error_line(tmp_path, digits_config, env):
    os.mkfifo(tmp_path / "config.yaml")
    with not_blocked_by(tmp_path / "config.yaml"):
        result = invoke("train", tmp_path / "config.yaml", env=env)
    assert (
        result.exit_code == 2
        and result.output.strip() == f"error: {tmp_path / 'config.yaml'}: cannot read config (not a regular file (a FIFO))"
    )

    run_dir = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    (run_dir / "run.json").unlink()
    (run_dir / "run.json").symlink_to("/dev/zero")
    result = invoke("evaluate", run_dir, env=env)
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"error: {run_dir / 'run.json'}: cannot read run.json (not a regular file (a device or socket)); fix or delete it (pass --data-dir then)"
    )
    (run_dir / "run.json").unlink()
    (run_dir / "config.yaml").unlink()
    os.mkfifo(run_dir / "config.yaml")
    with not_blocked_by(run_dir / "config.yaml"):
        result = invoke("train", "--resume", run_dir, env=env)
        assert result.exit_code == 2 and "cannot read config (not a regular file (a FIFO))" in result.output
        assert invoke("runs", run_dir.parent).exit_code == 0  # listings skip what they cannot read

    os.mkfifo(tmp_path / "photo.png")
    other = train_quiet(digits_config, tmp_path, env, "training.epochs=1")
    with not_blocked_by(tmp_path / "photo.png"):
        result = invoke("predict", other, tmp_path / "photo.png", env=env)
    assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path / 'photo.png'}: not a regular file (a FIFO)"


def test_a_20_gb_sparse_file_named_png_is_refused_from_its_size(tmp_path, env):
    images = tmp_path / "images"
    for cls in ("a", "b"):
        (images / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(images / "train" / cls / f"{i}.png")
    with open(images / "train" / "a" / "huge.png", "wb") as handle:
        handle.truncate(20 * 10**9)  # no disk used
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"dataset": "imagefolder", "source": str(images)}, "model": {"layers": ["flatten", "dense"]}})
    )
    result = invoke("train", config, "--runs-dir", tmp_path / "runs", env=env)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: {images / 'train' / 'a' / 'huge.png'}: 20.0 GB is more than an image file holds here (1.0 GB at most)"
    )


@pytest.mark.slow
def test_the_reference_engine_trains_records_itself_and_predicts_as_the_fast_one(tmp_path, digits_config, env):
    fast_run = train_quiet(digits_config, tmp_path, env, "training.epochs=2")
    result = invoke(
        "train", digits_config, "training.epochs=2", "--engine", "reference", "--runs-dir", tmp_path / "ref", "--quiet", env=env
    )
    assert result.exit_code == 0, result.output
    reference_run = Path(result.output.strip().splitlines()[-1])
    assert yaml.safe_load((reference_run / "config.yaml").read_text())["training"]["engine"] == "reference"
    fast_metrics, reference_metrics = (json.loads((run / "metrics.json").read_text()) for run in (fast_run, reference_run))
    assert abs(fast_metrics["test_accuracy"] - reference_metrics["test_accuracy"]) < 0.03  # float32 rounding, 2 epochs
    # The same weights through both engines: the same predictions, logits within float32 rounding.
    outputs = {}
    for engine in ("fast", "reference"):
        out = invoke("evaluate", fast_run, "--engine", engine, "--quiet", env=env)
        assert out.exit_code == 0, out.output
        metrics = json.loads((fast_run / "eval" / "test" / "metrics.json").read_text())
        assert metrics["engine"] == engine
        outputs[engine] = metrics
    assert outputs["fast"]["accuracy"] == outputs["reference"]["accuracy"]
    assert outputs["fast"]["loss"] == pytest.approx(outputs["reference"]["loss"], rel=1e-5)
    refused = invoke("train", "--resume", reference_run, "training.epochs=3", "--engine", "fast", env=env)
    assert refused.exit_code == 2 and "training.engine: cannot change when resuming" in refused.output
