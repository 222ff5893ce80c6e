"""Seeded fuzzing of the run contract: malformed configs and corrupted checkpoints and run files.

Every case goes through the real command line (Typer's runner, in-process) under an alarm, and must
end with exit code 1 or 2 and only ``error:`` lines on stderr: no traceback, no internal error, no
hang. A config that happens to be valid may train (exit 0), and must then print its run folder.
"""

import io
import json
import shutil
import signal
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cifar_scratch.cli import app
from tests.conftest import digits_tree

pytestmark = pytest.mark.slow
runner = CliRunner()
CASE_SECONDS = 30
SEED = 20261121


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(args: list, env: dict, case: str):
    with deadline(CASE_SECONDS):
        result = runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    context = f"case {case}: exit {result.exit_code}\nstderr: {result.stderr[-2000:]}"
    assert "Traceback" not in result.output and "internal error" not in result.stderr, context
    if result.exit_code == 0:
        assert Path(result.stdout.strip().splitlines()[-1]).exists(), context
    else:
        assert result.exit_code in (1, 2), context
        assert errors and all(line.startswith(("error: ", "note: ")) for line in errors), context
        assert any(line.startswith("error: ") for line in errors), context
    return result


# --------------------------------------------------------------------------- configs
VALUES = [
    -1,
    0,
    1,
    2,
    -0.0,
    1e-300,
    1e300,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
    None,
    "",
    "abc",
    "1e-3",
    [],
    [1, 2],
    {},
    {"a": 1},
    10**40,
    -(10**40),
    2**32,
    0.5,
    0.9999,
    1e9,
    "relu",
    "../nope",
    "\u2603" * 50,
]
PATHS = [
    "name",
    "data",
    "data.dataset",
    "data.val_fraction",
    "data.test_fraction",
    "data.split_seed",
    "data.classes",
    "data.grayscale",
    "data.normalize",
    "data.source",
    "data.augment",
    "data.augment.translate",
    "data.augment.copies",
    "model",
    "model.layers",
    "model.layers.0",
    "model.layers.1",
    "model.layers.1.units",
    "model.layers.1.init",
    "model.layers.3.rate",
    "optimizer",
    "optimizer.name",
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.l2",
    "optimizer.weight_decay",
    "schedule",
    "schedule.name",
    "schedule.warmup_epochs",
    "training",
    "training.epochs",
    "training.batch_size",
    "training.seed",
    "training.label_smoothing",
    "training.monitor",
    "training.early_stopping",
    "training.checkpoint_every",
    "output",
    "output.plots",
    "output.runs_dir",
    "unknown",
    "training.epocs",
]
SECTIONS = [
    "{name: adam, betas: [1.5, 0.2]}",
    "{name: cyclic, step_epochs: 1.0e-300}",
    "{name: step, step_epochs: 0}",
    "[{type: conv2d, filters: 4, kernel: 100}, {type: dense}]",
    "[{type: conv2d, filters: 4, padding: 1000000}, flatten, {type: dense}]",
    "[flatten, {type: dense, units: 1000000000}, {type: dense}]",
    "[flatten, {type: leaky_relu, alpha: .inf}, {type: dense}]",
    "[{type: maxpool2d, size: 9}, flatten, {type: dense}]",
    "[{type: nope}]",
    "[flatten]",
    "{name: plateau, patience: -1}",
    "{name: sgd, lr: 1.0e+300}",
    "{name: adamw, weight_decay: 1.0e+25}",
    "{patience: 0}",
]
RAW = [
    b"\xff\xfe\x00garbage",
    bytes(range(256)) * 4,
    b"a: " + b"[" * 1000 + b"]" * 1000,
    b"training: {seed: " + b"9" * 5000 + b"}",
    b"model: [",
    b"\t- tab",
    b"- a list\n- at the top",
    b"just a string",
    b"",
    b"model: {layers: []}",
    b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    b"model: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
]


def fuzzed_config(rng: np.random.Generator, case: int) -> tuple[bytes, list[str]]:
    """A config file's bytes and overrides; most are invalid in one or more ways."""
    tree = digits_tree(epochs=1)
    tree["output"] = {"plots": False}
    kind = case % 4
    if kind == 0:
        return RAW[case // 4 % len(RAW)], []
    overrides = []
    for _ in range(rng.integers(1, 4)):
        path = PATHS[rng.integers(len(PATHS))]
        if kind == 1:
            value = VALUES[rng.integers(len(VALUES))]
            overrides.append(f"{path}={json.dumps(value) if isinstance(value, (list, dict, str)) else value}")
        elif kind == 2:
            section = rng.choice(["model.layers", "optimizer", "schedule", "training.early_stopping"])
            overrides.append(f"{section}={SECTIONS[rng.integers(len(SECTIONS))]}")
        else:
            overrides.append(f"{path}.{rng.choice(['x', '0', '-1', '99'])}={VALUES[rng.integers(len(VALUES))]}")
    text = yaml.safe_dump(tree).encode()
    if rng.random() < 0.2:  # cut the file somewhere
        text = text[: rng.integers(len(text))]
    return text, overrides


def test_fuzzed_configs_end_cleanly(tmp_path):
    rng = np.random.default_rng(SEED)
    env = {"CIFAR_SCRATCH_DATA": str(tmp_path / "data")}
    exits = []
    for case in range(240):
        text, overrides = fuzzed_config(rng, case)
        path = tmp_path / f"case{case}.yaml"
        path.write_bytes(text)
        result = run_cli(["train", path, *overrides, "--quiet", "--runs-dir", tmp_path / "runs"], env, f"{case} {overrides}")
        exits.append(result.exit_code)
    assert exits.count(2) > 150 and exits.count(0) >= 1, np.bincount(exits)  # mostly refused, a few valid ones trained


# --------------------------------------------------------------------------- checkpoints and run files
def rewrite_checkpoint(path: Path, change) -> None:
    """Rewrite a checkpoint with ``change(arrays, metadata)`` applied (the way a damaged file would look)."""
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        arrays = {n[:-4]: np.lib.format.read_array(io.BytesIO(archive.read(n))) for n in archive.namelist() if n.endswith(".npy")}
    change(arrays, metadata)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())


def pick(arrays, prefix):
    names = sorted(n for n in arrays if n.startswith(prefix))
    return names[len(names) // 2]


CHANGES = {
    "drop data/mean": lambda a, m: a.pop("data/mean"),
    "data/mean shape": lambda a, m: a.update({"data/mean": np.zeros(3, np.float32)}),
    "drop a parameter": lambda a, m: a.pop(pick(a, "param/")),
    "parameter shape": lambda a, m: a.update({pick(a, "param/"): np.zeros((2, 2), np.float32)}),
    "parameter float64": lambda a, m: a.update({(k := pick(a, "param/")): a[k].astype(np.float64)}),
    "parameter NaN": lambda a, m: a[pick(a, "param/")].flat.__setitem__(0, np.nan),
    "drop optimizer slot": lambda a, m: a.pop(pick(a, "optim/")),
    "optimizer slot shape": lambda a, m: a.update({pick(a, "optim/"): np.zeros(3, np.float32)}),
    "optimizer slot inf": lambda a, m: a[pick(a, "optim/")].flat.__setitem__(0, np.inf),
    "bad permutation": lambda a, m: a.update({"train/permutation": np.zeros(5, np.int64)}),
    "float permutation": lambda a, m: a.update({"train/permutation": np.arange(3.0)}),
    "drop lr history": lambda a, m: a.pop("history/lr"),
    "rng garbage": lambda a, m: m.update({"rng": {"bit_generator": "PCG64", "state": "x"}}),
    "rng wrong kind": lambda a, m: m.update({"rng": {"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}}),
    "rng missing": lambda a, m: m.pop("rng"),
    "epoch as string": lambda a, m: m.update({"epoch": "three"}),
    "negative step": lambda a, m: m.update({"step": -4}),
    "history garbage": lambda a, m: m.update({"history": [1, 2, 3]}),
    "schedule state": lambda a, m: m.update({"schedule": {"nope": 1}}),
    "running garbage": lambda a, m: m.update({"running": "fast"}),
    "metadata list": lambda a, m: (m.clear(), m.update({"format": "cifar-scratch-checkpoint", "version": 2})),
    "other classes": lambda a, m: m.update({"class_names": ["a", "b"]}),
    "edited config": lambda a, m: m["config"]["data"].update({"split_seed": 5}),
    "other data": lambda a, m: m["data"].update({"test": "0" * 16}),
    "stop reason number": lambda a, m: m.update({"stop_reason": 7}),
}


def damage(run_dir: Path, rng: np.random.Generator, case: int) -> str:
    """Damage both checkpoints alike (resume reads last.npz, evaluate best.npz), run.json or config.yaml."""
    kind = case % 5
    checkpoints = [run_dir / "checkpoints" / "last.npz", run_dir / "checkpoints" / "best.npz"]
    if kind == 0:
        name = list(CHANGES)[case // 5 % len(CHANGES)]
        for target in checkpoints:
            rewrite_checkpoint(target, CHANGES[name])
        return f"checkpoints: {name}"
    if kind == 1:
        for target in checkpoints:
            data = bytearray(target.read_bytes())
            for _ in range(rng.integers(1, 20)):
                data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
            target.write_bytes(bytes(data))
        return "checkpoints: bit flips"
    if kind == 2:
        for target in checkpoints:
            data = target.read_bytes()
            target.write_bytes(data[: rng.integers(len(data))])
        return "checkpoints: truncated"
    if kind == 3:
        choice = rng.integers(4)
        info = run_dir / "run.json"
        info.write_bytes([b"{not json", b"[1, 2]", b"\xff\xfe", b'{"data_dir": 7, "status": []}'][choice])
        return f"run.json: garbage {choice}"
    config = run_dir / "config.yaml"
    tree = yaml.safe_load(config.read_text())
    choice = rng.integers(4)
    if choice == 0:
        tree["data"]["split_seed"] = 5
    elif choice == 1:
        tree["model"]["layers"][1]["units"] = 7
    elif choice == 2:
        tree["training"]["seed"] = -3
    else:
        config.write_bytes(b"\x00\x01binary")
        return "config.yaml: binary"
    config.write_text(yaml.safe_dump(tree))
    return f"config.yaml: edit {choice}"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_run")
    config = root / "tiny.yaml"
    tree = digits_tree(epochs=2)
    tree["output"] = {"plots": False}
    config.write_text(yaml.safe_dump(tree))
    env = {"CIFAR_SCRATCH_DATA": str(root / "data")}
    result = runner.invoke(app, ["train", str(config), "--quiet", "--runs-dir", str(root / "runs")], env=env)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1]), env


def test_corrupted_checkpoints_and_run_files_end_cleanly(trained_run, tmp_path):
    source, env = trained_run
    rng = np.random.default_rng(SEED + 1)
    exits = []
    for case in range(110):
        run_dir = tmp_path / f"run{case}"
        shutil.copytree(source, run_dir)
        what = damage(run_dir, rng, case)
        for command in (["train", "--resume", run_dir, "training.epochs=3", "--quiet"], ["evaluate", run_dir, "--quiet"]):
            exits.append(run_cli(command, env, f"{case} {what} {command[0]}").exit_code)
    assert exits.count(0) < len(exits) // 10 and exits.count(1) > 150, np.bincount(exits)
