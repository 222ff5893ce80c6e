"""Loss kinds: one record each, the one place a kind of loss is declared.

A record (:class:`LossKind`) says what a config's ``loss: {name: NAME, ...}`` means: ``options`` (a
:class:`~cifar_scratch.options.Section` whose ``name`` literal is the kind's name) and ``build(options,
label_smoothing) -> Loss``. The built-in kind is softmax cross-entropy; a user's loss named by file
or module (``loss: {name: losses/focal.py:Focal, gamma: 2.0}``) joins through :mod:`cifar_scratch.kinds.user`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cifar_scratch.nn.losses import CrossEntropy, Loss
from cifar_scratch.options import Kinds, Section, kind_name


@dataclass(frozen=True)
class LossKind:
    """One kind of loss: its options and its builder; ``user``: the user's class, for a kind named by file."""

    options: type[Section]
    build: Callable[[Section, float], Loss]
    user: type | None = None

    @property
    def name(self) -> str:
        return kind_name(self.options, "name")


#: Every loss kind by name, in the order registered; configs accept ``loss: {name: <its name>, ...}``.
LOSS_KINDS: Kinds = Kinds("a loss", "name", "refresh_loss_kinds")
register_loss, unregister_loss, loss_union = LOSS_KINDS.register, LOSS_KINDS.unregister, LOSS_KINDS.union


class CrossEntropySpec(Section):
    """softmax cross-entropy, its targets smoothed by training.label_smoothing"""

    name: Literal["cross_entropy"]


register_loss(LossKind(CrossEntropySpec, lambda spec, label_smoothing: CrossEntropy(label_smoothing)))
