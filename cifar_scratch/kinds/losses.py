"""Loss kinds: one record each, the one place a kind of loss is declared.

A record (:class:`LossKind`) says what a config's ``loss: {name: NAME, ...}`` means: ``options`` (a
:class:`~cifar_scratch.options.Section` whose ``name`` literal is the kind's name) and ``build(options,
label_smoothing) -> Loss``. The built-in kind is softmax cross-entropy; a user's loss named by file
or module (``loss: {name: losses/focal.py:Focal, gamma: 2.0}``) joins through :mod:`cifar_scratch.kinds.user`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import Field

from cifar_scratch.nn.losses import CrossEntropy, Loss
from cifar_scratch.options import Section, refresh_config


@dataclass(frozen=True)
class LossKind:
    """One kind of loss: its options and its builder; ``user``: the user's class, for a kind named by file."""

    options: type[Section]
    build: Callable[[Section, float], Loss]
    user: type | None = None

    @property
    def name(self) -> str:
        return typing.get_args(self.options.model_fields["name"].annotation)[0]


#: Every loss kind by name, in the order registered.
LOSS_KINDS: dict[str, LossKind] = {}


def register_loss(kind: LossKind) -> LossKind:
    """Add a loss kind; configs accept ``loss: {name: <its name>, ...}`` from then on."""
    if kind.name in LOSS_KINDS:
        raise ValueError(f"a loss kind named {kind.name!r} is registered already")
    LOSS_KINDS[kind.name] = kind
    refresh_config("refresh_loss_kinds")
    return kind


def unregister_loss(name: str) -> None:
    del LOSS_KINDS[name]
    refresh_config("refresh_loss_kinds")


def loss_union():
    """The options of every registered kind, as a union told apart by ``name``."""
    return Annotated[Union[tuple(kind.options for kind in LOSS_KINDS.values())], Field(discriminator="name")]


class CrossEntropySpec(Section):
    """softmax cross-entropy, its targets smoothed by training.label_smoothing"""

    name: Literal["cross_entropy"]


register_loss(LossKind(CrossEntropySpec, lambda spec, label_smoothing: CrossEntropy(label_smoothing)))
