"""The user's own layers, optimizers and losses, named in a config by file and class: ``{type:
layers/swish.py:Swish, beta: 2.0}``, ``optimizer: {name: opt/lion.py:Lion, lr: 3e-4}``, ``loss: {name:
focal.py:Focal, gamma: 2.0}`` (the path relative to the config file), or by importable module:
``{type: mypkg.layers:Swish}``.

A user layer subclasses :class:`cifar_scratch.nn.layers.Layer`, as the built-in leaves do:

- ``__init__`` takes the layer's options as named parameters; their type hints and defaults become the
  options' schema, checked like a built-in layer's (an unknown or mistyped option is one config error);
- ``build(input_shape, rng, dtype)`` fills ``self.params`` by name (after ``super().build(...)``), and
  ``plan(input_shape)`` gives the output shape when it differs from the input's;
- ``forward(x) -> out`` keeps what the backward pass needs, ``backward(dout) -> dx`` fills ``self.grads``
  under the parameters' names;
- optionally ``examples``: (options, per-sample input shape) pairs that ``gradcheck --layer`` checks.

A user optimizer subclasses :class:`cifar_scratch.optim.optimizers.Optimizer`: ``__init__(self, params,
hyper, **options)`` passes ``params`` and ``hyper`` on to ``super().__init__`` after setting ``slots``
(the names of its per-parameter state arrays); ``update(name, param, grad, lr)`` changes ``param`` in
place. The config's ``lr``, ``l2``, ``weight_decay`` and ``groups`` work as for the built-in ones.
A user loss subclasses :class:`cifar_scratch.nn.losses.Loss`, its options the constructor's, and writes
``forward(logits, labels) -> (mean loss, dlogits)``.

Each reference becomes a kind's record (:class:`~cifar_scratch.kinds.layers.LayerKind`,
:class:`~cifar_scratch.kinds.optimizers.OptimizerKind`) registered under the reference itself (with the file's path made absolute), so everything that reads the records (the config, the
builder, ``gradcheck``, the summary) takes it as it takes ``conv2d``. A file is imported under a name
that carries its SHA-256: an edited file is imported afresh, never mixed with the old one.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, create_model

from cifar_scratch.errors import ConfigError
from cifar_scratch.fileio import file_digest
from cifar_scratch.kinds.layers import LAYER_KINDS, LayerKind, LayerOptions, register_layer, unregister_layer
from cifar_scratch.kinds.losses import LOSS_KINDS, LossKind, register_loss, unregister_loss
from cifar_scratch.kinds.optimizers import (
    OPTIMIZER_KINDS,
    OptimizerKind,
    ParamGroup,
    register_optimizer,
    trained_parameters,
    unregister_optimizer,
)
from cifar_scratch.nn.layers import Layer
from cifar_scratch.nn.losses import Loss
from cifar_scratch.optim.optimizers import Optimizer
from cifar_scratch.options import MAX_LR, Float, Int, Section

#: ``path/to/file.py:Class`` or ``package.module:Class``.
REFERENCE = re.compile(r"^(?P<where>.+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")  # the last colon: C:\\ paths too
#: Where a user layer with no ``examples`` of its own is checked alone: an image, else a vector.
DEFAULT_EXAMPLE_SHAPES = ((4, 5, 3), (7,))


def is_reference(value: Any) -> bool:
    """Whether a layer ``type`` names user code (built-in kinds have no colon)."""
    return isinstance(value, str) and ":" in value


def is_file_reference(reference: str) -> bool:
    return reference.rpartition(":")[0].endswith(".py")


def absolute_reference(reference: str, base: Path) -> str:
    """``layers/swish.py:Swish`` with its file made absolute against ``base``; a module reference as it is."""
    where, _, name = reference.rpartition(":")
    if not where.endswith(".py"):
        return reference
    path = Path(where).expanduser()
    return f"{path if path.is_absolute() else (base / path).resolve()}:{name}"


def source_file(reference: str) -> Path | None:
    """The file a reference names, or None for a module reference."""
    return Path(reference.rpartition(":")[0]) if is_file_reference(reference) else None


# --------------------------------------------------------------------------- loading a class
def load_class(reference: str, base: type = Layer) -> type:
    """The ``base`` subclass a reference names; every way it can fail is a ValueError naming the file or module."""
    match = REFERENCE.match(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not a user layer reference: write path/to/file.py:Class or package.module:Class")
    where, name = match["where"], match["name"]
    if where.endswith(".py"):
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # the user's module: any error it raises while importing
            raise ValueError(f"{where}: cannot import ({type(exc).__name__}: {exc})") from None
    cls = getattr(module, name, None)
    if cls is None:
        raise ValueError(f"{where}: defines no {name}")
    what = {Layer: "a layer", Optimizer: "an optimizer", Loss: "a loss"}[base]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{where}: {name} is not {what}: subclass {base.__module__}.{base.__name__}")
    needed = {Layer: ("forward", "backward"), Optimizer: ("update",), Loss: ("forward",)}[base]
    missing = [method for method in needed if getattr(cls, method) is getattr(base, method)]
    if missing:
        raise ValueError(f"{where}: {name} does not define {' and '.join(missing)}")
    return cls


def _import_file(path: Path):
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    digest = file_digest(path)
    module_name = f"cifar_scratch_user.{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest[:16]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a class's module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error it raises while importing
        del sys.modules[module_name]
        where = f"{path}:{exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else str(path)
        raise ValueError(f"{where}: cannot import ({type(exc).__name__}: {exc})") from None
    return module


# --------------------------------------------------------------------------- options and the record
#: Type hints as the schema takes them: integers exact, floats finite and not booleans (as built-in options).
_HINTS = {float: Float, int: Int}


def options_model(reference: str, cls: type, base: type = LayerOptions, tag: str = "type", skip: int = 1) -> type:
    """A ``base`` options model from ``cls.__init__``'s named parameters (after the first ``skip``: self,
    and an optimizer's params and hyper), their hints and defaults; ``tag`` (type, name) is ``reference``."""
    signature = inspect.signature(cls.__init__)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception as exc:  # a hint that names what the file does not import
        raise ValueError(f"{cls.__name__}.__init__: unreadable type hints ({exc})") from None
    fields: dict[str, Any] = {tag: (Literal[reference], ...)}
    for name, parameter in list(signature.parameters.items())[skip:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise ValueError(f"{cls.__name__}.__init__: options must be named parameters (got {parameter})")
        if name in base.model_fields or name == tag:
            raise ValueError(
                f"{cls.__name__}.__init__: {name!r} is a key every config of its kind has; call the option otherwise"
            )
        hint = hints.get(name, Any)
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (_HINTS.get(hint, hint), default)
    return create_model(f"{cls.__name__}Options", __base__=base, **fields)


def _examples(cls: type, options: type[LayerOptions]) -> tuple[tuple[dict, tuple[int, ...]], ...]:
    """The class's own ``examples``, else the default shapes its plan accepts (with default options)."""
    own = getattr(cls, "examples", None)
    if own:
        return tuple((dict(opts), tuple(shape)) for opts, shape in own)
    required = [name for name, field in options.model_fields.items() if field.is_required() and name != "type"]
    if required:
        return ()  # gradcheck --layer then asks for examples
    for shape in DEFAULT_EXAMPLE_SHAPES:
        try:
            cls().plan(shape)
        except Exception:  # the user's plan refusing a shape: try the next one
            continue
        return (({}, shape),)
    return ()


def _module_factory(cls: type):
    def make(**options) -> Layer:
        try:
            module = cls(**options)
        except Exception as exc:  # the user's constructor
            raise ValueError(
                f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())}): {type(exc).__name__}: {exc}"
            ) from None
        if type(module).kind == Layer.kind:  # no kind of its own: named <class>1, <class>2 in its container
            module.kind = module.name = cls.__name__.lower()
        return module

    return make


def user_layer_kind(reference: str) -> LayerKind:
    """The record of the user layer ``reference`` (a file's path absolute), registered on first use;
    registered again when its file has changed since. ValueError when it cannot be loaded."""
    cls = load_class(reference)
    if (known := _registered(LAYER_KINDS, reference, cls, unregister_layer)) is not None:
        return known
    options = options_model(reference, cls)
    return register_layer(LayerKind(options, _module_factory(cls), _examples(cls, options), user=cls))


def _registered(records: dict, reference: str, cls: type, unregister: Callable[[str], None]):
    """The record registered for ``reference`` when it holds this very class (else None); one of an
    earlier version of the file is removed, so that the new class replaces it."""
    known = records.get(reference)
    if known is not None and known.user is not cls:
        unregister(reference)
        return None
    return known


class UserOptimizerOptions(Section):
    """What a user optimizer's config takes besides its constructor's options, as the built-in ones do."""

    lr: Float = Field(0.01, gt=0.0, le=MAX_LR, description="Learning rate (the schedule's peak).")
    l2: Float = Field(0.0, ge=0.0, le=1.0, description="L2 penalty added to the gradient of every weight matrix.")
    weight_decay: Float = Field(0.0, ge=0.0, le=1.0, description="Decoupled weight decay: w -= lr * weight_decay * w.")
    groups: list[ParamGroup] = Field(default_factory=list, description="Per-parameter hyperparameters by name pattern.")


def user_optimizer_kind(reference: str) -> OptimizerKind:
    """The record of the user optimizer ``reference``, registered on first use (again when its file changed)."""
    cls = load_class(reference, Optimizer)
    if (known := _registered(OPTIMIZER_KINDS, reference, cls, unregister_optimizer)) is not None:
        return known
    options = options_model(reference, cls, UserOptimizerOptions, "name", skip=3)  # self, params, hyper
    own = [name for name in options.model_fields if name not in UserOptimizerOptions.model_fields and name != "name"]

    def build(spec, model, steps_per_epoch: int) -> Optimizer:
        params, hyper = trained_parameters(spec, model, steps_per_epoch)
        chosen = {name: getattr(spec, name) for name in own}
        try:
            return cls(params, hyper, **chosen)
        except Exception as exc:  # the user's constructor
            raise ConfigError(f"optimizer: {cls.__name__}(...): {type(exc).__name__}: {exc}") from None

    return register_optimizer(OptimizerKind(options, build, user=cls))


def user_loss_kind(reference: str) -> LossKind:
    """The record of the user loss ``reference``, registered on first use (again when its file changed)."""
    cls = load_class(reference, Loss)
    if (known := _registered(LOSS_KINDS, reference, cls, unregister_loss)) is not None:
        return known
    options = options_model(reference, cls, Section, "name")
    own = [name for name in options.model_fields if name != "name"]

    def build(spec, label_smoothing: float) -> Loss:
        try:
            return cls(**{name: getattr(spec, name) for name in own})
        except Exception as exc:  # the user's constructor
            raise ConfigError(f"loss: {cls.__name__}(...): {type(exc).__name__}: {exc}") from None

    return register_loss(LossKind(options, build, user=cls))


#: Where a config names user code besides its layers: the section and the kind that loads it.
_SECTIONS = {"optimizer": user_optimizer_kind, "loss": user_loss_kind}


def register_references(tree: Any) -> None:
    """Register the kind of every user layer (blocks included) and of a user optimizer in a raw config
    tree, so that validation takes them; a reference that cannot be loaded is a ConfigError at its path."""

    def register(reference: str, path: str) -> str:
        try:
            _SECTIONS.get(path, user_layer_kind)(reference)
        except ValueError as exc:
            raise ConfigError(f"{path}.{'name' if path in _SECTIONS else 'type'}: {exc}") from None
        return reference

    map_references(tree, register)


def references(tree: Any) -> list[str]:
    """Every user layer and optimizer reference in a config tree, in order, without repeats."""
    found: dict[str, None] = {}

    def note(reference: str, path: str) -> str:
        found[reference] = None
        return reference

    map_references(copy.deepcopy(tree), note)
    return list(found)


def map_references(tree: Any, change: Callable[[str, str], str]) -> Any:
    """Replace every user reference in a config tree, each layer's (blocks included, bare ``- file.py:Class``
    items too) and the optimizer's ``name``, by ``change(reference, dotted path of the layer, or
    "optimizer")``, in place; -> ``tree``."""

    def walk(layers: Any, path: str) -> None:
        for index, item in enumerate(layers if isinstance(layers, list) else ()):
            where = f"{path}.{index}"
            if is_reference(item):
                layers[index] = change(item, where)
            elif isinstance(item, dict):
                if is_reference(item.get("type")):
                    item["type"] = change(item["type"], where)
                walk(item.get("layers"), f"{where}.layers")

    model = tree.get("model") if isinstance(tree, dict) else None
    if isinstance(model, dict):
        walk(model.get("layers"), "model.layers")
    for section in ("optimizer", "loss"):
        node = tree.get(section) if isinstance(tree, dict) else None
        if isinstance(node, dict) and is_reference(node.get("name")):
            node["name"] = change(node["name"], section)
    return tree


def portable(tree: Any) -> Any:
    """A config tree with each user file named by its file name alone: the same run, wherever its folder
    has moved (the copies' SHA-256 in ``code/SHA256SUMS`` say whether the code is the same)."""
    return map_references(
        tree, lambda reference, path: f"{Path(reference.rpartition(':')[0]).name}:{reference.rpartition(':')[2]}"
    )
