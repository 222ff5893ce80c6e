"""Containers: ``Sequential`` (modules in order) and ``Residual`` (``x + f(x)``), nestable, with dotted
names such as ``stage2.residual1.conv2d1.weight``. The engine takes plain arguments; turning a config
into modules is :mod:`cifar_scratch.builders`' job.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

import numpy as np

from cifar_scratch.nn.layers import Conv2D, LayerPlan, Module


class Sequential(Module):
    """Modules applied in order. Children are named ``<kind><n>`` (``dense1``, ``conv2d2``), counted per
    container, unless they were given a name."""

    kind = "sequential"
    skips_input_grad = True

    def __init__(self, layers: Iterable[Module], name: str | None = None):
        super().__init__()
        self.layers = list(layers)
        if name is not None:
            self.name, self.explicit_name = name, True
        self.observer = None  # fn(child, output) after each child's forward pass (see observe)
        self._name_children()

    def _name_children(self) -> None:
        counts: dict[str, int] = {}
        for child in self.layers:
            if not child.explicit_name:
                counts[child.kind] = counts.get(child.kind, 0) + 1
                child.name = f"{child.kind}{counts[child.kind]}"
        names = [child.name for child in self.layers]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"{twice}: two modules of one container have this name")

    def children(self) -> list[Module]:
        return list(self.layers)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Trained arrays by dotted name. The arrays are the modules' own: update them in place."""
        return self.gather("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """Gradients of the latest ``backward``, same keys as ``params``."""
        return self.gather("grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Saved, untrained arrays (batch-norm statistics), by dotted name."""
        return self.gather("buffers")

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample output shape of each child (after ``build``)."""
        return [child.output_shape for child in self.layers]

    def first_to_train(self, skip: Collection[str] = ()) -> int:
        """Index of the first child with a trainable parameter not in ``skip`` (dotted names): a backward
        pass without an input gradient stops there (0 if there is none)."""
        for index, child in enumerate(self.layers):
            flags = child.parameter_flags(f"{child.name}.")
            if any(trainable and name not in skip for name, (trainable, _) in flags.items()):
                return index
        return 0

    # ------------------------------------------------------------------ shapes
    def plan(self, input_shape: tuple[int, ...]) -> LayerPlan:
        params, buffers, scratch, activations = {}, {}, 0, 0
        shape = tuple(input_shape)
        for child in self.layers:
            try:
                plan = child.plan(shape)
            except ValueError as exc:
                raise ValueError(f"{child.name}: {exc}" if not str(exc).startswith(child.name) else str(exc)) from None
            params |= {f"{child.name}.{k}": v for k, v in plan.params.items()}
            buffers |= {f"{child.name}.{k}": v for k, v in plan.buffers.items()}
            scratch, activations = scratch + plan.scratch, activations + plan.activations
            shape = plan.output_shape
        return LayerPlan(shape, params, buffers, scratch, activations)

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> tuple[int, ...]:
        self.plan(input_shape)  # every shape checked before anything is allocated
        self.input_shape = shape = tuple(input_shape)
        for child in self.layers:
            shape = tuple(child.build(shape, rng, dtype))
        self.output_shape = shape
        return shape

    def observe(self, observer) -> None:
        """Call ``observer(child, output)`` after the forward pass of every child, here and in nested
        containers (None stops it): how per-layer health sees activations without touching a layer."""
        for _, module in self.named_modules():
            if isinstance(module, Sequential):
                module.observer = observer

    # ------------------------------------------------------------------ compute
    def forward(self, x: np.ndarray) -> np.ndarray:
        """x: (N, *input_shape) -> (N, *output_shape)."""
        for child in self.layers:
            x = child.forward(x)
            if self.observer is not None:
                self.observer(child, x)
        return x

    def backward(self, dout: np.ndarray, input_grad: bool = True, skip: Collection[str] = ()) -> np.ndarray | None:
        """Gradient w.r.t. the output -> gradient w.r.t. the input; fills every module's grads.

        Without an input gradient (``input_grad=False``, as in training) the pass stops at the first
        child with a parameter to train, and that child skips its own input gradient: for a CNN, the
        first convolution's col2im is the costliest step of all and its result would be thrown away.
        ``skip``: dotted names of parameters whose training is over (a parameter group's ``epochs``):
        the pass may stop short of them, and their gradients are then left as they were.
        """
        first = 0 if input_grad else self.first_to_train(skip)
        for index in range(len(self.layers) - 1, first - 1, -1):
            dout = self._backward_child(self.layers[index], dout, input_grad or index > first, skip)
        return dout if input_grad else None

    @staticmethod
    def _backward_child(child: Module, dout: np.ndarray, input_grad: bool, skip: Collection[str]) -> np.ndarray | None:
        if isinstance(child, Sequential):
            prefix = f"{child.name}."
            return child.backward(dout, input_grad=input_grad, skip={n[len(prefix) :] for n in skip if n.startswith(prefix)})
        return child.backward(dout, input_grad=input_grad) if child.skips_input_grad else child.backward(dout)

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """Keras-style table, nested blocks indented: module (type), output shape, parameters; totals
        of trainable and frozen parameters and of buffers (batch-norm statistics) at the bottom."""
        rows = [("Layer (type)", "Output shape", "Param #")]
        self._summary_rows(rows, 0)
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
        rule = "=" * sum(widths)
        lines = [f"Input shape: {(None, *self.input_shape)}", rule]
        lines.append("".join(cell.ljust(w) for cell, w in zip(rows[0], widths)))
        lines.append(rule)
        lines += ["".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows[1:]]
        flags = self.parameter_flags()
        params = self.params
        trainable = sum(params[name].size for name, (train, _) in flags.items() if train)
        frozen = sum(params[name].size for name, (train, _) in flags.items() if not train)
        buffers = sum(b.size for b in self.buffers.values())
        lines += [
            rule,
            f"Total params: {trainable + frozen + buffers:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {frozen + buffers:,}" + (f" ({frozen:,} frozen, {buffers:,} buffers)" if frozen else ""),
        ]
        return "\n".join(lines)

    def _summary_rows(self, rows: list, depth: int) -> None:
        for child in self.children():
            count = sum(p.size for p in child.params.values())
            frozen = (
                ", frozen" if not child.trainable else (f", frozen: {', '.join(sorted(child.frozen))}" if child.frozen else "")
            )
            label = f"{'  ' * depth}{child.name} ({type(child).__name__}{frozen})"
            rows.append((label, str((None, *child.output_shape)), f"{count:,}"))
            if isinstance(child, Sequential):
                child._summary_rows(rows, depth + 1)


class Residual(Sequential):
    """``f(x) + shortcut(x)``, where ``f`` is the block's modules in order.

    The shortcut is the identity when ``f`` keeps the shape; otherwise (or with ``shortcut="conv"``)
    a 1x1 convolution without bias, named ``shortcut``, whose stride makes the spatial sizes match.
    Shapes that no 1x1 convolution can match (a flat output, a spatial size that is no stride of the
    input's) are a ValueError that names the block.
    """

    kind = "residual"

    def __init__(self, layers: Iterable[Module], shortcut: str = "auto", name: str | None = None):
        if shortcut not in ("auto", "identity", "conv"):
            raise ValueError(f"shortcut must be auto, identity or conv (got {shortcut!r})")
        super().__init__(layers, name)
        self.shortcut_mode = shortcut
        self.shortcut: Conv2D | None = None

    def children(self) -> list[Module]:
        return [*self.layers, *([self.shortcut] if self.shortcut is not None else [])]

    def _shortcut_for(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> Conv2D | None:
        if self.shortcut_mode != "conv" and input_shape == output_shape:
            return None
        if self.shortcut_mode == "identity":
            raise ValueError(f"the block maps {input_shape} to {output_shape}: an identity shortcut cannot add them")
        if len(input_shape) != 3 or len(output_shape) != 3:
            raise ValueError(f"the block maps {input_shape} to {output_shape}: a residual block needs images in and out")
        strides = []
        for axis in (0, 1):
            stride = max(1, round(input_shape[axis] / output_shape[axis]))
            if (input_shape[axis] - 1) // stride + 1 != output_shape[axis]:
                raise ValueError(f"the block maps {input_shape} to {output_shape}: no strided 1x1 convolution matches the sizes")
            strides.append(stride)
        conv = Conv2D(output_shape[2], 1, tuple(strides), "valid", bias=False)
        conv.name, conv.explicit_name = "shortcut", True
        return conv

    def plan(self, input_shape: tuple[int, ...]) -> LayerPlan:
        body = super().plan(input_shape)
        shortcut = self._shortcut_for(tuple(input_shape), body.output_shape)
        if shortcut is None:
            return body
        extra = shortcut.plan(tuple(input_shape))
        return LayerPlan(
            body.output_shape,
            body.params | {f"shortcut.{k}": v for k, v in extra.params.items()},
            body.buffers,
            body.scratch + extra.scratch,
            body.activations + extra.activations + math.prod(body.output_shape),  # the sum
        )

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> tuple[int, ...]:
        out = super().build(input_shape, rng, dtype)
        self.shortcut = self._shortcut_for(tuple(input_shape), out)
        if self.shortcut is not None:
            self.shortcut.build(tuple(input_shape), rng, dtype)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        body = super().forward(x)
        return body + (x if self.shortcut is None else self.shortcut.forward(x))

    def backward(self, dout: np.ndarray, input_grad: bool = True, skip: Collection[str] = ()) -> np.ndarray | None:
        through_body = super().backward(dout, input_grad, skip)
        through_shortcut = dout if self.shortcut is None else self.shortcut.backward(dout, input_grad=input_grad)
        if not input_grad:
            return None
        return np.add(through_body, through_shortcut)  # a new array: either input may alias dout


def training_memory(plan: LayerPlan, input_shape: tuple[int, ...], batch_size: int) -> tuple[int, int]:
    """Estimated bytes of (parameters, activations) that one float32 training step of ``batch_size`` holds.

    Parameters count 5 times (values, gradients, two optimizer slots, a temporary); each activation
    3 times (output, cached input, gradient), plus the scratch buffers.
    """
    parameters = sum(math.prod(s) for s in [*plan.params.values(), *plan.buffers.values()])
    per_sample = math.prod(input_shape) + 3 * plan.activations + plan.scratch
    return 4 * 5 * parameters, 4 * batch_size * per_sample
