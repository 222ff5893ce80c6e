"""Pydantic's validation errors rewritten as the one-line messages a user reads.

``dotted.path: message (got X)``: union tags removed from the path, unknown keys answered with the
closest known one, a key of another optimizer or schedule explained.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

from cifar_scratch.config.schema import RunConfig


def format_error(err: dict, tree: dict, root: type[BaseModel] | None = None) -> str:
    """One pydantic error -> ``dotted.path: message (got X)`` with union tags removed; ``root``: the
    schema validated (default :class:`~cifar_scratch.config.schema.RunConfig`)."""
    path, owner = _clean_location(err["loc"], root or RunConfig)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        # Cross-field validators name the field, relative to their model: "source: required ...".
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head:
            path, msg = path + head.split("."), rest
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
        if owner is not None:
            close = difflib.get_close_matches(str(path[-1]), list(owner.model_fields), n=1, cutoff=0.6)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
            else:
                allowed = sorted(owner.model_fields, key=lambda name: name not in ("type", "name"))  # kind first
                msg += f"; allowed: {', '.join(allowed)}"
            msg += _switch_hint(owner, str(path[-1]), path[:-1])
        return f"{short_text('.'.join(path))}: {msg}"
    if kind == "union_tag_invalid":
        msg = f"unknown {err['ctx']['discriminator'].strip(chr(39))} {err['ctx']['tag']!r}; choose from {err['ctx']['expected_tags']}"
        return f"{'.'.join(path)}: {msg}"
    if kind == "union_tag_not_found":
        keys = short_text(", ".join(map(str, got))) if isinstance(got := err.get("input"), dict) else short(got)
        return f"{'.'.join(path)}: needs a {err['ctx']['discriminator']} key (got keys: {keys}; in YAML flow style write 'key: value' with a space)"
    if kind == "missing":
        return f"{'.'.join(path)}: required"
    got = err.get("input")
    # A whole section as input says nothing the path does not; a scalar is worth quoting.
    suffix = "" if isinstance(got, (dict, list)) and kind == "value_error" else f" (got {short(got)})"
    if "(got " in msg:  # the validator already quoted the offending value
        suffix = ""
    return f"{short_text('.'.join(path)) or '<config>'}: {short_text(msg, 300)}{suffix}"


def short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: an error line never echoes a huge (or alias-expanded) value."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else f"a list of {len(value)} items"
    return short_text(repr(value), limit)


def short_text(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text):,} chars)"


def _switch_hint(owner: type[BaseModel], key: str, section: list[str]) -> str:
    """After ``optimizer.name=adam`` on an SGD config, ``momentum`` is unknown: say whose key it is,
    and how to replace the whole section instead of one key of it."""
    if not section or section[0] not in ("optimizer", "schedule") or len(section) != 1:
        return ""
    kind = _literal_tags(owner)
    members = _union_members(RunConfig.model_fields[section[0]].annotation)
    owners = [tag for m in members if _is_model(m) and key in m.model_fields for tag in _literal_tags(m)]
    if not owners or not kind:
        return ""
    example = f"{{name: {kind[0]}, lr: ...}}" if section[0] == "optimizer" else f"{{name: {kind[0]}}}"
    return f"; {key} belongs to {' / '.join(owners)}, not {kind[0]}: to switch, replace the whole section, e.g. {section[0]}={example}"


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation)]
    return [annotation]


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _clean_location(loc: tuple, root: type[BaseModel]) -> tuple[list[str], type[BaseModel] | None]:
    """Walk the schema along ``loc``: keep field names and list indices, drop union tags.

    Returns the dotted parts and the model that owns the last part (for did-you-mean).
    """
    parts: list[str] = []
    owner: type[BaseModel] | None = None
    current: Any = root
    for item in loc:
        if typing.get_origin(_unwrap(current)) is dict:  # a key the user chose (a mapping's key)
            parts.append(str(item))
            current = typing.get_args(_unwrap(current))[1]
            continue
        if isinstance(item, int):
            parts.append(str(item))
            args = typing.get_args(_unwrap(current))
            current = args[0] if args else None
            continue
        models = [m for m in _union_members(current) if _is_model(m)]
        tagged = {tag: m for m in models for tag in _literal_tags(m)}
        if len(models) > 1 and item in tagged:
            current = tagged[item]  # a discriminated-union tag, not a key the user wrote
            continue
        model = models[0] if len(models) == 1 else None
        if model is not None and item in model.model_fields:
            owner = model
            parts.append(item)
            current = model.model_fields[item].annotation
            continue
        if model is not None:  # an unknown key under this model
            owner = model
            parts.append(str(item))
            current = None
            continue
        # A tag of a plain union such as `str | int`: not part of the user's path.
    return parts, owner


def _literal_tags(model: type[BaseModel]) -> list[str]:
    for field in ("type", "name"):
        info = model.model_fields.get(field)
        if info is not None and typing.get_origin(info.annotation) is Literal:
            return list(typing.get_args(info.annotation))
    return []
