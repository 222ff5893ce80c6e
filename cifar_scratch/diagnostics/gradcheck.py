"""``cifar-scratch gradcheck``: analytic gradients against central differences (float64) and,
optionally, against PyTorch (float32, or float64), per layer and end to end through the loss."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cifar_scratch.builders import build_loss, build_model, build_module, model_input_shape, num_classes
from cifar_scratch.config import ModelConfig, RunConfig
from cifar_scratch.errors import ConfigError, UsageError, UserError
from cifar_scratch.kinds import user
from cifar_scratch.kinds.layers import LAYER_KINDS
from cifar_scratch.nn.finite_differences import TensorCheck, check_layer, check_model
from cifar_scratch.nn.layers import Layer
from cifar_scratch.nn.model import Residual, Sequential


def make_layer(kind: str, options: dict):
    """A layer or block from a YAML-style spec, validated by the config schema."""
    return build_module(ModelConfig.model_validate({"layers": [{"type": kind, **options}]}).layers[0])


@dataclass
class TorchCheck:
    layer: str
    tensor: str
    shape: tuple[int, ...]
    max_abs_diff: float
    relative_diff: float  # max |ours - torch| / max |torch|


def check_layer_types(kinds: list[str], max_elements: int | None = None) -> list[TensorCheck]:
    """Each example of each layer type in isolation; rows are labelled ``kind[options] shape``. A user
    layer (``FILE.py:Class``, the file relative to the current folder) is loaded first."""
    kinds = [_user_kind(kind).name if user.is_reference(kind) else kind for kind in kinds]
    unknown = [k for k in kinds if k not in LAYER_KINDS]
    if unknown:
        raise UserError(f"--layer: unknown layer type {unknown[0]!r}; types: {', '.join(LAYER_KINDS)}")
    rows = []
    for kind in kinds:
        if not LAYER_KINDS[kind].examples:
            raise UsageError(
                f"--layer: {kind} has no input shape to be checked on: give its class examples = "
                "[({option: value}, (H, W, C))], or check it in a config"
            )
        for options, shape in LAYER_KINDS[kind].examples:
            layer = make_layer(kind, options)
            label = f"{kind}{_options_text(options)} {shape}"
            for row in check_layer(layer, shape, batch=3, max_elements=max_elements):
                row.layer = label
                rows.append(row)
    return rows


def _user_kind(reference: str):
    try:
        return user.user_layer_kind(user.absolute_reference(reference, Path.cwd()))
    except ValueError as exc:
        raise UsageError(f"--layer: {exc}") from None


def _options_text(options: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else ""


def _shrink(shape: tuple[int, ...], layer) -> tuple[int, ...]:
    """A small odd, non-square spatial size that the layer still accepts (per-layer checks only)."""
    if len(shape) != 3:
        return shape
    need = max(getattr(layer, "kernel", (1, 1)) + getattr(layer, "size", (1, 1)))
    return (min(shape[0], max(7, need + 2)), min(shape[1], max(6, need + 1)), shape[2])


def check_config_layers(config: RunConfig, only: str | None = None, max_elements: int | None = 20) -> list[TensorCheck]:
    """Every module of the config's model in isolation, at its place in the model (channels, options):
    each leaf layer, and each residual block as a whole (its sum and shortcut included)."""
    model = build_model(config.model, model_input_shape(config), num_classes(config), np.random.default_rng(0))
    wanted = _user_kind(only).user if only is not None and user.is_reference(only) else None
    rows = []
    for path, module in model.named_modules():
        checked = isinstance(module, (Layer, Residual))
        if checked and (only is None or module.kind == only or (wanted is not None and type(module) is wanted)):
            fresh = copy.deepcopy(module)  # same options; check_layer builds it again in float64
            fresh.name = f"{path} ({module.config_path})"
            rows += check_layer(fresh, _shrink(module.input_shape, fresh), batch=3, max_elements=max_elements)
    if only is not None and not rows:
        raise UserError(f"--layer: the config's model has no {only!r} layer")
    return rows


def small_model(config: RunConfig, dtype=np.float64, seed: int = 0) -> Sequential:
    """The config's model at the smallest input size it accepts, for the end-to-end check."""
    full = model_input_shape(config)
    for side in (8, 12, 16, 24, None):
        shape = full if side is None or side >= full[0] else (side, min(side + 1, full[1]), full[2])
        try:
            return build_model(config.model, shape, num_classes(config), np.random.default_rng(seed), dtype=dtype)
        except ConfigError:
            if side is None:
                raise
    raise AssertionError("unreachable")


def check_config_model(config: RunConfig, max_elements: int | None = 8, batch: int = 2) -> list[TensorCheck]:
    model = small_model(config)
    rng = np.random.default_rng(1)
    for value in model.params.values():
        if np.all(value == value.flat[0]):  # zero biases, unit scales: make every term of the backward pass count
            value += 0.1 * rng.standard_normal(value.shape)
    x = rng.standard_normal((batch, *model.input_shape))
    labels = rng.integers(0, num_classes(config), batch)
    return check_model(model, x, labels, build_loss(config), max_elements=max_elements)


def check_against_torch(config: RunConfig, batch: int = 8, seed: int = 0, dtype=np.float32) -> list[TorchCheck]:
    """Logits, loss and every gradient of our model against the same PyTorch model, both in ``dtype``.

    Both run in training mode (batch statistics in batch norm) with dropout switched off in both,
    so the comparison is deterministic. float32 checks the engine as it trains; float64 takes
    rounding out of the comparison, for models whose float32 results are ill-conditioned (a
    batch-norm eps of 1e-12 on near-constant channels magnifies rounding on both sides).
    """
    from cifar_scratch.diagnostics.torch_reference import build_torch_model, import_torch, to_torch_input
    from cifar_scratch.nn.reference import softmax_cross_entropy

    if config.loss.name != "cross_entropy":
        raise UserError(f"--against torch: compares through cross-entropy; this config's loss is {config.loss.name}")
    torch = import_torch()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    model = build_model(config.model, model_input_shape(config), num_classes(config), rng, dtype=dtype)
    for value in model.params.values():
        value += (0.05 * rng.standard_normal(value.shape)).astype(value.dtype)
    reference, names = build_torch_model(model, dtype)
    model.train()
    reference.train()
    for _, layer in model.named_modules():
        if layer.kind == "dropout":
            layer.training = False
    for module in reference.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    x = rng.standard_normal((batch, *model.input_shape)).astype(dtype)
    labels = rng.integers(0, num_classes(config), batch)
    logits = model.forward(x)
    loss, dlogits = softmax_cross_entropy(logits, labels, config.training.label_smoothing)
    dx = model.backward(dlogits)
    xt = to_torch_input(x, dtype).requires_grad_(True)
    logits_t = reference(xt)
    loss_t = torch.nn.functional.cross_entropy(
        logits_t, torch.from_numpy(labels), label_smoothing=config.training.label_smoothing
    )
    loss_t.backward()
    dx_t = xt.grad.numpy()
    if dx_t.ndim == 4:
        dx_t = dx_t.transpose(0, 2, 3, 1)
    rows = [
        _torch_row("model", "logits", logits, logits_t.detach().numpy()),
        _torch_row("model", "loss", np.array([loss]), np.array([loss_t.item()])),
        _torch_row("model", "input", dx, dx_t),
    ]
    grads = model.grads
    for name in model.params:
        tensor, to_ours = names[name]
        layer, _, part = name.rpartition(".")
        rows.append(_torch_row(layer, part, grads[name], to_ours(tensor.grad)))
    for name, value in model.buffers.items():
        tensor, to_ours = names[name]
        layer, _, part = name.rpartition(".")
        rows.append(_torch_row(layer, part, value, to_ours(tensor)))
    return rows


def _torch_row(layer: str, tensor: str, ours: np.ndarray, theirs: np.ndarray) -> TorchCheck:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    diff = float(np.abs(ours - theirs).max(initial=0.0))
    scale = float(np.abs(theirs).max(initial=0.0))
    return TorchCheck(layer, tensor, tuple(ours.shape), diff, diff / scale if scale > 0 else diff)


def run_checks(config: RunConfig | None, layer: str | None, max_elements: int, torch_dtype: str | None = None) -> dict[str, list]:
    """What ``cifar-scratch gradcheck`` checks, in the kernels now in use (:func:`cifar_scratch.nn.kernels.using`).

    Without a config: the examples of one layer kind (``layer``) or of all. With one: its layers one by one
    (only those of kind ``layer`` if given) and, when no kind is singled out, the whole model through the
    loss; with ``torch_dtype`` also the same model in PyTorch. -> ``{"layers": [...], "model": [...],
    "torch": [...]}``, the keys that were checked.
    """
    if config is None:
        if torch_dtype is not None:
            raise UsageError("--against torch compares a config's model: give a config")
        return {"layers": check_layer_types([layer] if layer else list(LAYER_KINDS), max_elements)}
    results: dict[str, list] = {"layers": check_config_layers(config, layer, max_elements)}
    if layer is None:
        results["model"] = check_config_model(config, max_elements=max(4, max_elements // 2))
    if torch_dtype is not None:
        results["torch"] = check_against_torch(config, dtype=torch_dtype)
    return results


def as_json(rows: list) -> list[dict]:
    return [asdict(row) for row in rows]
