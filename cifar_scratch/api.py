"""The Python API: what the command line does, from a notebook or a script.

    import cifar_scratch as cs

    run = cs.train("configs/digits.yaml", "training.epochs=3", runs_dir="runs")
    run.path, run.history[-1], run.metrics["test_accuracy"]
    probabilities = run.predict(images)             # uint8 (N, H, W, C) -> (N, classes)
    run.evaluate("val")                             # as `cifar-scratch evaluate RUN --split val`
    run = cs.load_run("runs/20261206-101500_digits")

    run = cs.train("my.yaml", data=(x_train, y_train, x_test, y_test))   # arrays a notebook holds
    model = cs.build_model("configs/digits.yaml")   # forward / backward by hand
    found = cs.lr_find("configs/mlp3class.yaml")     # found.suggestion, found.folder / "lr_find.png"
    cs.report("runs/20261206-101500_digits")        # -> the HTML page's path

Every function takes a config as a YAML path, a mapping (as the YAML would be) or a
:class:`~cifar_scratch.config.RunConfig`, and raises the command line's errors
(:class:`~cifar_scratch.errors.UserError` subclasses, one line each).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cifar_scratch import runtime
from cifar_scratch.config import RunConfig, build_config, load_config
from cifar_scratch.data import arrays as array_data
from cifar_scratch.data import resolve_data_dir
from cifar_scratch.errors import CheckpointError, UsageError
from cifar_scratch.nn import kernels
from cifar_scratch.nn.model import Sequential
from cifar_scratch.nn.reference import softmax
from cifar_scratch.runs.folder import RunFolder
from cifar_scratch.runs.index import read_json
from cifar_scratch.training.trainer import Callback

__all__ = ["Callback", "Run", "build_model", "config_of", "load_run", "lr_find", "report", "train"]

ConfigLike = str | Path | dict | RunConfig


def config_of(config: ConfigLike, overrides: Sequence[str] = ()) -> RunConfig:
    """A validated config from a YAML path, a mapping or a RunConfig, with ``dotted.key=value`` overrides."""
    if isinstance(config, RunConfig):
        return build_config(config.model_dump(mode="json"), list(overrides)) if overrides else config
    if isinstance(config, dict):
        return build_config(json.loads(json.dumps(config)), list(overrides))  # a copy: overrides edit the tree
    return load_config(Path(config), list(overrides))


def train(
    config: ConfigLike,
    *overrides: str,
    data: tuple | dict | None = None,
    runs_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    threads: int | None = None,
    progress: bool = False,
) -> Run:
    """Train a run (as ``cifar-scratch train``) and return it.

    ``data``: images already in memory instead of the config's dataset, as ``(x_train, y_train)``,
    ``(x_train, y_train, x_test, y_test)`` or a dict of the keys of :mod:`cifar_scratch.data.arrays`
    (``class_names`` too): uint8 (N, H, W, C) or (N, H, W) pixels, integer labels. They are stored once
    under ``<data dir>/arrays/`` (named by their SHA-256), so the run resumes and evaluates like any other.
    ``callbacks``: :class:`~cifar_scratch.training.trainer.Callback` objects; one may end the run after
    the current epoch with ``trainer.stop("why")``.
    """
    from cifar_scratch.training.run import start_run

    data_dir = resolve_data_dir(data_dir)
    overrides = list(overrides)
    if data is not None:
        stored = array_data.save(data_dir / "arrays", _arrays(data))
        overrides += ["data.dataset=npz", f"data.source={json.dumps(str(stored))}"]
    resolved = config_of(config, overrides)
    with runtime.compute(threads):
        result = start_run(resolved, data_dir, list(callbacks), progress=progress, runs_dir=runs_dir, overrides=overrides)
    return Run(result.run_dir)


def lr_find(
    config: ConfigLike,
    *overrides: str,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    diverge: float = 4.0,
    threads: int | None = None,
    progress: bool = False,
    on_step=None,
):
    """The learning-rate range test (as ``cifar-scratch lr-find``) -> its
    :class:`~cifar_scratch.training.lr_find.LRFindResult` (``suggestion``, ``lrs``, ``losses``, ``folder``).
    ``out``: its folder (default ``<runs_dir>/lr-find/<time>_<name>``); ``on_step(step, lr, loss)`` follows it."""
    import time

    from cifar_scratch.training.lr_find import lr_find as find

    resolved = config_of(config, overrides)
    if not 0 < start_lr < end_lr:
        raise UsageError(f"start_lr must be below end_lr, both above 0 (got {start_lr:g}, {end_lr:g})")
    folder = (
        Path(out)
        if out is not None
        else (Path(resolved.output.runs_dir) / "lr-find" / f"{time.strftime('%Y%m%d-%H%M%S')}_{resolved.name}")
    )
    with runtime.compute(threads):
        return find(
            resolved,
            resolve_data_dir(data_dir),
            folder,
            start_lr,
            end_lr,
            steps,
            diverge,
            progress,
            on_step or (lambda step, lr, loss: None),
        )


def report(folder: str | Path, out: str | Path | None = None) -> Path:
    """One self-contained HTML page of the run or sweep in ``folder`` (as ``cifar-scratch report``) -> its path."""
    from cifar_scratch.runs.report import write_report

    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: no such folder")
    return write_report(Path(folder), None if out is None else Path(out))


def _arrays(data: tuple | dict) -> dict:
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        return dict(zip(("x_train", "y_train", "x_test", "y_test"), data))
    raise UsageError("data: give (x_train, y_train), (x_train, y_train, x_test, y_test) or a dict of those arrays")


def load_run(path: str | Path) -> Run:
    """An existing run folder."""
    return Run(path)


def build_model(config: ConfigLike, input_shape: tuple[int, ...] | None = None, seed: int = 0) -> Sequential:
    """The config's model, built with fresh weights for per-sample ``input_shape`` (default: the dataset's),
    to call ``forward``/``backward`` on by hand."""
    from cifar_scratch.builders import build_model as build
    from cifar_scratch.builders import model_input_shape, num_classes

    resolved = config_of(config)
    shape = tuple(input_shape) if input_shape is not None else model_input_shape(resolved)
    return build(resolved.model, shape, num_classes(resolved), np.random.default_rng(seed), resolved.training.batch_size)


class Run:
    """A run folder, read through the same code as ``evaluate`` and ``predict``."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self.folder = RunFolder(self.path)
        if not self.folder.looks_like_a_run():
            raise CheckpointError(f"{path}: not a run folder (no run.json or config.yaml)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config(self) -> RunConfig:
        """The resolved config the run trained with (its config.yaml; its user code checked first)."""
        from cifar_scratch.inference.evaluate import run_config

        return run_config(self.path)

    @property
    def history(self) -> list[dict]:
        """One dict per finished epoch: epoch, train/val loss and accuracy, lr, epoch_time."""
        return self.folder.read_history()

    @property
    def metrics(self) -> dict:
        """The final metrics (metrics.json), {} before the run has finished."""
        return read_json(self.folder.metrics)

    @property
    def info(self) -> dict:
        """run.json: command, versions, data, status, resumes."""
        return self.folder.read_info()

    def load_model(self, checkpoint: str = "best") -> tuple[Sequential, Any]:
        """(model in eval mode, normaliser) with the weights of ``checkpoint`` (best or last)."""
        return self._restore(checkpoint)[1:3]

    def _restore(self, checkpoint: str):
        """:func:`cifar_scratch.inference.evaluate.restore_run` of ``checkpoint`` (best or last)."""
        from cifar_scratch.inference.evaluate import restore_run

        path = {"best": self.folder.best, "last": self.folder.last}.get(checkpoint)
        if path is None:
            raise UsageError(f"checkpoint: best or last (got {checkpoint!r})")
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint")
        return restore_run(self.path, path)

    def predict(self, images: np.ndarray, checkpoint: str = "best", batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, classes) float32 of uint8 ``images`` (N, H, W, C), or (N, H, W) for one
        channel, in the run's image size, with its normalisation and kernels."""
        config, model, normalizer, _ = self._restore(checkpoint)
        images = np.asarray(images)
        if images.ndim == len(model.input_shape) and model.input_shape[-1] == 1:  # (N, H, W): one channel
            images = images[..., None]
        if images.dtype != np.uint8 or tuple(images.shape[1:]) != tuple(model.input_shape):
            raise UsageError(
                f"images: uint8 of shape (N, {', '.join(map(str, model.input_shape))}) as the run trained on "
                f"(got {images.dtype} {images.shape})"
            )
        with kernels.using(config.training.engine, config.training.conv_algorithm):
            logits = [model.forward(normalizer(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return softmax(np.concatenate(logits)) if logits else np.zeros((0, model.output_shape[0]), np.float32)

    def evaluate(self, split: str = "test", tta: str | None = None, data_dir: str | Path | None = None) -> dict:
        """As ``cifar-scratch evaluate``: metrics of ``split`` (test or val), written under ``eval/<split>/``."""
        from cifar_scratch.inference.evaluate import evaluate_checkpoint

        if split not in ("test", "val"):
            raise UsageError(f"split: test or val (got {split!r})")
        return evaluate_checkpoint(self.path, split, Path(data_dir) if data_dir else None, progress=False, tta=tta)[1]

    def resume(self, *overrides: str, callbacks: Sequence[Callback] = (), threads: int | None = None) -> Run:
        """Go on with an interrupted run (or train longer: ``"training.epochs=30"``), bit-exactly."""
        from cifar_scratch.training.run import resume_run

        with runtime.compute(threads):
            resume_run(self.path, list(overrides), None, list(callbacks), progress=False)
        return self
