"""The same model in PyTorch, with identical weights: the reference for ``gradcheck --against torch``
and ``benchmark --against torch``. PyTorch is an optional extra (``pip install torch==2.13.0``) and
is imported only here, never by the engine.

Our tensors are NHWC; PyTorch's are NCHW. The torch model takes NCHW input; a flatten is preceded
by a permute to NHWC so that dense weights line up element for element.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.errors import UserError
from cifar_scratch.nn import layers as L
from cifar_scratch.nn.model import Residual, Sequential
from cifar_scratch.nn.shapes import resolve_padding


def import_torch():
    try:
        import torch
    except ImportError:
        raise UserError("--against torch needs PyTorch: pip install torch==2.13.0 (or pip install -e '.[torch]')") from None
    return torch


def build_torch_model(model: Sequential, dtype=np.float32):
    """-> (torch module in ``dtype`` (float32 or float64), {our dotted name: (torch parameter or buffer, to_ours)}).

    ``to_ours(tensor)`` turns a torch tensor (a weight or its gradient) into our layout as a NumPy array.
    Containers map to ``nn.Sequential`` and to a residual module that adds its shortcut.
    """
    torch = import_torch()
    names: dict = {}
    return _torch_module(torch, model, "", names, _torch_dtype(torch, dtype)), names


def _torch_dtype(torch, dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def _torch_module(torch, module, prefix: str, names: dict, dtype):
    nn = torch.nn
    children = lambda parent: (_torch_module(torch, c, f"{prefix}{c.name}.", names, dtype) for c in parent.layers)  # noqa: E731
    if isinstance(module, Residual):
        shortcut = _torch_module(torch, module.shortcut, f"{prefix}shortcut.", names, dtype) if module.shortcut else nn.Identity()
        return _ResidualModule(torch)(nn.Sequential(*children(module)), shortcut)
    if isinstance(module, Sequential):
        return nn.Sequential(*children(module))
    return _torch_leaf(torch, module, prefix, names, dtype)


def _torch_leaf(torch, layer, prefix: str, names: dict, dtype):
    nn = torch.nn
    shape = layer.input_shape
    p = {k: torch.tensor(v, dtype=dtype) for k, v in layer.params.items()}
    plain = lambda t: t.detach().numpy().copy()  # noqa: E731

    def mapped(module, mapping):
        for ours, theirs, to_ours in mapping:
            names[f"{prefix}{ours}"] = (theirs, to_ours)
        return module

    if isinstance(layer, L.Dense):
        linear = nn.Linear(shape[0], layer.units, bias=layer.use_bias, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(p["weight"].T)
            if layer.use_bias:
                linear.bias.copy_(p["bias"])
        mapping = [("weight", linear.weight, lambda t: t.detach().numpy().T.copy())]
        if layer.use_bias:
            mapping.append(("bias", linear.bias, plain))
        return mapped(linear, mapping)
    if isinstance(layer, L.Flatten):
        return nn.Sequential(_Permute(torch, (0, 2, 3, 1)), nn.Flatten()) if len(shape) == 3 else nn.Flatten()
    if isinstance(layer, L.Conv2D):
        (top, bottom), (left, right) = (
            resolve_padding(layer.padding, layer.kernel[a], layer.stride[a], shape[a]) for a in (0, 1)
        )
        conv = nn.Conv2d(shape[2], layer.filters, layer.kernel, layer.stride, bias=layer.use_bias, dtype=dtype)
        with torch.no_grad():
            conv.weight.copy_(p["weight"].permute(3, 2, 0, 1))
            if layer.use_bias:
                conv.bias.copy_(p["bias"])
        mapping = [("weight", conv.weight, lambda t: t.detach().permute(2, 3, 1, 0).numpy().copy())]
        if layer.use_bias:
            mapping.append(("bias", conv.bias, plain))
        mapped(conv, mapping)
        return (
            nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv) if (top, bottom, left, right) != (0, 0, 0, 0) else conv
        )
    if isinstance(layer, L.BatchNorm):
        kind = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        bn = kind(shape[-1], eps=layer.eps, momentum=layer.momentum, affine=layer.affine, dtype=dtype)
        with torch.no_grad():
            bn.running_mean.copy_(torch.tensor(layer.buffers["running_mean"]))
            bn.running_var.copy_(torch.tensor(layer.buffers["running_var"]))
            if layer.affine:
                bn.weight.copy_(p["weight"])
                bn.bias.copy_(p["bias"])
        mapping = [("running_mean", bn.running_mean, plain), ("running_var", bn.running_var, plain)]
        if layer.affine:
            mapping += [("weight", bn.weight, plain), ("bias", bn.bias, plain)]
        return mapped(bn, mapping)
    simple = {
        L.MaxPool2D: lambda: nn.MaxPool2d(layer.size, layer.stride),
        L.AvgPool2D: lambda: nn.AvgPool2d(layer.size, layer.stride),
        L.GlobalAvgPool: lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        L.GlobalMaxPool: lambda: nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten()),
        L.ReLU: lambda: nn.ReLU(),
        L.LeakyReLU: lambda: nn.LeakyReLU(layer.alpha),
        L.Tanh: lambda: nn.Tanh(),
        L.Sigmoid: lambda: nn.Sigmoid(),
        L.GELU: lambda: nn.GELU(approximate=layer.approximate),
        L.Dropout: lambda: nn.Dropout(layer.rate),
    }
    if isinstance(layer, L.Scale):
        return _ScaleModule(torch)(layer.factor)
    if type(layer) not in simple:
        raise UserError(f"{prefix.rstrip('.')}: no PyTorch equivalent is defined for {type(layer).__name__}")
    return simple[type(layer)]()


def _ScaleModule(torch):
    class ScaleModule(torch.nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    return ScaleModule


def _ResidualModule(torch):
    class ResidualModule(torch.nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + self.shortcut(x)

    return ResidualModule


def _Permute(torch, dims):
    class Permute(torch.nn.Module):
        def forward(self, x):
            return x.permute(*dims)

    return Permute()


def to_torch_input(x: np.ndarray, dtype=np.float32):
    """NHWC (or flat) NumPy batch -> contiguous NCHW tensor of ``dtype``."""
    torch = import_torch()
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))


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
