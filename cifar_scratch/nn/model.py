"""A sequential model: layers in order, with dotted parameter names such as ``dense1.weight``."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from cifar_scratch.config import DenseSpec, ModelConfig
from cifar_scratch.errors import ConfigError
from cifar_scratch.nn.layers import LAYER_TYPES, Layer, LayerPlan


class Sequential:
    def __init__(self, layers: Iterable[Layer], input_shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32):
        """Build ``layers`` for per-sample ``input_shape``; parameters are drawn from ``rng``."""
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.plans = plan_layers(self.layers, self.input_shape)
        shape = self.input_shape
        for layer in self.layers:
            shape = tuple(layer.build(shape, rng, dtype))
        self.output_shapes = [plan.output_shape for plan in self.plans]
        self.output_shape = shape

    # ----------------------------------------------------------------- state
    def _collect(self, attribute: str) -> dict[str, np.ndarray]:
        return {f"{layer.name}.{key}": value for layer in self.layers for key, value in getattr(layer, attribute).items()}

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Trained arrays by dotted name. The arrays are the layers' own: update them in place."""
        return self._collect("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the latest ``backward``, same keys as ``params``."""
        return self._collect("grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Saved, untrained arrays (for example normalisation statistics), by dotted name."""
        return self._collect("buffers")

    def load_arrays(self, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray]) -> None:
        """Copy saved arrays into the model's own arrays; names and shapes must match exactly."""
        for kind, mine, theirs in (("parameter", self.params, params), ("buffer", self.buffers, buffers)):
            if set(mine) != set(theirs):
                missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
                raise ValueError(f"{kind} names differ: missing {missing}, unexpected {extra}")
            for name, array in mine.items():
                if array.shape != theirs[name].shape:
                    raise ValueError(f"{kind} {name}: shape {theirs[name].shape} does not match {array.shape}")
                array[...] = theirs[name]

    def train(self) -> Sequential:
        for layer in self.layers:
            layer.training = True
        return self

    def eval(self) -> Sequential:
        for layer in self.layers:
            layer.training = False
        return self

    @property
    def first_trained(self) -> int:
        """Index of the first layer with parameters: a training backward pass stops there (0 if none)."""
        return next((i for i, layer in enumerate(self.layers) if layer.params), 0)

    # ----------------------------------------------------------------- compute
    def forward(self, x: np.ndarray) -> np.ndarray:
        """x: (N, *input_shape) -> logits (N, *output_shape)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """dout: gradient of the loss w.r.t. the logits -> gradient w.r.t. the input; fills every layer's grads.

        With ``input_grad=False`` (training) the pass stops at the first layer with parameters and
        that layer skips its input gradient: for a CNN, the first convolution's col2im is the
        costliest step of all and its result would be thrown away.
        """
        first = 0 if input_grad else self.first_trained
        for index in range(len(self.layers) - 1, first - 1, -1):
            layer = self.layers[index]
            layer.input_grad = input_grad or index > first
            dout = layer.backward(dout)
        return dout if input_grad else None

    # ----------------------------------------------------------------- summary
    def summary(self) -> str:
        """Keras-style table: layer (type), output shape, parameter count; totals at the bottom."""
        rows = [("Layer (type)", "Output shape", "Param #")]
        for layer, shape in zip(self.layers, self.output_shapes):
            count = sum(p.size for p in layer.params.values())
            rows.append((f"{layer.name} ({type(layer).__name__})", str((None, *shape)), f"{count:,}"))
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
        rule = "=" * sum(widths)
        lines = [f"Input shape: {(None, *self.input_shape)}", rule]
        lines.append("".join(cell.ljust(w) for cell, w in zip(rows[0], widths)))
        lines.append(rule)
        lines += ["".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows[1:]]
        trainable = sum(p.size for p in self.params.values())
        frozen = sum(b.size for b in self.buffers.values())
        lines += [
            rule,
            f"Total params: {trainable + frozen:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {frozen:,}",
        ]
        return "\n".join(lines)


def plan_layers(layers: list[Layer], input_shape: tuple[int, ...]) -> list[LayerPlan]:
    """Name the layers (``dense1``, ``conv2d2``...) and work out every shape without allocating."""
    counts: dict[str, int] = {}
    plans, shape = [], tuple(input_shape)
    for layer in layers:
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
        layer.name = f"{layer.kind}{counts[layer.kind]}"
        plan = layer.plan(shape)
        plans.append(plan)
        shape = plan.output_shape
    return plans


#: float32 copies of the parameters alive during a step: values, gradients, two optimizer slots, one temporary.
PARAMETER_COPIES = 5
#: float32 copies of each activation alive during a step: output, cached input, gradient.
ACTIVATION_COPIES = 3


def training_memory(plans: list[LayerPlan], input_shape: tuple[int, ...], batch_size: int) -> tuple[int, int]:
    """Estimated bytes of (parameters, activations) that one training step of ``batch_size`` holds."""
    parameters = sum(math.prod(s) for plan in plans for s in [*plan.params.values(), *plan.buffers.values()])
    per_sample = math.prod(input_shape) + sum(ACTIVATION_COPIES * math.prod(p.output_shape) + p.scratch for p in plans)
    return 4 * PARAMETER_COPIES * parameters, 4 * batch_size * per_sample


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


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def build_model(
    config: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    rng: np.random.Generator,
    batch_size: int = 1,
    dtype=np.float32,
) -> Sequential:
    """Layers from the config's list. The last dense layer may omit ``units``: it gets ``num_classes``.

    Shapes are worked out first and the memory of a training step of ``batch_size`` is compared with
    what the machine has, so an absurd size is refused with the figure instead of asking NumPy for it.
    """
    dense_positions = [i for i, spec in enumerate(config.layers) if isinstance(spec, DenseSpec)]
    if not dense_positions:
        raise ConfigError("model.layers: needs at least one dense layer to produce class scores")
    layers = []
    for index, spec in enumerate(config.layers):
        options = spec.model_dump(exclude={"type"})
        if isinstance(spec, DenseSpec):
            if index == dense_positions[-1]:
                if spec.units not in (None, num_classes):
                    raise ConfigError(
                        f"model.layers.{index}.units: the last dense layer must output one score per class "
                        f"({num_classes}), or omit units (got {spec.units})"
                    )
                options["units"] = num_classes
            elif spec.units is None:
                raise ConfigError(f"model.layers.{index}.units: required (only the last dense layer may omit it)")
        layers.append(LAYER_TYPES[spec.type](**options))
    try:
        plans = plan_layers(layers, input_shape)
    except ValueError as exc:
        raise ConfigError(f"model.layers: {exc}") from None
    parameters, activations = training_memory(plans, input_shape, batch_size)
    available = available_memory()
    if available is not None and parameters + activations > available:
        raise ConfigError(
            f"model.layers: a training step would need about {_size(parameters + activations)} (parameters and optimizer "
            f"state {_size(parameters)}, activations for a batch of {batch_size} {_size(activations)}), more than the "
            f"{_size(available)} of memory available; use fewer units/filters, a smaller kernel or padding, or a smaller batch"
        )
    model = Sequential(layers, input_shape, rng, dtype)
    if math.prod(model.output_shape) != num_classes or len(model.output_shape) != 1:
        raise ConfigError(f"model.layers: the model outputs {model.output_shape}, expected ({num_classes},) class scores")
    return model
