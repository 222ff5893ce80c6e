"""The user's own layers, from a file or a module: validated, checked, trained, kept with the run."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import cifar_scratch as cs
from cifar_scratch.cli import app
from cifar_scratch.config import load_config
from cifar_scratch.errors import ConfigError
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "custom_layer"


def copy_example(folder, name: str, tmp_path, **changes):
    """A shipped example (``name``.py beside ``name``.yaml) copied into ``tmp_path``, 3 epochs, ``changes`` applied."""
    shutil.copy(folder / f"{name}.py", tmp_path / f"{name}.py")
    tree = yaml.safe_load((folder / f"{name}.yaml").read_text())
    tree["training"]["epochs"] = 3
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tree | changes))
    return tmp_path


@pytest.fixture
def project(tmp_path):
    return copy_example(EXAMPLE, "swish", tmp_path)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_the_example_layer_passes_gradcheck_alone_and_in_its_model():
    result = invoke("gradcheck", EXAMPLE / "swish.yaml")
    assert result.exit_code == 0, result.output
    assert "swish1 (model.layers.2)" in result.output and "beta" in result.output
    alone = invoke("gradcheck", "--layer", f"{EXAMPLE / 'swish.py'}:Swish")
    assert alone.exit_code == 0, alone.output
    assert "(4, 5, 3)" in alone.output, "checked on the default image-shaped example"


def test_a_wrong_backward_fails_gradcheck_naming_the_layer_and_parameter(project):
    source = (project / "swish.py").read_text()
    (project / "swish.py").write_text(source.replace("(dz * x).reshape", "(dz * x * 1.01).reshape"))  # a planted bug
    result = invoke("gradcheck", project / "swish.yaml")
    assert result.exit_code == 1, result.output
    failing = [line for line in result.output.splitlines() if line.rstrip().endswith("FAIL")]
    assert failing and all("beta" in line for line in failing), result.output
    assert any(line.startswith("swish1 (model.layers.2)") for line in failing)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"beta": 1.0, "betaa": 2.0}, "model.layers.2.betaa: unknown key (did you mean 'beta'?)"),
        ({"beta": "fast"}, "model.layers.2.beta: Input should be a valid number"),
        ({"beta": True}, "model.layers.2.beta: Input should be a number, not a boolean"),
        ({"type": "nope.py:Swish"}, "model.layers.2.type: "),
        ({"type": "swish.py:Swash"}, "swish.py: defines no Swash"),
        ({"type": "swish.py:np"}, "swish.py: np is not a layer: subclass cifar_scratch.nn.layers.Layer"),
        ({"type": "no_such_package.layers:Swish"}, "no_such_package.layers: cannot import (ModuleNotFoundError"),
    ],
)
def test_a_bad_user_layer_is_one_config_error_line(project, change, message):
    tree = yaml.safe_load((project / "swish.yaml").read_text())
    tree["model"]["layers"][2] = {"type": "swish.py:Swish", **change}
    (project / "swish.yaml").write_text(yaml.safe_dump(tree))
    result = invoke("train", project / "swish.yaml")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result)) == 1 and message in error_lines(result)[0], result.output
    if change.get("type") == "nope.py:Swish":
        assert f"{project / 'nope.py'}: no such file" in result.output


def test_a_file_that_does_not_import_or_breaks_the_protocol_is_named(project, monkeypatch):
    monkeypatch.chdir(project)  # an override's path is relative to the current folder
    (project / "broken.py").write_text("import numpy as np\n\ndef f(:\n    pass\n")
    (project / "half.py").write_text(
        "from cifar_scratch.nn.layers import Layer\n\nclass Half(Layer):\n    def forward(self, x):\n        return x / 2\n"
    )
    for reference, message in (
        ("broken.py:Swish", f"{project / 'broken.py'}:3: cannot import (SyntaxError"),
        ("half.py:Half", f"{project / 'half.py'}: Half does not define backward"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"model.layers.2.type: {message}")):
            load_config(project / "swish.yaml", [f"model.layers.2={{type: {reference}}}"])


def test_a_layer_from_an_importable_module(project, monkeypatch):
    package = project / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(project / "swish.py", package / "layers.py")
    monkeypatch.syspath_prepend(str(project))
    config = load_config(project / "swish.yaml", ["model.layers.2={type: 'mypkg.layers:Swish', beta: 2.0}"])
    assert config.model.layers[2].type == "mypkg.layers:Swish" and config.model.layers[2].beta == 2.0
    sys.modules.pop("mypkg.layers", None)
    sys.modules.pop("mypkg", None)


def arrays(path):
    """A checkpoint's arrays (its metadata member holds the config and timings, which differ)."""
    with np.load(path) as data:
        return {name: data[name] for name in data.files if name != "metadata.json"}


@pytest.mark.slow
def test_a_run_keeps_its_user_code_resumes_bit_exactly_and_refuses_an_edited_copy(project):
    constant = "schedule={name: constant}"  # the same rates whether the run is planned for 2 epochs or 3
    straight = invoke("train", project / "swish.yaml", constant, "--quiet", "--runs-dir", project / "a")
    assert straight.exit_code == 0, straight.output
    first = invoke("train", project / "swish.yaml", constant, "training.epochs=2", "--quiet", "--runs-dir", project / "b")
    assert first.exit_code == 0, first.output
    run_a, run_b = (next((project / name).iterdir()) for name in ("a", "b"))

    # The run keeps a copy of the file and its SHA-256, and its config names the copy.
    assert (run_b / "code" / "swish.py").read_text() == (project / "swish.py").read_text()
    digest, name = (run_b / "code" / "SHA256SUMS").read_text().split()
    assert name == "swish.py" and len(digest) == 64
    layers = yaml.safe_load((run_b / "config.yaml").read_text())["model"]["layers"]
    assert layers[2]["type"] == "code/swish.py:Swish" and layers[4]["type"] == "code/swish.py:Swish"
    assert "swish1 (Swish)" in (run_b / "summary.txt").read_text()

    # The original may change or go: the run uses its copy, and says so.
    (project / "swish.py").write_text("raise RuntimeError('not this file')\n")
    resumed = invoke("train", "--resume", run_b, "training.epochs=3", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert f"note: imports the run's copy of user code {run_b / 'code' / 'swish.py'}" in resumed.output
    ours, theirs = arrays(run_a / "checkpoints" / "last.npz"), arrays(run_b / "checkpoints" / "last.npz")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours), "bit-exact resume"

    evaluated = invoke("evaluate", run_b, "--quiet")
    assert evaluated.exit_code == 0 and "imports the run's copy of user code" in evaluated.output, evaluated.output
    moved = project / "moved"
    shutil.move(run_b, moved)  # a run folder with its code travels whole
    assert invoke("evaluate", moved, "--quiet").exit_code == 0

    copy = moved / "code" / "swish.py"
    copy.write_text(copy.read_text() + "\n# edited\n")
    for command in (["train", "--resume", moved, "training.epochs=4"], ["evaluate", moved]):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert error_lines(result) == [
            f"error: {copy}: edited after the run started (its SHA-256 differs from code/SHA256SUMS); "
            "restore it, or copy it elsewhere and start a new run"
        ]
    assert json.loads((moved / "run.json").read_text())["status"] == "completed"


# --------------------------------------------------------------------------- optimizers
LION = REPO / "examples" / "custom_optimizer"


@pytest.fixture
def lion_project(tmp_path):
    # A constant rate: the same rates whether the run is planned for 2 epochs or 3.
    return copy_example(LION, "lion", tmp_path, schedule={"name": "constant"})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"beta_2": 0.9}, "optimizer.beta_2: unknown key (did you mean 'beta2'?)"),
        ({"lr": -1}, "optimizer.lr: Input should be greater than 0"),
        ({"beta2": "high"}, "optimizer.beta2: Input should be a valid number"),
        ({"name": "lion.py:Lyon"}, "optimizer.name: "),
        ({"name": "swish.py:Swish"}, "swish.py: Swish is not an optimizer: subclass cifar_scratch.optim.optimizers.Optimizer"),
    ],
)
def test_a_bad_user_optimizer_is_one_config_error_line(lion_project, change, message):
    shutil.copy(EXAMPLE / "swish.py", lion_project / "swish.py")
    tree = yaml.safe_load((lion_project / "lion.yaml").read_text())
    tree["optimizer"] |= change
    (lion_project / "lion.yaml").write_text(yaml.safe_dump(tree))
    result = invoke("train", lion_project / "lion.yaml")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result)) == 1 and message in error_lines(result)[0], result.output


def test_a_user_optimizer_sees_groups_and_decay_flags(lion_project):
    from cifar_scratch.api import build_model
    from cifar_scratch.builders import build_optimizer

    config = load_config(lion_project / "lion.yaml", ["optimizer.groups=[{params: '*.bias', lr_scale: 2.0}]"])
    optimizer = build_optimizer(config.optimizer, build_model(config), 10)
    assert type(optimizer).__name__ == "Lion" and optimizer.beta2 == 0.99
    assert optimizer.hyper["dense1.bias"].lr_scale == 2.0 and optimizer.hyper["dense1.bias"].weight_decay == 0.0
    assert optimizer.hyper["dense1.weight"].weight_decay == 0.1, "kernels take the optimizer's decoupled decay"
    assert set(optimizer.state_arrays()) == {f"momentum/{name}" for name in optimizer.params}


@pytest.mark.slow
def test_a_user_optimizer_trains_keeps_its_code_and_resumes_bit_exactly(lion_project):
    straight = invoke("train", lion_project / "lion.yaml", "--quiet", "--runs-dir", lion_project / "a")
    assert straight.exit_code == 0, straight.output
    first = invoke("train", lion_project / "lion.yaml", "training.epochs=2", "--quiet", "--runs-dir", lion_project / "b")
    assert first.exit_code == 0, first.output
    run_a, run_b = (next((lion_project / name).iterdir()) for name in ("a", "b"))
    assert yaml.safe_load((run_b / "config.yaml").read_text())["optimizer"]["name"] == "code/lion.py:Lion"
    (lion_project / "lion.py").unlink()  # the run has its own copy
    resumed = invoke("train", "--resume", run_b, "training.epochs=3", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    ours, theirs = arrays(run_a / "checkpoints" / "last.npz"), arrays(run_b / "checkpoints" / "last.npz")
    assert any(name.startswith("optim/momentum/") for name in ours), "Lion's state is checkpointed"
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours), "bit-exact resume"
    assert json.loads((run_b / "metrics.json").read_text())["test_accuracy"] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("strike", [0.2, 0.8])
def test_a_run_with_a_user_layer_killed_mid_training_resumes_bit_identically(tmp_path, strike):
    from tests.training.test_kill import cli, launch, wait_for, without_times

    folder = copy_example(EXAMPLE, "swish", tmp_path, training={"epochs": 30, "batch_size": 16, "seed": 0})
    env = {**os.environ, "CIFAR_SCRATCH_DATA": str(tmp_path / "data"), "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
    config = folder / "swish.yaml"
    reference = subprocess.run(
        cli("train", config, "--runs-dir", tmp_path / "reference"), capture_output=True, text=True, env=env, cwd=REPO
    )
    assert reference.returncode == 0, reference.stderr
    process = launch(cli("train", config, "--runs-dir", tmp_path / "killed"), env)
    assert wait_for(lambda: any((tmp_path / "killed").glob("*/checkpoints/last.npz")), process), process.communicate()[1]
    time.sleep(strike)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    (run_dir,) = (tmp_path / "killed").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running", "killed while training"
    resumed = subprocess.run(cli("train", "--resume", run_dir), capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    reference_dir = Path(reference.stdout.strip().splitlines()[-1])
    ours, theirs = arrays(reference_dir / "checkpoints" / "last.npz"), arrays(run_dir / "checkpoints" / "last.npz")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    metrics = [without_times(json.loads((d / "metrics.json").read_text())) for d in (reference_dir, run_dir)]
    assert metrics[0] == metrics[1]


# --------------------------------------------------------------------------- losses
FOCAL = REPO / "examples" / "custom_loss"


@pytest.fixture
def focal_project(tmp_path):
    return copy_example(FOCAL, "focal", tmp_path)


def test_a_user_loss_is_checked_through_the_model_and_a_wrong_gradient_fails(focal_project):
    assert invoke("gradcheck", FOCAL / "focal.yaml").exit_code == 0
    source = (focal_project / "focal.py").read_text()
    (focal_project / "focal.py").write_text(source.replace("dlog_pt = -weight +", "dlog_pt = -1.01 * weight +"))
    result = invoke("gradcheck", focal_project / "focal.yaml")
    assert result.exit_code == 1 and "FAIL" in result.output, result.output


@pytest.mark.parametrize(
    "change, message",
    [
        ({"loss": {"name": "focal.py:Focal", "gama": 1.0}}, "loss.gama: unknown key (did you mean 'gamma'?)"),
        ({"loss": {"name": "focal.py:Loss"}}, "focal.py: Loss does not define forward"),
        ({"loss": {"name": "focal.py:np"}}, "focal.py: np is not a loss: subclass cifar_scratch.nn.losses.Loss"),
        ({"training": {"label_smoothing": 0.1}}, "training.label_smoothing: smooths cross_entropy's targets"),
    ],
)
def test_a_bad_user_loss_is_one_config_error_line(focal_project, change, message):
    tree = yaml.safe_load((focal_project / "focal.yaml").read_text())
    for key, value in change.items():
        tree[key] = tree[key] | value if key == "training" else value
    (focal_project / "focal.yaml").write_text(yaml.safe_dump(tree))
    result = invoke("train", focal_project / "focal.yaml")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result)) == 1 and message in error_lines(result)[0], result.output


def test_a_run_with_a_user_loss_keeps_it_and_reports_cross_entropy(focal_project):
    from cifar_scratch.nn.reference import cross_entropy

    result = invoke("train", focal_project / "focal.yaml", "training.epochs=1", "--quiet", "--runs-dir", focal_project / "runs")
    assert result.exit_code == 0, result.output
    run = cs.load_run(result.output.strip().splitlines()[-1])
    assert (run.path / "code" / "focal.py").read_text() == (FOCAL / "focal.py").read_text()
    assert yaml.safe_load((run.path / "config.yaml").read_text())["loss"] == {"name": "code/focal.py:Focal", "gamma": 2.0}
    model, normalizer = run.load_model()
    from cifar_scratch.data import load_dataset

    test = load_dataset(run.config.data, focal_project / "data", progress=False).test
    expected = cross_entropy(model.forward(normalizer(test.images)), test.labels)
    assert run.metrics["test_loss"] == pytest.approx(expected, rel=1e-5), "cross-entropy, not the focal loss"
