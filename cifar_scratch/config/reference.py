"""The config reference, written from the schema: every key, its type and range, its default, its description.

    python -m cifar_scratch.config.reference docs/guide.md     # rewrite the reference in that file
    python -m cifar_scratch.config.reference                   # print it

The reference lies between two markers in the file; a test fails when it differs from what the schema
says now (tests/config/test_reference.py), so the documentation cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cifar_scratch.config.schema import (
    AugmentConfig,
    DataConfig,
    EarlyStoppingConfig,
    EMAConfig,
    OutputConfig,
    RunConfig,
    TrainingConfig,
)
from cifar_scratch.kinds.datasets import DATASET_KINDS
from cifar_scratch.kinds.layers import LAYER_KINDS
from cifar_scratch.kinds.losses import LOSS_KINDS
from cifar_scratch.kinds.optimizers import OPTIMIZER_KINDS, ParamGroup

START = "<!-- config reference: written by `python -m cifar_scratch.config.reference docs/guide.md`; do not edit by hand -->"
END = "<!-- end of the config reference -->"


def render() -> str:
    """The whole reference as Markdown."""
    parts = [
        "Every key, from the schema (`cifar_scratch/config/schema.py` and the records in `cifar_scratch/kinds/`). A key left out "
        "takes its default; the run's `config.yaml` writes every default out.",
        _section("top level", RunConfig, skip=("data", "model", "optimizer", "loss", "schedule", "training", "output")),
        _section("data", DataConfig, skip=("augment",)),
        _section("data.augment", AugmentConfig),
        "### model\n\n`model.layers`: a list of layers, each `{type: KIND, ...options}` (a bare `relu` means "
        "`{type: relu}`). Every kind also takes `trainable` (false: frozen; on a layer, a list of its parameters "
        "that train).",
        *(
            _section(f"model.layers: `type: {name}`", kind.options, skip=("type", "trainable"), level=4)
            for name, kind in LAYER_KINDS.items()
        ),
        "### optimizer\n\n`optimizer.name` picks the kind; each takes the keys of its table.",
        *(
            _section(f"optimizer: `name: {name}`", kind.options, skip=("name",), level=4)
            for name, kind in OPTIMIZER_KINDS.items()
        ),
        _section("optimizer.groups: each entry", ParamGroup, level=4),
        "### loss\n\n`loss.name` picks the training loss: "
        + ", ".join(f"`{name}` ({_cell(kind.options.__doc__ or '')})" for name, kind in LOSS_KINDS.items())
        + ", or a class of your own, `file.py:Class` (its options are its constructor's). The history reports "
        "cross-entropy whichever loss trains, so runs compare.",
        "### schedule\n\n`schedule.name` picks the learning-rate schedule (`optimizer.lr` is its peak).",
        *(
            _section(f"schedule: `name: {_tag(model)}`", model, skip=("name",), level=4)
            for model in _union_models(RunConfig.model_fields["schedule"].annotation)
        ),
        _section("training", TrainingConfig, skip=("early_stopping", "ema")),
        _section("training.early_stopping (null: off)", EarlyStoppingConfig, level=4),
        _section("training.ema (null: off)", EMAConfig, level=4),
        _section("output", OutputConfig),
    ]
    return "\n\n".join(parts) + "\n"


def fields(model: type[BaseModel], skip: tuple[str, ...] = ()):
    """(name, field) of ``model`` that the reference lists."""
    return [(name, field) for name, field in model.model_fields.items() if name not in skip]


def _section(title: str, model: type[BaseModel], skip: tuple[str, ...] = (), level: int = 3) -> str:
    rows = [
        f"| `{name}` | {_type(field)} | {_default(field)} | {_cell(field.description or '')} |"
        for name, field in fields(model, skip)
    ]
    head = f"{'#' * level} {title}"
    if not rows:
        return f"{head}\n\nNo options."
    return "\n".join([head, "", "| key | type | default | what |", "|---|---|---|---|", *rows])


def _tag(model: type[BaseModel]) -> str:
    return typing.get_args(model.model_fields["name"].annotation)[0]


def _union_models(annotation) -> list[type[BaseModel]]:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its defaults)"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _type(field: FieldInfo) -> str:
    if field.json_schema_extra and "choices" in field.json_schema_extra:  # names from a registry (data.dataset)
        return _cell(" | ".join(f"`{name}`" for name in _CHOICES[field.json_schema_extra["choices"]]()))
    return _cell(_annotation(field.annotation, field.metadata))


_CHOICES = {"datasets": lambda: list(DATASET_KINDS)}


def _annotation(annotation, metadata=()) -> str:
    """A readable type: `int > 0`, `float in [0, 1)`, `'same' | 'valid' or int ≥ 0`, `list of str`."""
    metadata = list(metadata)
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += extra
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        text = " or ".join(_annotation(a) for a in members)
        return text + (" or null" if len(members) < len(typing.get_args(annotation)) else "")
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if origin is tuple and len(args) > 1:
            return "[" + ", ".join(_annotation(a) for a in args) + "]"
        return f"list of {_annotation(args[0]) if args else 'values'}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (its table)"
    name = {int: "int", float: "float", bool: "bool", str: "str"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )
    if name == "Any":
        name = "value"
    return name + _bounds(metadata)


def _bounds(metadata) -> str:
    low = high = None
    for item in metadata:
        inner = getattr(item, "metadata", None) or [item]  # a FieldInfo carries its constraints as metadata
        for constraint in inner:  # pydantic's constraints (annotated-types' Gt, Ge, Lt, Le) by their attribute
            for attribute, bound in (("gt", "low"), ("ge", "low"), ("lt", "high"), ("le", "high")):
                value = getattr(constraint, attribute, None)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if bound == "low":
                        low = ("(" if attribute == "gt" else "[", value)
                    else:
                        high = (value, ")" if attribute == "lt" else "]")
    low, high = (_number(bound) for bound in (low, high))
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" {'>' if low[0] == '(' else '≥'} {low[1:]}"
    if high:
        return f" {'<' if high[-1] == ')' else '≤'} {high[:-1]}"
    return ""


def _number(bound) -> str | None:
    """('[', 0) -> '[0'; (4294967294, ']') -> '4,294,967,294]'."""
    if bound is None:
        return None
    value = next(v for v in bound if not isinstance(v, str))
    text = f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
    return "".join(text if not isinstance(v, str) else v for v in bound)


def rewrite(path: Path) -> bool:
    """Put the current reference between the markers in ``path``; -> whether the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(START) + len(START), text.index(END)
    updated = text[:start] + "\n\n" + render() + "\n" + text[end:]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def main() -> None:
    if len(sys.argv) > 1:
        changed = rewrite(Path(sys.argv[1]))
        print(f"{sys.argv[1]}: {'rewritten' if changed else 'already current'}")
    else:
        print(render(), end="")


if __name__ == "__main__":
    main()
