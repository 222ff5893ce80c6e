"""The building blocks of validated options, shared by the config schema and the kinds' records.

Every section of a config refuses unknown keys and non-finite numbers; integers are exact (no
booleans, no 3.0) and floats are finite and not booleans. Each problem becomes one line
``dotted.path: message`` (:func:`cifar_scratch.config.format_error`).
"""

from __future__ import annotations

import sys
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict


def _not_a_bool(value: Any) -> Any:
    # YAML's `true` would otherwise pass as 1.0 (pydantic's lax float accepts booleans).
    if isinstance(value, bool):
        raise ValueError(f"Input should be a number, not a boolean (got {value})")
    return value


#: Numbers as the schema takes them: integers are exact (no booleans, no 3.0), floats finite and not booleans.
Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
#: Upper bound of learning rates: far above any that trains, low enough to catch a typo such as 1e30.
MAX_LR = 100.0
#: Seeds go to scikit-learn as well, whose random_state must be below 2**32 (the split uses split_seed + 1).
MAX_SEED = 2**32 - 2
#: ``data.source`` for a dataset's official release (found in the data dir, else downloaded).
OFFICIAL_SOURCE = "official"
#: torch_default: PyTorch's default for nn.Linear and nn.Conv2d, uniform within ±1/sqrt(fan_in).
Init = Literal["he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "torch_default"]


class Section(BaseModel):
    """A config section: unknown keys and non-finite numbers (.inf, .nan) are refused with their path."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def refresh_config(rebuild: str) -> None:
    """After a kind was (un)registered, call ``cifar_scratch.config.schema.<rebuild>()`` to rebuild the schema's
    union, once the schema exists: the built-in kinds register while it is still being built."""
    config = sys.modules.get("cifar_scratch.config.schema")
    if config is not None and hasattr(config, "RunConfig"):
        getattr(config, rebuild)()


class Kinds(dict):
    """The kinds of one family (layers, optimizers, losses) by name, in the order registered: the one
    place a family's records live. A record has ``options`` (a :class:`Section` whose ``key`` field is
    a literal: the kind's name) and a ``name`` property. Registering or removing one rebuilds the config
    schema's union (``cifar_scratch.config.schema.<refresh>``), so configs accept or refuse its name."""

    def __init__(self, family: str, key: str, refresh: str):
        super().__init__()
        self.family, self.key, self.refresh = family, key, refresh  # family with its article: "a loss"

    def register(self, kind):
        """Add ``kind``; a name taken already is a ValueError."""
        if kind.name in self:
            raise ValueError(f"{self.family} kind named {kind.name!r} is registered already")
        self[kind.name] = kind
        refresh_config(self.refresh)
        return kind

    def unregister(self, name: str) -> None:
        """Remove a registered kind (configs refuse its name again)."""
        del self[name]
        refresh_config(self.refresh)

    def union(self):
        """The options of every registered kind, as a union told apart by ``key``."""
        return Annotated[Union[tuple(kind.options for kind in self.values())], Field(discriminator=self.key)]


def kind_name(options: type[Section], key: str) -> str:
    """A kind's name: the literal of its options' ``key`` field (``name``, or ``type`` for layers)."""
    return typing.get_args(options.model_fields[key].annotation)[0]
