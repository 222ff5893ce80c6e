"""The same model in PyTorch, with identical weights: the reference for ``gradcheck --against torch``
and ``benchmark --against torch``. PyTorch is an optional extra (``pip install torch==2.13.0``) and
is imported only here, never by the engine.

Our tensors are NHWC; PyTorch's are NCHW. The torch model takes NCHW input; a flatten is preceded
by a permute to NHWC so that dense weights line up element for element.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.errors import UserError
from cifar_scratch.kinds.layers import LAYER_KINDS
from cifar_scratch.nn.model import Residual, Sequential


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
    """A leaf layer's twin, from its kind's record (:data:`cifar_scratch.kinds.layers.LAYER_KINDS`)."""
    kind = LAYER_KINDS.get(layer.kind)
    if kind is None or kind.torch is None:
        raise UserError(f"{prefix.rstrip('.')}: no PyTorch twin is defined for the {layer.kind!r} layer kind")
    params = {k: torch.tensor(v, dtype=dtype) for k, v in layer.params.items()}
    module, mapping = kind.torch(torch, layer, params, dtype)
    for ours, theirs, to_ours in mapping:
        names[f"{prefix}{ours}"] = (theirs, to_ours)
    return module


def _ResidualModule(torch):
    class ResidualModule(torch.nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + self.shortcut(x)

    return ResidualModule


def to_torch_input(x: np.ndarray, dtype=np.float32):
    """NHWC (or flat) NumPy batch -> contiguous NCHW tensor of ``dtype``."""
    torch = import_torch()
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))
