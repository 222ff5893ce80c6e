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
from cifar_scratch.nn.conv import resolve_padding
from cifar_scratch.nn.model import Sequential


def import_torch():
    try:
        import torch
    except ImportError:
        raise UserError("--against torch needs PyTorch: pip install torch==2.13.0 (or pip install -e '.[torch]')") from None
    return torch


def build_torch_model(model: Sequential):
    """-> (torch.nn.Sequential in float32, {our dotted name: (torch parameter or buffer, to_ours)}).

    ``to_ours(tensor)`` turns a torch tensor (a weight or its gradient) into our layout as a NumPy array.
    """
    torch = import_torch()
    nn = torch.nn
    modules, names = [], {}
    shape = model.input_shape

    def add(module, layer=None, mapping=()):
        modules.append(module)
        for ours, theirs, to_ours in mapping:
            names[f"{layer.name}.{ours}"] = (theirs, to_ours)

    plain = lambda t: t.detach().numpy().copy()  # noqa: E731
    for layer, out_shape in zip(model.layers, model.output_shapes):
        p = {k: torch.tensor(v, dtype=torch.float32) for k, v in layer.params.items()}
        if isinstance(layer, L.Dense):
            linear = nn.Linear(shape[0], layer.units, bias=layer.use_bias)
            with torch.no_grad():
                linear.weight.copy_(p["weight"].T)
                if layer.use_bias:
                    linear.bias.copy_(p["bias"])
            mapping = [("weight", linear.weight, lambda t: t.detach().numpy().T.copy())]
            if layer.use_bias:
                mapping.append(("bias", linear.bias, plain))
            add(linear, layer, mapping)
        elif isinstance(layer, L.Flatten):
            if len(shape) == 3:
                add(_Permute(torch, (0, 2, 3, 1)))
            add(nn.Flatten())
        elif isinstance(layer, L.Conv2D):
            (top, bottom), (left, right) = (
                resolve_padding(layer.padding, layer.kernel[a], layer.stride[a], shape[a]) for a in (0, 1)
            )
            if (top, bottom, left, right) != (0, 0, 0, 0):
                add(nn.ZeroPad2d((left, right, top, bottom)))
            conv = nn.Conv2d(shape[2], layer.filters, layer.kernel, layer.stride, bias=layer.use_bias)
            with torch.no_grad():
                conv.weight.copy_(p["weight"].permute(3, 2, 0, 1))
                if layer.use_bias:
                    conv.bias.copy_(p["bias"])
            mapping = [("weight", conv.weight, lambda t: t.detach().permute(2, 3, 1, 0).numpy().copy())]
            if layer.use_bias:
                mapping.append(("bias", conv.bias, plain))
            add(conv, layer, mapping)
        elif isinstance(layer, L.MaxPool2D):
            add(nn.MaxPool2d(layer.size, layer.stride))
        elif isinstance(layer, L.AvgPool2D):
            add(nn.AvgPool2d(layer.size, layer.stride))
        elif isinstance(layer, L.GlobalAvgPool):
            add(nn.AdaptiveAvgPool2d(1))
            add(nn.Flatten())
        elif isinstance(layer, L.GlobalMaxPool):
            add(nn.AdaptiveMaxPool2d(1))
            add(nn.Flatten())
        elif isinstance(layer, L.BatchNorm):
            kind = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            bn = kind(shape[-1], eps=layer.eps, momentum=layer.momentum, affine=layer.affine)
            with torch.no_grad():
                bn.running_mean.copy_(torch.tensor(layer.buffers["running_mean"]))
                bn.running_var.copy_(torch.tensor(layer.buffers["running_var"]))
                if layer.affine:
                    bn.weight.copy_(p["weight"])
                    bn.bias.copy_(p["bias"])
            mapping = [("running_mean", bn.running_mean, plain), ("running_var", bn.running_var, plain)]
            if layer.affine:
                mapping += [("weight", bn.weight, plain), ("bias", bn.bias, plain)]
            add(bn, layer, mapping)
        elif isinstance(layer, L.ReLU):
            add(nn.ReLU())
        elif isinstance(layer, L.LeakyReLU):
            add(nn.LeakyReLU(layer.alpha))
        elif isinstance(layer, L.Tanh):
            add(nn.Tanh())
        elif isinstance(layer, L.Sigmoid):
            add(nn.Sigmoid())
        elif isinstance(layer, L.GELU):
            add(nn.GELU(approximate="tanh"))
        elif isinstance(layer, L.Dropout):
            add(nn.Dropout(layer.rate))
        else:
            raise UserError(f"{layer.name}: no PyTorch equivalent is defined for {type(layer).__name__}")
        shape = out_shape
    return nn.Sequential(*modules), names


def _Permute(torch, dims):
    class Permute(torch.nn.Module):
        def forward(self, x):
            return x.permute(*dims)

    return Permute()


def to_torch_input(x: np.ndarray):
    """NHWC (or flat) NumPy batch -> contiguous NCHW float32 tensor."""
    torch = import_torch()
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
