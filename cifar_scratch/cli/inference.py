"""``cifar-scratch evaluate`` and ``predict``: a trained run's weights on a split, or on image files."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from cifar_scratch import runtime
from cifar_scratch.cli import console
from cifar_scratch.cli.app import command
from cifar_scratch.cli.options import DATA_DIR_OPTION, ENGINE_OPTION, QUIET_OPTION, RUN_ARGUMENT, THREADS_OPTION, Engine
from cifar_scratch.config import TTA_MODES


class Split(str, Enum):
    test = "test"
    val = "val"


TTA = Enum("TTA", {mode: mode for mode in TTA_MODES}, type=str)


@command
def evaluate(
    target: Path = RUN_ARGUMENT,
    split: Split = typer.Option(Split.test, "--split", help="Which split to measure."),
    tta: Optional[TTA] = typer.Option(
        None, "--tta", show_default=False, help="Test-time augmentation. [default: the run's training.tta]"
    ),
    data_dir: Optional[Path] = DATA_DIR_OPTION,
    quiet: bool = QUIET_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix and image grids; prints the output folder."""
    from cifar_scratch.inference.evaluate import evaluate_checkpoint

    notes: list[str] = []
    with runtime.compute(threads):
        out_dir, metrics = evaluate_checkpoint(
            target, split.value, data_dir, progress=not quiet, notes=notes, tta=tta and tta.value, engine=engine and engine.value
        )
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if not quiet:
        typer.echo(console.evaluation(split.value, metrics))
    typer.echo(str(out_dir))


@command
def predict(
    target: Path = RUN_ARGUMENT,
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...; any size: resized and centre-cropped)."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="Classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    threads: Optional[int] = THREADS_OPTION,
    engine: Optional[Engine] = ENGINE_OPTION,
) -> None:
    """Top-k classes with their probabilities for image files, with a run's weights and normalisation."""
    from cifar_scratch.inference.predict import predict_images

    notes: list[str] = []
    with runtime.compute(threads):
        checkpoint, results = predict_images(target, images, top_k, engine and engine.value, notes)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "results": results}, indent=2))
    elif results:
        typer.echo(console.predictions(results))


class ExportFormat(str, Enum):
    onnx = "onnx"
    safetensors = "safetensors"


@command
def export(
    target: Path = RUN_ARGUMENT,
    fmt: ExportFormat = typer.Option(
        ExportFormat.onnx,
        "--format",
        help="onnx: the network with its normalisation and softmax; safetensors: the weights under its PyTorch twin's names.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", show_default=False, help="Where to write. [default: RUN/export/model.onnx or .safetensors]"
    ),
) -> None:
    """The trained network as a file other runtimes load: float32 pixels 0-255 (NHWC) in, class probabilities out."""
    from cifar_scratch.inference.export import export_run

    notes: list[str] = []
    path = export_run(target, out, notes, fmt.value)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(str(path))
