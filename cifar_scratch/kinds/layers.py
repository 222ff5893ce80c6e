"""Layer kinds: one record each, the one place a kind of layer is declared.

A record (:class:`LayerKind`) ties together what a config's ``{type: NAME, ...}`` means:

- ``options``: the validated options, a :class:`LayerOptions` model whose ``type`` literal is the
  kind's name (unknown keys, wrong types and out-of-range values are one-line config errors);
- ``module``: the engine's module, called with the options as keywords (``type`` and ``trainable``
  aside); ``None`` for the containers, which the builder assembles from their children;
- ``examples``: (options, per-sample input shape) pairs that ``cifar-scratch gradcheck`` checks the
  kind on, odd and non-square;
- ``torch``: optionally, its PyTorch twin for ``--against torch``: ``twin(torch, layer, params,
  dtype) -> (torch module, [(our parameter or buffer name, torch tensor, to_ours)])``, ``params``
  the layer's parameters as torch tensors and ``to_ours`` turning a torch tensor (a weight, or its
  gradient) into our layout;
- ``onnx``: optionally, how ``cifar-scratch export`` writes it: ``onnx(graph, layer, x) -> y``, adding
  nodes to an :class:`~cifar_scratch.inference.export.OnnxGraph` from input tensor ``x`` (images NCHW
  as ONNX has them: ``graph.nchw(x)``) and returning the output tensor's name;
- ``user``: the user's class, for a kind named by file or module (:mod:`cifar_scratch.kinds.user`).

The config's layer union, ``gradcheck --layer``, the builder and the PyTorch reference all read
:data:`LAYER_KINDS`. :func:`register_layer` adds a kind (the built-in ones below, and a test's own);
the config accepts it from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import BeforeValidator, Field

from cifar_scratch.nn import layers as L
from cifar_scratch.nn.shapes import resolve_padding
from cifar_scratch.options import Float, Init, Kinds, NonNegInt, PosInt, Section, kind_name


class LayerOptions(Section):
    """What every layer kind takes; a kind's options subclass this and add ``type: Literal["name"]``."""

    trainable: Union[bool, list[str]] = Field(
        True,
        description="false: freeze every parameter of this layer (and, for a block, inside it); a list of "
        "parameter names: only those train (batchnorm with trainable: [bias] keeps its scale at 1).",
    )


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer: its options, its module, its gradcheck examples and its PyTorch twin (see the module docstring)."""

    options: type[LayerOptions]
    module: Callable[..., L.Module] | None
    examples: tuple[tuple[dict, tuple[int, ...]], ...] = ()
    torch: Callable | None = None
    onnx: Callable | None = None
    user: type | None = None

    @property
    def name(self) -> str:
        return kind_name(self.options, "type")

    def build(self, options: LayerOptions) -> L.Module:
        """The module for validated ``options``."""
        return self.module(**options.model_dump(exclude={"type", "trainable"}))


#: Every layer kind by name, in the order registered; configs accept ``{type: <its name>, ...}``.
LAYER_KINDS: Kinds = Kinds("a layer", "type", "refresh_layer_kinds")
unregister_layer, layer_union = LAYER_KINDS.unregister, LAYER_KINDS.union


def register_layer(kind: LayerKind) -> LayerKind:
    """Add a layer kind (:meth:`Kinds.register`); a built-in kind must bring a gradcheck example."""
    if not kind.examples and kind.user is None:  # a user's layer may leave its examples to gradcheck's defaults
        raise ValueError(f"{kind.name}: a layer kind needs at least one gradcheck example")
    return LAYER_KINDS.register(kind)


def bare_layer_names(value: Any) -> Any:
    """``- relu`` is shorthand for ``- {type: relu}``."""
    if isinstance(value, list):
        return [{"type": item} if isinstance(item, str) else item for item in value]
    return value


def _plain(t):
    return t.detach().numpy().copy()


def _weights_and_bias(torch, layer, params, module, weight_to_torch, weight_to_ours):
    """Copy ``weight`` (and ``bias``) into a torch module; -> the (name, tensor, to_ours) mapping."""
    with torch.no_grad():
        module.weight.copy_(weight_to_torch(params["weight"]))
        if layer.use_bias:
            module.bias.copy_(params["bias"])
    return [("weight", module.weight, weight_to_ours)] + ([("bias", module.bias, _plain)] if layer.use_bias else [])


def _simple(make):
    """A twin without parameters: ``make(nn, layer) -> torch module``."""
    return lambda torch, layer, params, dtype: (make(torch.nn, layer), [])


# --------------------------------------------------------------------------- ONNX (cifar-scratch export)
def _onnx_simple(op: str, **attributes):
    """A layer that is one ONNX operator of its input, in any layout."""
    return lambda graph, layer, x: graph.add(op, [x], **attributes)


def _onnx_dense(graph, layer, x):
    inputs = [x, graph.constant("weight", layer.params["weight"])]
    if layer.use_bias:
        inputs.append(graph.constant("bias", layer.params["bias"]))
    return graph.add("Gemm", inputs, layout="flat")


def _onnx_flatten(graph, layer, x):
    if len(layer.input_shape) == 3:
        x = graph.nhwc(x)  # our flatten reads pixels channel-last
    return graph.add("Flatten", [x], axis=1, layout="flat")


def _onnx_conv(graph, layer, x):
    (top, bottom), (left, right) = (
        resolve_padding(layer.padding, layer.kernel[a], layer.stride[a], layer.input_shape[a]) for a in (0, 1)
    )
    inputs = [graph.nchw(x), graph.constant("weight", layer.params["weight"].transpose(3, 2, 0, 1))]
    if layer.use_bias:
        inputs.append(graph.constant("bias", layer.params["bias"]))
    return graph.add("Conv", inputs, kernel_shape=list(layer.kernel), strides=list(layer.stride), pads=[top, left, bottom, right])


def _onnx_pool(op: str):
    return lambda graph, layer, x: graph.add(op, [graph.nchw(x)], kernel_shape=list(layer.size), strides=list(layer.stride))


def _onnx_global_pool(op: str):
    return lambda graph, layer, x: graph.add("Flatten", [graph.add(op, [graph.nchw(x)])], axis=1, layout="flat")


def _onnx_batchnorm(graph, layer, x):
    channels = layer.buffers["running_mean"].shape[0]
    ones, zeros = np.ones(channels, np.float32), np.zeros(channels, np.float32)
    inputs = [
        graph.nchw(x) if len(layer.input_shape) == 3 else x,
        graph.constant("weight", layer.params.get("weight", ones)),
        graph.constant("bias", layer.params.get("bias", zeros)),
        graph.constant("running_mean", layer.buffers["running_mean"]),
        graph.constant("running_var", layer.buffers["running_var"]),
    ]
    return graph.add("BatchNormalization", inputs, epsilon=float(layer.eps))


def _onnx_scale(graph, layer, x):
    return graph.add("Mul", [x, graph.constant("factor", np.array(layer.factor, np.float32))])


def _onnx_gelu(graph, layer, x):
    return graph.add("Gelu", [x], approximate=layer.approximate)


# --------------------------------------------------------------------------- dense
class DenseSpec(LayerOptions):
    type: Literal["dense"]
    units: Optional[PosInt] = Field(None, description="Output features; may be omitted on the last layer (= number of classes).")
    bias: bool = Field(True, description="Add a trained bias (units,).")
    init: Init = Field("he_normal", description="Initialisation of the weight (fan-in / fan-out based).")


def _dense_twin(torch, layer, params, dtype):
    linear = torch.nn.Linear(layer.input_shape[0], layer.units, bias=layer.use_bias, dtype=dtype)
    return linear, _weights_and_bias(torch, layer, params, linear, lambda w: w.T, lambda t: t.detach().numpy().T.copy())


register_layer(
    LayerKind(DenseSpec, L.Dense, (({"units": 5}, (7,)), ({"units": 3, "bias": False}, (4,))), _dense_twin, _onnx_dense)
)


# --------------------------------------------------------------------------- shape and activations
class FlattenSpec(LayerOptions):
    type: Literal["flatten"]


def _flatten_twin(torch, layer, params, dtype):
    class NHWC(torch.nn.Module):  # our flatten reads pixels channel-last: permute before flattening
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    return (torch.nn.Sequential(NHWC(), torch.nn.Flatten()) if len(layer.input_shape) == 3 else torch.nn.Flatten()), []


register_layer(LayerKind(FlattenSpec, L.Flatten, (({}, (3, 5, 2)),), _flatten_twin, _onnx_flatten))


class ReLUSpec(LayerOptions):
    type: Literal["relu"]


register_layer(LayerKind(ReLUSpec, L.ReLU, (({}, (3, 5, 2)),), _simple(lambda nn, layer: nn.ReLU()), _onnx_simple("Relu")))


class LeakyReLUSpec(LayerOptions):
    type: Literal["leaky_relu"]
    alpha: Float = Field(0.01, ge=0.0, le=1.0, description="Slope for negative inputs.")


register_layer(
    LayerKind(
        LeakyReLUSpec,
        L.LeakyReLU,
        (({"alpha": 0.1}, (3, 5, 2)),),
        _simple(lambda nn, layer: nn.LeakyReLU(layer.alpha)),
        lambda graph, layer, x: graph.add("LeakyRelu", [x], alpha=float(layer.alpha)),
    )
)


class TanhSpec(LayerOptions):
    type: Literal["tanh"]


register_layer(LayerKind(TanhSpec, L.Tanh, (({}, (3, 5, 2)),), _simple(lambda nn, layer: nn.Tanh()), _onnx_simple("Tanh")))


class SigmoidSpec(LayerOptions):
    type: Literal["sigmoid"]


register_layer(
    LayerKind(SigmoidSpec, L.Sigmoid, (({}, (3, 5, 2)),), _simple(lambda nn, layer: nn.Sigmoid()), _onnx_simple("Sigmoid"))
)


class GELUSpec(LayerOptions):
    type: Literal["gelu"]
    approximate: Literal["tanh", "none"] = Field(
        "tanh",
        description="tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); none: x Phi(x), the erf form "
        "(PyTorch's default; erf from Abramowitz & Stegun 7.1.26, within 1.5e-7).",
    )


register_layer(
    LayerKind(
        GELUSpec,
        L.GELU,
        (({}, (3, 5, 2)), ({"approximate": "none"}, (3, 5, 2))),
        _simple(lambda nn, layer: nn.GELU(approximate=layer.approximate)),
        _onnx_gelu,
    )
)


class DropoutSpec(LayerOptions):
    type: Literal["dropout"]
    rate: Float = Field(
        0.5, ge=0.0, lt=1.0, description="Share of units zeroed in training (inverted dropout: the rest are scaled up)."
    )


register_layer(
    LayerKind(
        DropoutSpec,
        L.Dropout,
        (({"rate": 0.3}, (11,)),),
        _simple(lambda nn, layer: nn.Dropout(layer.rate)),
        _onnx_simple("Identity"),  # exported for inference: dropout is off
    )
)


class ScaleSpec(LayerOptions):
    type: Literal["scale"]
    factor: Float = Field(description="Constant multiplier, e.g. of the logits (airbench multiplies them by 1/8).")


def _scale_twin(torch, layer, params, dtype):
    class Scale(torch.nn.Module):
        def forward(self, x):
            return x * layer.factor

    return Scale(), []


register_layer(
    LayerKind(ScaleSpec, L.Scale, (({"factor": 0.125}, (3, 5, 2)), ({"factor": -2.0}, (7,))), _scale_twin, _onnx_scale)
)


# --------------------------------------------------------------------------- convolution and pooling
Size = Union[PosInt, tuple[PosInt, PosInt]]


class Conv2DSpec(LayerOptions):
    type: Literal["conv2d"]
    filters: PosInt = Field(description="Output channels.")
    kernel: Size = Field(3, description="Square size, or [height, width].")
    stride: Size = Field(1, description="Step between windows, or [vertical, horizontal].")
    padding: Union[Literal["same", "valid"], NonNegInt] = Field(
        "same", description="same: output = ceil(input / stride), as Keras; valid: no padding; N: N pixels on every side."
    )
    bias: bool = Field(True, description="Add a trained bias (filters,).")
    init: Literal[Init, "dirac", "dirac_partial", "whiten"] = Field(
        "he_normal",
        description="dirac: identity (centre tap passes channel c to filter c), all other weights 0, as "
        "torch.nn.init.dirac_; dirac_partial: the identity on the first min(C, F) filters and PyTorch's default "
        "uniform init on the others, as airbench; whiten: the "
        "eigenvectors of the training images' patches over the square roots of their eigenvalues (airbench's first "
        "layer; filters = 2 x kernel area x channels, the negated filters included), from a seeded sample.",
    )


def _conv_twin(torch, layer, params, dtype):
    shape = layer.input_shape
    (top, bottom), (left, right) = (resolve_padding(layer.padding, layer.kernel[a], layer.stride[a], shape[a]) for a in (0, 1))
    conv = torch.nn.Conv2d(shape[2], layer.filters, layer.kernel, layer.stride, bias=layer.use_bias, dtype=dtype)
    mapping = _weights_and_bias(
        torch, layer, params, conv, lambda w: w.permute(3, 2, 0, 1), lambda t: t.detach().permute(2, 3, 1, 0).numpy().copy()
    )
    padded = (top, bottom, left, right) != (0, 0, 0, 0)
    return (torch.nn.Sequential(torch.nn.ZeroPad2d((left, right, top, bottom)), conv) if padded else conv), mapping


register_layer(
    LayerKind(
        Conv2DSpec,
        L.Conv2D,
        (
            ({"filters": 4, "kernel": 3}, (5, 7, 3)),
            ({"filters": 3, "kernel": [2, 3], "stride": 2, "padding": "same"}, (7, 6, 2)),
            ({"filters": 3, "kernel": 3, "stride": 2, "padding": "valid"}, (7, 8, 2)),
            ({"filters": 4, "kernel": 3, "padding": "valid"}, (6, 7, 2)),
            ({"filters": 3, "kernel": 3, "padding": 2, "bias": False}, (4, 5, 2)),
            ({"filters": 5, "kernel": 1}, (3, 4, 3)),
            ({"filters": 3, "kernel": 2, "stride": [1, 2], "padding": 1, "init": "dirac"}, (5, 6, 3)),
        ),
        _conv_twin,
        _onnx_conv,
    )
)


class MaxPool2DSpec(LayerOptions):
    type: Literal["maxpool2d"]
    size: Size = Field(2, description="Window side, or [height, width]; windows that do not fit are dropped.")
    stride: Optional[Size] = Field(None, description="Defaults to size (non-overlapping windows).")


register_layer(
    LayerKind(
        MaxPool2DSpec,
        L.MaxPool2D,
        (({"size": 2}, (5, 7, 3)), ({"size": 3, "stride": 2}, (7, 6, 2)), ({"size": [2, 3]}, (4, 6, 3))),
        _simple(lambda nn, layer: nn.MaxPool2d(layer.size, layer.stride)),
        _onnx_pool("MaxPool"),
    )
)


class AvgPool2DSpec(LayerOptions):
    type: Literal["avgpool2d"]
    size: Size = Field(2, description="Window side, or [height, width]; windows that do not fit are dropped.")
    stride: Optional[Size] = Field(None, description="Defaults to size (non-overlapping windows).")


register_layer(
    LayerKind(
        AvgPool2DSpec,
        L.AvgPool2D,
        (({"size": 2}, (5, 7, 3)), ({"size": [2, 3], "stride": 1}, (4, 5, 2))),
        _simple(lambda nn, layer: nn.AvgPool2d(layer.size, layer.stride)),
        _onnx_pool("AveragePool"),
    )
)


class GlobalAvgPoolSpec(LayerOptions):
    type: Literal["global_avgpool"]


register_layer(
    LayerKind(
        GlobalAvgPoolSpec,
        L.GlobalAvgPool,
        (({}, (3, 5, 4)),),
        _simple(lambda nn, layer: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
        _onnx_global_pool("GlobalAveragePool"),
    )
)


class GlobalMaxPoolSpec(LayerOptions):
    type: Literal["global_maxpool"]


register_layer(
    LayerKind(
        GlobalMaxPoolSpec,
        L.GlobalMaxPool,
        (({}, (3, 5, 4)),),
        _simple(lambda nn, layer: nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())),
        _onnx_global_pool("GlobalMaxPool"),
    )
)


# --------------------------------------------------------------------------- normalisation
class BatchNormSpec(LayerOptions):
    type: Literal["batchnorm"]
    momentum: Float = Field(
        0.1, gt=0.0, le=1.0, description="PyTorch convention: running = (1 - m) running + m batch (Keras 0.99 = 0.01 here)."
    )
    eps: Float = Field(1e-5, gt=0.0, le=1.0, description="Added to the variance before its square root.")
    affine: bool = Field(True, description="Learn a scale (weight) and shift (bias) per channel.")


def _batchnorm_twin(torch, layer, params, dtype):
    shape = layer.input_shape
    kind = torch.nn.BatchNorm2d if len(shape) == 3 else torch.nn.BatchNorm1d
    bn = kind(shape[-1], eps=layer.eps, momentum=layer.momentum, affine=layer.affine, dtype=dtype)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(layer.buffers["running_mean"]))
        bn.running_var.copy_(torch.tensor(layer.buffers["running_var"]))
        if layer.affine:
            bn.weight.copy_(params["weight"])
            bn.bias.copy_(params["bias"])
    mapping = [("running_mean", bn.running_mean, _plain), ("running_var", bn.running_var, _plain)]
    if layer.affine:
        mapping += [("weight", bn.weight, _plain), ("bias", bn.bias, _plain)]
    return bn, mapping


register_layer(
    LayerKind(
        BatchNormSpec,
        L.BatchNorm,
        (({}, (3, 5, 4)), ({}, (7,)), ({"affine": False}, (3, 4, 2))),
        _batchnorm_twin,
        _onnx_batchnorm,
    )
)


# --------------------------------------------------------------------------- blocks
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=60)]


class SequentialSpec(LayerOptions):
    type: Literal["sequential"]
    trainable: bool = Field(True, description="false: freeze every parameter inside the block.")
    name: Optional[ModuleName] = Field(
        None, description="Name in parameter paths (stage1.residual1.conv2d1.weight); default sequential<n>."
    )
    layers: Annotated[list[LayerSpec], BeforeValidator(bare_layer_names)] = Field(
        min_length=1, description="The layers inside the block, in order."
    )


class ResidualSpec(LayerOptions):
    type: Literal["residual"]
    trainable: bool = Field(True, description="false: freeze every parameter inside the block.")
    name: Optional[ModuleName] = Field(None, description="Name in parameter paths; default residual<n>.")
    layers: Annotated[list[LayerSpec], BeforeValidator(bare_layer_names)] = Field(
        min_length=1, description="The layers inside the block, in order."
    )
    shortcut: Literal["auto", "identity", "conv"] = Field(
        "auto", description="auto: identity when the block keeps the shape, else a strided 1x1 convolution."
    )


#: The blocks, whose modules the builder assembles from their children's.
CONTAINER_SPECS = (SequentialSpec, ResidualSpec)

register_layer(
    LayerKind(
        SequentialSpec,
        None,
        (({"layers": [{"type": "conv2d", "filters": 3}, "relu", {"type": "conv2d", "filters": 2}]}, (5, 6, 2)),),
    )
)
register_layer(
    LayerKind(
        ResidualSpec,
        None,
        (
            ({"layers": [{"type": "conv2d", "filters": 3}, "relu", {"type": "conv2d", "filters": 3}]}, (5, 6, 3)),
            (
                {
                    "layers": [
                        {"type": "conv2d", "filters": 4, "stride": 2},
                        "batchnorm",
                        "gelu",
                        {"type": "conv2d", "filters": 4},
                    ]
                },
                (7, 6, 2),
            ),
            ({"layers": [{"type": "conv2d", "filters": 3}], "shortcut": "conv"}, (4, 5, 3)),
        ),
    )
)

#: A layer's options, whichever its kind: the union of every registered kind's, told apart by ``type``.
LayerSpec = layer_union()
SequentialSpec.model_rebuild()
ResidualSpec.model_rebuild()
