"""From a validated config to engine objects: modules, optimizer, schedule.

The engine (``nn/``, ``optim/``) takes plain arguments and knows nothing of the schema; this module
owns the translation and the ``dotted.path: message`` errors that point back into the config.
"""

from __future__ import annotations

import math
import os

import numpy as np

from cifar_scratch.config import ModelConfig, RunConfig
from cifar_scratch.errors import ConfigError
from cifar_scratch.fileio import format_bytes
from cifar_scratch.kinds.datasets import DATASET_KINDS
from cifar_scratch.kinds.layers import CONTAINER_SPECS, LAYER_KINDS, DenseSpec, ResidualSpec
from cifar_scratch.kinds.losses import LOSS_KINDS
from cifar_scratch.kinds.optimizers import OPTIMIZER_KINDS
from cifar_scratch.nn.layers import Module
from cifar_scratch.nn.losses import Loss
from cifar_scratch.nn.model import Residual, Sequential, training_memory
from cifar_scratch.optim.optimizers import Optimizer
from cifar_scratch.optim.schedules import Schedule


# --------------------------------------------------------------------------- model
def _walk(layers: list, path: str):
    """(spec, dotted config path) of every layer spec, depth first, blocks before their contents."""
    for index, spec in enumerate(layers):
        where = f"{path}.{index}"
        yield spec, where
        if isinstance(spec, CONTAINER_SPECS):
            yield from _walk(spec.layers, f"{where}.layers")


def build_module(spec, units: dict[int, int] | None = None, partly: dict | None = None, path: str = "") -> Module:
    """One layer or block from its spec; ``units`` fills omitted dense sizes (by spec identity);
    ``partly`` collects the modules whose ``trainable`` names parameters, with their config paths."""
    if isinstance(spec, CONTAINER_SPECS):
        children = [build_module(child, units, partly, f"{path}.layers.{i}") for i, child in enumerate(spec.layers)]
        if isinstance(spec, ResidualSpec):
            module = Residual(children, spec.shortcut, spec.name)
        else:
            module = Sequential(children, spec.name)
    elif isinstance(spec, DenseSpec) and units and id(spec) in units:  # the last dense layer: one output per class
        module = LAYER_KINDS[spec.type].build(spec.model_copy(update={"units": units[id(spec)]}))
    else:
        module = LAYER_KINDS[spec.type].build(spec)
    module.trainable = spec.trainable is not False
    module.config_path = path or None
    if isinstance(spec.trainable, list) and partly is not None:
        partly[id(module)] = (module, spec.trainable, path)
    return module


def build_model(
    config: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    rng: np.random.Generator,
    batch_size: int = 1,
    dtype=np.float32,
) -> Sequential:
    """The config's layers as a built :class:`Sequential`. The last dense layer may omit ``units``: it gets
    ``num_classes``. Shapes are worked out first and the memory of a training step of ``batch_size``
    is compared with what the machine has, so an absurd size is refused with the figure instead of
    asking NumPy for it."""
    dense = [(spec, where) for spec, where in _walk(config.layers, "model.layers") if isinstance(spec, DenseSpec)]
    if not dense:
        raise ConfigError("model.layers: needs at least one dense layer to produce class scores")
    last, last_path = dense[-1]
    if last.units not in (None, num_classes):
        raise ConfigError(
            f"{last_path}.units: the last dense layer must output one score per class ({num_classes}), or omit units (got {last.units})"
        )
    for spec, where in dense[:-1]:
        if spec.units is None:
            raise ConfigError(f"{where}.units: required (only the last dense layer may omit it)")
    try:
        partly: dict = {}
        model = Sequential(
            build_module(spec, {id(last): num_classes}, partly, f"model.layers.{i}") for i, spec in enumerate(config.layers)
        )
        plan = model.plan(tuple(input_shape))
    except ValueError as exc:
        raise ConfigError(f"model.layers: {exc}") from None
    parameters, activations = training_memory(plan, input_shape, batch_size)
    available = available_memory()
    if available is not None and parameters + activations > available:
        raise ConfigError(
            f"model.layers: a training step would need about {format_bytes(parameters + activations)} (parameters and optimizer "
            f"state {format_bytes(parameters)}, activations for a batch of {batch_size} {format_bytes(activations)}), more than the "
            f"{format_bytes(available)} of memory available; use fewer units/filters, a smaller kernel or padding, or a smaller batch"
        )
    if math.prod(plan.output_shape) != num_classes or len(plan.output_shape) != 1:
        raise ConfigError(f"model.layers: the model outputs {plan.output_shape}, expected ({num_classes},) class scores")
    model.build(tuple(input_shape), rng, dtype)
    for module, names, where in partly.values():
        own = list(module.local("params"))
        unknown = [name for name in names if name not in own]
        if unknown:
            raise ConfigError(
                f"{where}.trainable: {module.kind} has no parameter {unknown[0]!r} (its parameters: {', '.join(own) or 'none'})"
            )
        module.frozen = set(own) - set(names)
    return model


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------- optimizer
def build_optimizer(spec, model: Module, steps_per_epoch: int = 1) -> Optimizer:
    """The configured optimizer over the model's trainable parameters (frozen ones are never given to it);
    ``steps_per_epoch`` turns a group's ``epochs`` into steps. Its kind's record builds it."""
    return OPTIMIZER_KINDS[spec.name].build(spec, model, steps_per_epoch)


# --------------------------------------------------------------------------- loss
def build_loss(config: RunConfig) -> Loss:
    """The configured training loss (cross-entropy with ``training.label_smoothing``, or the user's)."""
    return LOSS_KINDS[config.loss.name].build(config.loss, config.training.label_smoothing)


# --------------------------------------------------------------------------- schedule
def build_schedule(config: RunConfig, steps_per_epoch: int) -> Schedule:
    """The configured schedule for ``steps_per_epoch``; a length shorter than one step is a config error."""
    spec = config.schedule
    epochs = getattr(spec, "step_epochs", None)
    if epochs is not None and epochs * steps_per_epoch < 1:
        raise ConfigError(
            f"schedule.step_epochs: must last at least one step ({steps_per_epoch} steps per epoch, got {epochs:g} epochs)"
        )
    return Schedule(spec.name, config.optimizer.lr, steps_per_epoch, config.training.epochs, **spec.model_dump(exclude={"name"}))


def model_input_shape(config: RunConfig) -> tuple[int, ...]:
    """Per-sample input shape of the config's data: its dataset's record says it, else (an image folder) the data."""
    data = config.data
    shape = DATASET_KINDS[data.dataset].image_shape
    if shape is None:
        from cifar_scratch.data import load_dataset, resolve_data_dir

        return load_dataset(data, resolve_data_dir(), progress=False).image_shape
    return (*shape[:2], 1) if data.grayscale else shape


def num_classes(config: RunConfig) -> int:
    """Classes the config's model predicts: its class subset, else its dataset's (an image folder's: the data's)."""
    if config.data.classes:
        return len(config.data.classes)
    names = DATASET_KINDS[config.data.dataset].class_names
    if names is None:
        from cifar_scratch.data import load_dataset, resolve_data_dir

        return len(load_dataset(config.data, resolve_data_dir(), progress=False).class_names)
    return len(names)
