"""Optimizer kinds: one record each, the one place a kind of optimizer is declared.

A record (:class:`OptimizerKind`) ties together what a config's ``optimizer: {name: NAME, ...}`` means:

- ``options``: the validated options, a :class:`~cifar_scratch.options.Section` whose ``name`` literal
  is the kind's name;
- ``build``: ``build(options, model, steps_per_epoch) -> Optimizer`` over the model's trainable
  parameters, each with its :class:`~cifar_scratch.optim.optimizers.Hyper` (see :func:`parameter_hyper`);
- ``torch``: optionally, the same update in PyTorch for ``benchmark --against torch``:
  ``torch(torch, options, trained, names, ours) -> [torch optimizers]``, ``trained`` the torch
  model's trained parameters, ``names`` our dotted name -> (torch tensor, to_ours), ``ours`` our optimizer.

The config's optimizer union, the builder and the benchmark read :data:`OPTIMIZER_KINDS`; every
name there has a builder, so no name falls through to another optimizer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from cifar_scratch.errors import ConfigError
from cifar_scratch.nn.layers import Module
from cifar_scratch.optim.optimizers import SGD, Adam, Hyper, Muon, Optimizer
from cifar_scratch.options import MAX_LR, Float, Int, Kinds, Section, kind_name


@dataclass(frozen=True)
class OptimizerKind:
    """One kind of optimizer: its options, its builder and its PyTorch twin (see the module docstring)."""

    options: type[Section]
    build: Callable[[Section, Module, int], Optimizer]
    torch: Callable | None = None
    user: type | None = None  # the user's class, for a kind named by file or module (cifar_scratch.kinds.user)

    @property
    def name(self) -> str:
        return kind_name(self.options, "name")


#: Every optimizer kind by name, in the order registered; configs accept ``optimizer: {name: <its name>, ...}``.
OPTIMIZER_KINDS: Kinds = Kinds("an optimizer", "name", "refresh_optimizer_kinds")
register_optimizer, unregister_optimizer = OPTIMIZER_KINDS.register, OPTIMIZER_KINDS.unregister
optimizer_union = OPTIMIZER_KINDS.union


# --------------------------------------------------------------------------- options shared by every kind
class ParamGroup(Section):
    """Hyperparameters for the parameters whose dotted names match ``params`` (shell-style patterns
    such as ``"*.bias"`` or ``"stage1.*"``); a parameter takes the first group that matches it."""

    params: Union[str, list[str]] = Field(description="Pattern or list of patterns over dotted parameter names.")
    lr_scale: Float = Field(1.0, gt=0.0, le=1e4, description="Learning-rate multiplier for these parameters.")
    weight_decay: Optional[Float] = Field(
        None, ge=0.0, le=1.0, description="Decoupled weight decay for these parameters (sgd, adamw)."
    )
    l2: Optional[Float] = Field(None, ge=0.0, le=1.0, description="L2 penalty for these parameters (sgd, adam).")
    epochs: Optional[Float] = Field(
        None, gt=0.0, description="Train these parameters only for the first N epochs, then keep them fixed."
    )

    @field_validator("params")
    @classmethod
    def _patterns(cls, value):
        patterns = [value] if isinstance(value, str) else value
        if not patterns or any(not p for p in patterns):
            raise ValueError("give at least one non-empty pattern")
        return value


def _groups_field():
    return Field(
        default_factory=list,
        description="Per-parameter hyperparameters by name pattern. Without a group, weight matrices and kernels "
        "take the optimizer's weight_decay/l2, biases and batch-norm parameters none.",
    )


# --------------------------------------------------------------------------- sgd
class SGDSpec(Section):
    name: Literal["sgd"]
    lr: Float = Field(0.01, gt=0.0, le=MAX_LR, description="Learning rate (the schedule's peak).")
    momentum: Float = Field(0.0, ge=0.0, lt=1.0, description="Heavy-ball momentum, PyTorch's form: v = momentum v + g.")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0).")
    l2: Float = Field(0.0, ge=0.0, le=1.0, description="L2 penalty: l2 * w is added to the gradient of every weight matrix.")
    weight_decay: Float = Field(0.0, ge=0.0, le=1.0, description="Decoupled weight decay: w -= lr * weight_decay * w.")
    groups: list[ParamGroup] = _groups_field()

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov: needs momentum > 0")
        return self


def trained_parameters(spec, model: Module, steps_per_epoch: int, base_scale: dict | None = None):
    """(trainable parameters, their hyperparameters) of ``model`` under ``spec``."""
    hyper = parameter_hyper(spec, model, steps_per_epoch, base_scale)
    return {name: value for name, value in model.params.items() if name in hyper}, hyper


def _sgd_twin(torch, spec, trained, names, ours):
    return [torch.optim.SGD(trained, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.l2)]


register_optimizer(
    OptimizerKind(
        SGDSpec,
        lambda spec, model, steps: SGD(*trained_parameters(spec, model, steps), momentum=spec.momentum, nesterov=spec.nesterov),
        _sgd_twin,
    )
)


# --------------------------------------------------------------------------- adam, adamw
class _AdamFamily(Section):
    lr: Float = Field(0.001, gt=0.0, le=MAX_LR, description="Learning rate (the schedule's peak).")
    betas: tuple[Annotated[Float, Field(ge=0.0, lt=1.0)], Annotated[Float, Field(ge=0.0, lt=1.0)]] = Field(
        (0.9, 0.999), description="Decay rates of the first and second moment estimates."
    )
    eps: Float = Field(1e-8, gt=0.0, le=1.0, description="Added to the square root of the second moment.")


class AdamSpec(_AdamFamily):
    name: Literal["adam"]
    l2: Float = Field(0.0, ge=0.0, le=1.0, description="L2 penalty added to the gradient (classic Adam + L2).")
    groups: list[ParamGroup] = _groups_field()


class AdamWSpec(_AdamFamily):
    name: Literal["adamw"]
    weight_decay: Float = Field(0.01, ge=0.0, le=1.0, description="Decoupled weight decay (Loshchilov & Hutter).")
    groups: list[ParamGroup] = _groups_field()


def _adam_twin(torch, spec, trained, names, ours):
    kind, decay = (torch.optim.AdamW, spec.weight_decay) if spec.name == "adamw" else (torch.optim.Adam, spec.l2)
    return [kind(trained, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=decay)]


def _build_adam(spec, model: Module, steps_per_epoch: int) -> Optimizer:
    """Adam and AdamW are one update: AdamW's decoupled decay is in each parameter's Hyper."""
    return Adam(*trained_parameters(spec, model, steps_per_epoch), betas=spec.betas, eps=spec.eps)


register_optimizer(OptimizerKind(AdamSpec, _build_adam, _adam_twin))
register_optimizer(OptimizerKind(AdamWSpec, _build_adam, _adam_twin))


# --------------------------------------------------------------------------- muon
class MuonSpec(SGDSpec):
    """Muon (Jordan et al., 2024; airbench94_muon): orthogonalised Nesterov updates for convolution
    kernels (or the weights ``orthogonalize`` names), SGD for every other trained parameter. ``l2``,
    ``weight_decay`` and ``groups`` are SGD's, and so is the rule that Nesterov needs momentum."""

    name: Literal["muon"]
    lr: Float = Field(0.02, gt=0.0, le=MAX_LR, description="Step size of the orthogonalised updates (the schedule's peak).")
    momentum: Float = Field(0.95, ge=0.0, lt=1.0, description="Momentum of the orthogonalised updates.")
    nesterov: bool = Field(True, description="Nesterov momentum for the orthogonalised updates.")
    ns_steps: Int = Field(5, ge=1, le=50, description="Newton-Schulz iterations per orthogonalised update.")
    normalize_weights: bool = Field(
        False,
        description="Before each update, rescale every orthogonalised weight to Frobenius norm sqrt(output "
        "channels), as airbench94_muon does for kernels that feed batch norm.",
    )
    orthogonalize: Optional[Union[str, list[str]]] = Field(
        None,
        description="Patterns over dotted names of the weights (2-D or more) that take orthogonalised updates; "
        "default: every convolution kernel.",
    )
    fallback_lr: Float = Field(
        0.01, gt=0.0, le=MAX_LR, description="SGD learning rate of every other parameter, at the schedule's peak."
    )
    fallback_momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum of every other parameter.")
    fallback_nesterov: bool = Field(False, description="Nesterov momentum for every other parameter.")

    @model_validator(mode="after")
    def _fallback_nesterov_needs_momentum(self) -> MuonSpec:
        if self.fallback_nesterov and self.fallback_momentum == 0.0:
            raise ValueError("fallback_nesterov: needs fallback_momentum > 0")
        return self


def _build_muon(spec, model: Module, steps_per_epoch: int) -> Optimizer:
    """Muon for the orthogonalised weights; the other parameters take SGD at fallback_lr."""
    orthogonal = orthogonalized_names(spec, model)
    fallback = dict.fromkeys(_trainable_shapes(model).keys() - orthogonal, spec.fallback_lr / spec.lr)
    params, hyper = trained_parameters(spec, model, steps_per_epoch, fallback)
    return Muon(
        params,
        hyper,
        orthogonal,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        ns_steps=spec.ns_steps,
        normalize_weights=spec.normalize_weights,
        fallback_momentum=spec.fallback_momentum,
        fallback_nesterov=spec.fallback_nesterov,
    )


def _muon_twin(torch, spec, trained, names, ours):
    """The kernels ours orthogonalises take our Muon update in torch, and SGD the other parameters, as ours."""
    kernels = [names[name][0] for name in sorted(ours.orthogonal)]
    others = [p for p in trained if not any(p is k for k in kernels)]
    return [
        torch_muon(torch, kernels, spec.lr, spec.momentum, spec.nesterov, spec.ns_steps, spec.normalize_weights),
        torch.optim.SGD(others, lr=spec.fallback_lr, momentum=spec.fallback_momentum, nesterov=spec.fallback_nesterov),
    ]


def torch_muon(torch, params, lr: float, momentum: float, nesterov: bool, ns_steps: int, normalize_weights: bool):
    """Our Muon update (``optim.optimizers.Muon``) for torch weights in float32, for ``benchmark --against
    torch``: torch.optim.Muon takes only 2-D weights, and its bfloat16 iteration would time another thing."""
    from cifar_scratch.optim.optimizers import NEWTON_SCHULZ

    class Muon(torch.optim.Optimizer):
        def __init__(self):
            super().__init__(params, {"lr": lr})

        @torch.no_grad()
        def step(self):
            a, b, c = NEWTON_SCHULZ
            for p in self.param_groups[0]["params"]:
                velocity = self.state[p].setdefault("velocity", torch.zeros_like(p))
                velocity.mul_(momentum).add_(p.grad)
                direction = p.grad + momentum * velocity if nesterov else velocity
                if normalize_weights:
                    p.mul_(len(p) ** 0.5 / p.norm())
                x = direction.reshape(len(p), -1)
                x = x / (x.norm() + 1e-7)
                tall = x.shape[0] > x.shape[1]
                x = x.T if tall else x
                for _ in range(ns_steps):
                    gram = x @ x.T
                    x = a * x + (b * gram + c * gram @ gram) @ x
                p.sub_(self.param_groups[0]["lr"] * (x.T if tall else x).reshape(p.shape))

    return Muon()


register_optimizer(OptimizerKind(MuonSpec, _build_muon, _muon_twin))


# --------------------------------------------------------------------------- per-parameter hyperparameters
def parameter_hyper(
    spec, model: Module, steps_per_epoch: int = 1, base_scale: dict[str, float] | None = None
) -> dict[str, Hyper]:
    """Each trainable parameter's hyperparameters: by default weight matrices and kernels take the
    optimizer's ``weight_decay``/``l2`` and biases and batch-norm parameters none; the first
    ``optimizer.groups`` entry whose pattern matches a name overrides that. ``base_scale`` multiplies
    a parameter's learning rate before its group's ``lr_scale`` does (Muon's fallback_lr / lr)."""
    decay, l2 = getattr(spec, "weight_decay", 0.0), getattr(spec, "l2", 0.0)
    flags = {name: decays for name, (trainable, decays) in model.parameter_flags().items() if trainable}
    for index, group in enumerate(spec.groups):
        where = f"optimizer.groups.{index}"
        if group.weight_decay is not None and not hasattr(spec, "weight_decay"):
            raise ConfigError(f"{where}.weight_decay: {spec.name} has no decoupled weight decay; use l2 (or adamw)")
        if group.l2 is not None and not hasattr(spec, "l2"):
            raise ConfigError(f"{where}.l2: {spec.name} has no L2 penalty; use weight_decay")
        _matching(group.params, flags, f"{where}.params")
    hyper = {}
    for name, decays in flags.items():
        group = next((g for g in spec.groups if _matches(g.params, name)), None)
        default_decay, default_l2 = (decay, l2) if decays else (0.0, 0.0)
        hyper[name] = Hyper(
            lr_scale=(group.lr_scale if group else 1.0) * (base_scale or {}).get(name, 1.0),
            weight_decay=group.weight_decay if group and group.weight_decay is not None else default_decay,
            l2=group.l2 if group and group.l2 is not None else default_l2,
            until_step=round(group.epochs * steps_per_epoch) if group and group.epochs is not None else None,
        )
        if spec.lr * hyper[name].lr_scale * hyper[name].weight_decay >= 1.0:
            raise ConfigError(f"optimizer.groups: lr * lr_scale * weight_decay must be below 1 for {name}")
    return hyper


def _matches(patterns: str | list[str], name: str) -> bool:
    """Whether the dotted ``name`` matches a shell-style pattern of ``patterns`` (one or a list)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ([patterns] if isinstance(patterns, str) else patterns))


def _matching(patterns: str | list[str], names, where: str) -> set[str]:
    """The ``names`` that ``patterns`` match; none is a config error at ``where`` that shows some names."""
    chosen = {name for name in names if _matches(patterns, name)}
    if not chosen:
        shown = ", ".join(list(names)[:6])
        raise ConfigError(f"{where}: {patterns!r} matches no trainable parameter (names look like {shown}, ...)")
    return chosen


def _trainable_shapes(model: Module) -> dict[str, tuple[int, ...]]:
    """Dotted name -> shape of every trainable parameter."""
    flags = model.parameter_flags()
    return {name: value.shape for name, value in model.params.items() if flags[name][0]}


def orthogonalized_names(spec, model: Module) -> set[str]:
    """The trainable weights that take Muon's orthogonalised update: those ``optimizer.orthogonalize``
    names (each must be 2-D or more), or by default every convolution kernel (the 4-D ones)."""
    shapes = _trainable_shapes(model)
    if spec.orthogonalize is None:
        return {name for name, shape in shapes.items() if len(shape) == 4}
    chosen = _matching(spec.orthogonalize, shapes, "optimizer.orthogonalize")
    flat = sorted(name for name in chosen if len(shapes[name]) < 2)
    if flat:
        raise ConfigError(
            f"optimizer.orthogonalize: only weights of 2 or more dimensions can be orthogonalised, not {', '.join(flat)}"
        )
    return chosen
