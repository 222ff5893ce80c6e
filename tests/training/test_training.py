"""The training loop end to end on digits: resume exactness, signals, early stopping, float32."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace as dataclass_replace

import numpy as np
import pytest
import yaml

from cifar_scratch.config import build_config
from cifar_scratch.data import load_dataset
from cifar_scratch.errors import ConfigError, TrainingFailed, UsageError, UserError
from cifar_scratch.signals import Interrupted
from cifar_scratch.training.checkpoint import load_checkpoint
from cifar_scratch.training.run import build_trainer, resume_run, start_run
from cifar_scratch.training.trainer import Callback
from tests.conftest import REPO, RUN_FOLDER_FILES, digits_tree


def params_of(run_dir, which="last"):
    arrays, meta = load_checkpoint(run_dir / "checkpoints" / f"{which}.npz")
    return {k: v for k, v in arrays.items() if not k.startswith("train/")}, meta


def start(tmp_path, overrides=(), **training):
    config = build_config(digits_tree(**training), list(overrides))
    return start_run(config, tmp_path / "data", progress=False, runs_dir=tmp_path / "runs")


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path):
    """2 epochs + resume for 2 more == 4 uninterrupted epochs, for every array and the history.

    The schedule must not depend on training.epochs (cosine's horizon does); the interrupted-run
    test below covers cosine with the epoch count unchanged.
    """
    schedule = ["schedule={name: step, step_epochs: 1, gamma: 0.5, warmup_epochs: 0.5}"]
    straight = start(tmp_path, schedule, epochs=4).run_dir
    first = start(tmp_path, schedule, epochs=2).run_dir
    resume_run(first, ["training.epochs=4"], tmp_path / "data", progress=False)
    a, meta_a = params_of(straight)
    b, meta_b = params_of(first)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_time"} for r in h]  # noqa: E731
    assert strip(meta_a["history"]) == strip(meta_b["history"])
    assert meta_a["rng"] == meta_b["rng"]
    lines = (first / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert yaml.safe_load((first / "config.yaml").read_text())["training"]["epochs"] == 4


class InterruptAt(Callback):
    """Delivers SIGINT to this process during batch ``at`` of epoch 2."""

    def __init__(self, at):
        self.at = at

    def on_batch_end(self, trainer, batch, batches, loss, accuracy):
        if trainer.state.epoch == 1 and batch == self.at:
            os.kill(os.getpid(), signal.SIGINT)


AUGMENT = ["data.augment={flip: true, translate: 2, cutout: 3}"]
ALTERNATE = ["data.augment={flip: alternate, translate: 1}"]
EMA = ["training.ema={decay: 0.9, every: 2, warmup_epochs: 1, start_epochs: 1, lookahead: true}", "training.tta=flip"]
EVERYTHING = [  # every recipe feature at once: whitened stem, frozen batch-norm scales, groups, scale, EMA, TTA
    "model.layers=[{type: conv2d, filters: 8, kernel: 2, padding: valid, init: whiten, trainable: [bias]}, gelu,"
    " {type: conv2d, filters: 6, init: dirac}, {type: batchnorm, trainable: [bias]}, gelu, global_maxpool,"
    " {type: dense, bias: false}, {type: scale, factor: 0.5}]",
    "optimizer={name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.001,"
    " groups: [{params: conv2d1.bias, epochs: 1}, {params: '*batchnorm*.bias', lr_scale: 8}]}",
    "schedule={name: piecewise, points: [[0, 0.2], [1, 1], [3, 0]]}",
    "data.augment={flip: alternate, translate: 1}",
    "training.label_smoothing=0.2",
    *EMA,
]
MUON = [  # the same recipe with Muon: orthogonalised kernel updates, SGD for the biases and the classifier
    *EVERYTHING,
    "optimizer={name: muon, lr: 0.05, momentum: 0.6, ns_steps: 3, normalize_weights: true, fallback_lr: 0.05,"
    " fallback_momentum: 0.9, fallback_nesterov: true, groups: [{params: conv2d1.bias, epochs: 1}]}",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [[], AUGMENT, ALTERNATE, EMA, EVERYTHING, MUON],
    ids=["plain", "augmented", "alternating-flips", "ema", "recipe", "recipe-muon"],
)
def test_mid_epoch_interrupt_saves_and_resumes_exactly(tmp_path, overrides):
    straight = start(tmp_path, overrides, epochs=3).run_dir
    config = build_config(digits_tree(epochs=3), overrides)
    with pytest.raises(Interrupted) as info:
        start_run(config, tmp_path / "data", [InterruptAt(5)], progress=False, runs_dir=tmp_path / "runs2")
    assert info.value.signum == signal.SIGINT and not info.value.immediate
    run_dir = info.value.checkpoint.parent.parent
    _, meta = params_of(run_dir)
    assert (meta["epoch"], meta["batch_in_epoch"]) == (1, 5)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resume_run(run_dir, [], None, progress=False)
    a, _ = params_of(straight)
    b, _ = params_of(run_dir)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigterm_from_outside_exits_143_and_resumes(tmp_path, digits_config):
    """A real process killed with SIGTERM saves a checkpoint and exits 143; --resume finishes the run."""
    env = {**os.environ, "CIFAR_SCRATCH_DATA": str(tmp_path / "data")}
    tree = yaml.safe_load(digits_config.read_text())
    tree["training"].update(epochs=400, batch_size=8)
    digits_config.write_text(yaml.safe_dump(tree))
    command = [sys.executable, "-m", "cifar_scratch", "train", str(digits_config), "--runs-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 60

    def epochs_done() -> int:  # last.npz exists from step 0, so wait for a finished epoch in the history
        return max((len(h.read_text().splitlines()) - 1 for h in (tmp_path / "runs").glob("*/history.csv")), default=0)

    while epochs_done() < 1 and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "resume with: cifar-scratch train --resume" in err and "Traceback" not in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    _, meta = params_of(run_dir)
    assert 1 <= meta["epoch"] < 400
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_scratch",
            "train",
            "--resume",
            str(run_dir),
            "training.epochs=" + str(meta["epoch"] + 1),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == meta["epoch"] + 1


def test_early_stopping_restores_best_weights(tmp_path):
    result = start(
        tmp_path,
        ["optimizer.lr=3.0", "schedule.name=constant", "schedule.warmup_epochs=0"],
        epochs=30,
        early_stopping={"patience": 2},
        monitor="val_loss",
    )
    metrics = result.metrics
    assert metrics["stop_reason"].startswith("early stopping")
    assert metrics["epochs"] == metrics["best_epoch"] + 2
    best, meta = params_of(result.run_dir, "best")
    assert meta["epoch"] == metrics["best_epoch"]
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    best_row = history[metrics["best_epoch"] - 1]
    assert metrics["val_loss"] == pytest.approx(best_row["val_loss"], rel=1e-5)  # final metrics use best weights


def test_nan_loss_fails_the_run_and_metrics_stay_valid_json(tmp_path, monkeypatch):
    from cifar_scratch.nn.losses import CrossEntropy

    real = CrossEntropy.forward
    calls = iter(range(10**6))

    def diverging(self, logits, labels):  # the loss of the 30th step (epoch 2) is NaN
        loss, grad = real(self, logits, labels)
        return (float("nan") if next(calls) == 29 else loss), grad

    monkeypatch.setattr(CrossEntropy, "forward", diverging)
    with pytest.raises(
        TrainingFailed, match="diverged: the training loss became nan at step 30 .epoch 2.; metrics.json reports the best epoch"
    ):
        start(tmp_path, epochs=3)
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["error"].startswith("diverged")
    json.loads((run_dir / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert "NaN" not in (run_dir / "history.jsonl").read_text()
    with pytest.raises(UsageError, match="a diverged run cannot be resumed .* optimizer.lr=0.005"):
        resume_run(run_dir, [], None, progress=False)


def test_weights_that_overflow_in_an_epochs_last_step_end_the_run_and_never_become_best(tmp_path, monkeypatch):
    """The loss of every step is finite, but the last update of epoch 2 leaves an infinite weight: the
    epoch is the divergence, not a candidate for best.npz (its NaN logits would still have an argmax)."""
    from cifar_scratch.training.trainer import Trainer

    real = Trainer._run_epoch

    def overflowing(self):
        if self.state.epoch == 1:  # during epoch 2, after its steps: poison a weight as a runaway update would
            original = self.optimizer.step

            def step(grads, lr):
                original(grads, lr)
                if self.state.batch_in_epoch == self.steps_per_epoch - 1:
                    next(iter(self.model.params.values()))[0, 0] = np.inf

            self.optimizer.step = step
        real(self)

    monkeypatch.setattr(Trainer, "_run_epoch", overflowing)
    with pytest.raises(
        TrainingFailed,
        match="diverged: the weights became NaN or infinite by step .* .epoch 2.; metrics.json reports the best epoch before it .1.",
    ):
        start(tmp_path, epochs=3)
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and metrics["epochs"] == 2 and np.isfinite(metrics["test_accuracy"])
    _, meta = params_of(run_dir, "best")
    assert meta["epoch"] == 1


def test_resume_refuses_other_changes_and_finished_runs(tmp_path):
    run_dir = start(tmp_path, epochs=1).run_dir
    with pytest.raises(ConfigError, match="optimizer.lr: cannot change when resuming"):
        resume_run(run_dir, ["optimizer.lr=0.5"], None, progress=False)
    with pytest.raises(UsageError, match="already finished after 1 epochs"):
        resume_run(run_dir, [], None, progress=False)
    with pytest.raises(UserError, match="not a resumable run folder"):
        resume_run(tmp_path, [], None, progress=False)


def test_run_folder_contents(tmp_path):
    run_dir = start(tmp_path, plots=True, epochs=2).run_dir
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")}
    assert set(RUN_FOLDER_FILES) <= names, set(RUN_FOLDER_FILES) - names
    assert (run_dir / "history.csv").read_text().splitlines()[0] == (
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,grad_norm,epoch_time"
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1", "best_epoch"} <= metrics.keys()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["output"]["runs_dir"] == str((tmp_path / "runs").resolve())  # what ran, not the config's default
    saved["output"]["runs_dir"] = "runs"
    assert build_config(saved) == build_config(digits_tree(plots=True, epochs=2))


class Float32Guard(Callback):
    """Checks after every batch that no float64 crept into parameters, gradients or optimizer state."""

    def on_batch_end(self, trainer, batch, batches, loss, accuracy):
        arrays = {**trainer.model.params, **trainer.model.grads, **trainer.optimizer.state_arrays()}
        leaks = [name for name, a in arrays.items() if a.dtype != np.float32]
        assert not leaks, leaks


class ActivationSpy(Callback):
    def on_train_start(self, trainer):
        self.dtypes = set()
        for layer in trainer.model.layers:
            forward = layer.forward

            def spy(x, forward=forward):
                out = forward(x)
                self.dtypes.update({x.dtype, out.dtype})
                return out

            layer.forward = spy


@pytest.mark.parametrize(
    "optimizer",
    [
        "{name: sgd, momentum: 0.9, nesterov: true, l2: 0.01}",
        # Adam and AdamW share one kernel; one of them in the fast loop is enough (each run costs ~1.5 s)
        "{name: adam, l2: 0.001}",
        pytest.param("{name: adamw}", marks=pytest.mark.slow),
        "{name: muon, orthogonalize: '*.weight', normalize_weights: true, weight_decay: 0.01}",
    ],
)
def test_engine_is_float32_end_to_end(tmp_path, optimizer):
    spy = ActivationSpy()
    config = build_config(digits_tree(epochs=1), [f"optimizer={optimizer}"])
    start_run(config, tmp_path / "data", [Float32Guard(), spy], progress=False, runs_dir=tmp_path / "runs")
    assert spy.dtypes == {np.dtype(np.float32)}


CNN_LAYERS = (
    "model.layers=[{type: conv2d, filters: 6}, relu, batchnorm, maxpool2d, {type: conv2d, filters: 8, stride: 2},"
    " gelu, {type: avgpool2d, size: 1}, global_maxpool, {type: dense}]"
)


@pytest.mark.slow
def test_cnn_training_is_float32_and_buffers_are_checkpointed(tmp_path):
    """Every CNN layer type in a real training run: float32 throughout; BN running stats saved and restored."""
    spy = ActivationSpy()
    config = build_config(digits_tree(epochs=4), [CNN_LAYERS, "optimizer={name: adam, lr: 0.01}"])
    run = start_run(config, tmp_path / "data", [Float32Guard(), spy], progress=False, runs_dir=tmp_path / "runs")
    assert spy.dtypes == {np.dtype(np.float32)}
    arrays, _ = params_of(run.run_dir, "best")
    assert arrays["buffer/batchnorm1.running_var"].dtype == np.float32
    assert not np.allclose(arrays["buffer/batchnorm1.running_mean"], 0), "running statistics were updated and saved"
    assert run.metrics["test_accuracy"] > 0.5
    summary = (run.run_dir / "summary.txt").read_text()
    assert "Non-trainable params: 12" in summary and "conv2d1 (Conv2D)" in summary


def test_one_generator_per_run_no_global_rng(tmp_path):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    config = build_config(digits_tree(epochs=1))
    data = load_dataset(config.data, tmp_path, progress=False)
    trainer = build_trainer(config, data, tmp_path, [])
    trainer.fit()
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    from cifar_scratch.builders import build_model
    from cifar_scratch.data import Normalizer
    from cifar_scratch.errors import CheckpointError
    from cifar_scratch.training.checkpoint import load_weights

    run_dir = start(tmp_path, epochs=1).run_dir
    other = build_config(digits_tree(), ["model.layers.1.units=5"])
    model = build_model(other.model, (8, 8, 1), 10, np.random.default_rng(0))
    normalizer = Normalizer(np.zeros(1, np.float32), np.ones(1, np.float32))
    with pytest.raises(CheckpointError, match="does not fit the model in config.yaml"):
        load_weights(model, normalizer, run_dir / "checkpoints" / "best.npz")


@pytest.mark.slow
def test_online_augmentation_changes_training_and_offline_copies_grow_the_split(tmp_path):
    plain, _ = params_of(start(tmp_path, epochs=1).run_dir)
    augmented, _ = params_of(start(tmp_path, AUGMENT, epochs=1).run_dir)
    assert not np.array_equal(plain["param/dense1.weight"], augmented["param/dense1.weight"])
    copies = ["data.augment={flip: true, translate: 1, copies: 2}", "schedule={name: constant}"]
    run = start(tmp_path, copies, epochs=2)
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["sizes"]["train"] == 3 * 1149  # the 1,149 digits training images and two augmented copies
    resumed_dir = start(tmp_path, copies, epochs=1).run_dir
    resume_run(resumed_dir, ["training.epochs=2"], tmp_path / "data", progress=False)
    a, _ = params_of(run.run_dir)
    b, _ = params_of(resumed_dir)
    assert all(np.array_equal(a[k], b[k]) for k in a), "offline copies are rebuilt identically on resume"


@pytest.mark.slow
def test_learning_rates_actually_used_survive_an_extended_resume(tmp_path):
    """lr.png draws the rates that ran: a cosine run extended on resume keeps its first epochs' rates."""
    run_dir = start(tmp_path, ["schedule={name: cosine}"], epochs=2).run_dir
    first, _ = load_checkpoint(run_dir / "checkpoints" / "last.npz")
    resume_run(run_dir, ["training.epochs=4"], tmp_path / "data", progress=False)
    arrays, meta = load_checkpoint(run_dir / "checkpoints" / "last.npz")
    used = arrays["history/lr"]
    assert len(used) == meta["step"] and np.array_equal(used[: len(first["history/lr"])], first["history/lr"])
    assert used[len(first["history/lr"]) - 1] < 0.01 * used[0], "the first run's cosine reached its end"


def test_log_heartbeat_shows_running_means_throughput_and_eta(tmp_path):
    import io

    from cifar_scratch.cli.console import ConsoleReport

    stream = io.StringIO()
    start_run(
        build_config(digits_tree(epochs=1)),
        tmp_path / "data",
        [ConsoleReport(stream, heartbeat_s=0.0)],
        progress=False,
        runs_dir=tmp_path / "runs",
    )
    beats = [line for line in stream.getvalue().splitlines() if "img/s" in line]
    assert beats and all("run ETA" in line and " loss " in line and " lr " in line for line in beats)


@pytest.mark.slow
def test_resume_removes_temporaries_of_a_killed_write(tmp_path):
    run_dir = start(tmp_path, epochs=1).run_dir
    stale = run_dir / "checkpoints" / ".last.npz.abc1_3yz.cifar-scratch.tmp"
    stale.write_bytes(b"half a checkpoint")
    (run_dir / "plots" / ".loss.png.x8k2mm0q.cifar-scratch.tmp").write_bytes(b"half a png")
    (run_dir / "eval" / ".test.k3x9q_2a.cifar-scratch.tmp").mkdir(parents=True)  # an evaluate killed mid-write
    (run_dir / "eval" / ".test.k3x9q_2a.cifar-scratch.tmp" / "metrics.json").write_text("{}")
    users = [
        run_dir / "notes" / ".paper-figures.tmp",
        run_dir / ".draft.tmp",
        run_dir / "notes" / ".x.abcdefgh.cifar-scratch.tmp",
    ]
    for path in users:
        path.parent.mkdir(exist_ok=True)
        path.write_text("the user's")
    resume_run(run_dir, ["training.epochs=2"], None, progress=False)
    assert [p for p in run_dir.rglob("*.tmp") if p not in users] == [], "this program's temporaries are gone"
    assert all(p.read_text() == "the user's" for p in users), "a user's files are never deleted"


def test_training_loss_is_reported_as_plain_cross_entropy_like_validation(tmp_path):
    """With label smoothing, history's train_loss is the same quantity as val_loss (no smoothing term)."""
    from cifar_scratch.nn.reference import softmax_cross_entropy
    from cifar_scratch.training.evaluation import evaluate_split

    config = build_config(
        digits_tree(epochs=1),
        [
            "model.layers=[flatten, {type: dense}]",
            "optimizer={name: sgd, lr: 1.0e-12}",
            "schedule={name: constant}",
            "training.label_smoothing=0.3",
        ],
    )
    data = load_dataset(config.data, tmp_path, progress=False)
    trainer = build_trainer(config, data, tmp_path, [])
    plain, _, logits = evaluate_split(trainer.model, trainer.normalizer, data.train)  # the weights barely move (lr 1e-12)
    trainer.fit()
    assert trainer.state.history[0]["train_loss"] == pytest.approx(plain, rel=1e-5)
    smoothed, _ = softmax_cross_entropy(logits, data.train.labels, 0.3)
    assert smoothed != pytest.approx(plain, rel=1e-3), "the test must tell the two quantities apart"


RESIDUAL_NET = (
    "model.layers=[{type: conv2d, filters: 4}, batchnorm, relu,"
    " {type: residual, name: block, layers: [{type: conv2d, filters: 6, stride: 2}, batchnorm, relu, {type: conv2d, filters: 6}]},"
    " relu, {type: residual, layers: [{type: conv2d, filters: 6}, batchnorm]}, global_avgpool, {type: dense}]"
)
GROUPS = "optimizer={name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.001, groups: [{params: '*batchnorm*.bias', lr_scale: 8, weight_decay: 0}]}"


@pytest.mark.slow
def test_resume_is_bit_identical_for_a_residual_net_with_parameter_groups(tmp_path):
    overrides = [RESIDUAL_NET, GROUPS, "schedule={name: step, step_epochs: 1, gamma: 0.5}", "data.augment={flip: true}"]
    straight = start(tmp_path, overrides, epochs=4).run_dir
    first = start(tmp_path, overrides, epochs=2).run_dir
    resume_run(first, ["training.epochs=4"], tmp_path / "data", progress=False)
    a, meta_a = params_of(straight)
    b, meta_b = params_of(first)
    assert "param/block.shortcut.weight" in a and "optim/velocity/block.batchnorm1.bias" in a
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert meta_a["rng"] == meta_b["rng"]


@pytest.mark.slow
def test_alternating_flips_mirror_each_image_in_every_other_epoch(tmp_path, monkeypatch):
    from cifar_scratch.training import trainer as trainer_module

    seen = {}  # epoch -> {image index: flipped}
    real = trainer_module.alternate_flips

    def record(parity, indices, epoch):
        flips = real(parity, indices, epoch)
        seen.setdefault(epoch, {}).update(zip(indices.tolist(), flips.tolist()))
        return flips

    monkeypatch.setattr(trainer_module, "alternate_flips", record)
    start(tmp_path, ["data.augment={flip: alternate}"], epochs=3)
    assert seen[0].keys() == seen[1].keys() == seen[2].keys()
    assert all(seen[0][i] != seen[1][i] and seen[0][i] == seen[2][i] for i in seen[0])
    assert 0.4 < np.mean(list(seen[0].values())) < 0.6, "a random half in the first epoch"


@pytest.mark.slow
def test_tta_metrics_are_reported_beside_the_plain_ones(tmp_path):
    from cifar_scratch.training.evaluation import evaluate_split

    result = start(tmp_path, ["training.tta=flip"], epochs=1)
    m = result.metrics
    assert m["tta"] == "flip" and {"test_accuracy", "test_accuracy_tta", "val_accuracy_tta"} <= m.keys()
    config = build_config(digits_tree(epochs=1))
    data = load_dataset(config.data, tmp_path, progress=False)
    trainer = build_trainer(config, data, tmp_path, [])
    _, _, plain = evaluate_split(trainer.model, trainer.normalizer, data.test)
    _, _, mirrored = evaluate_split(
        trainer.model, trainer.normalizer, dataclass_replace(data.test, images=data.test.images[:, :, ::-1])
    )
    _, _, averaged = evaluate_split(trainer.model, trainer.normalizer, data.test, tta="flip")
    assert np.allclose(averaged, (plain + mirrored) / 2, atol=1e-6)


@pytest.mark.slow
def test_finishing_can_skip_the_training_split(tmp_path):
    measured = start(tmp_path / "a", epochs=1).metrics
    skipped = start(tmp_path / "b", ["training.evaluate_train=false"], epochs=1).metrics
    assert "train_accuracy" in measured and "train_accuracy" not in skipped
    assert skipped["test_accuracy"] == measured["test_accuracy"]


def test_ema_weights_are_what_is_evaluated_and_kept_as_best(tmp_path):
    run = start(tmp_path, ["training.ema={decay: 0.95}"], epochs=2)
    arrays, _ = params_of(run.run_dir, "best")
    averaged = {k.removeprefix("ema/"): v for k, v in arrays.items() if k.startswith("ema/")}
    assert averaged and all(np.array_equal(arrays[f"param/{k}"], v) for k, v in averaged.items() if f"param/{k}" in arrays)
    last, _ = params_of(run.run_dir, "last")
    assert not np.array_equal(last["param/dense1.weight"], last["ema/dense1.weight"]), "training weights are saved as they are"


WHITEN = [
    "model.layers=[{type: conv2d, filters: 8, kernel: 2, padding: valid, init: whiten, trainable: [bias]}, gelu,"
    " {type: conv2d, filters: 6}, relu, global_maxpool, {type: dense}]",
    "optimizer={name: sgd, lr: 0.05, momentum: 0.9, groups: [{params: conv2d1.bias, epochs: 1, lr_scale: 4}]}",
    "schedule={name: constant}",
]


@pytest.mark.slow
def test_whitened_first_layer_stays_fixed_and_its_bias_trains_only_for_its_epochs(tmp_path):
    one = start(tmp_path, WHITEN, epochs=1).run_dir
    three = start(tmp_path, WHITEN, epochs=3).run_dir
    a, _ = params_of(one)
    b, _ = params_of(three)
    assert np.array_equal(a["param/conv2d1.weight"], b["param/conv2d1.weight"]), "frozen and reproducible"
    assert np.array_equal(a["param/conv2d1.bias"], b["param/conv2d1.bias"]) and a["param/conv2d1.bias"].any()
    assert not np.array_equal(a["param/conv2d2.weight"], b["param/conv2d2.weight"])
    assert np.abs(a["param/conv2d1.weight"]).max() > 1.0, "not the he_normal placeholder"
    with pytest.raises(ConfigError, match="conv2d2: init: whiten is for the model's first layer"):
        start(
            tmp_path,
            [
                "model.layers=[{type: conv2d, filters: 4}, {type: conv2d, filters: 8, kernel: 2, init: whiten}, flatten, {type: dense}]"
            ],
        )


@pytest.mark.slow
def test_drop_last_skips_the_smaller_batch_and_needs_one_full_batch(tmp_path):
    kept = start(tmp_path / "a", epochs=2)
    dropped = start(tmp_path / "b", epochs=2, drop_last=True)
    _, kept_meta = params_of(kept.run_dir)
    _, dropped_meta = params_of(dropped.run_dir)
    assert kept_meta["step"] == 2 * 18 and dropped_meta["step"] == 2 * 17, "1,000-odd training images: 17 full batches of 64"
    with pytest.raises(
        ConfigError, match=r"^training\.drop_last: the training split has \d+ images, fewer than one batch of 5000"
    ):
        start(tmp_path / "c", epochs=1, drop_last=True, batch_size=5000)
