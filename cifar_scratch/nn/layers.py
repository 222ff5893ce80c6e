"""Thin stateful layers over the pure kernels of :mod:`cifar_scratch.nn.reference` (or their fast
twins in :mod:`cifar_scratch.nn.fast`: :mod:`cifar_scratch.nn.kernels` says which run).

Each layer keeps ``params`` (trained), ``grads`` (same keys, filled by ``backward``) and
``buffers`` (saved but not trained). Shapes in docstrings exclude the batch dimension N
unless written out. A layer keeps only the cache of its latest forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from cifar_scratch.nn import kernels
from cifar_scratch.nn.fast.conv import Workspace
from cifar_scratch.nn.init import initialize, patch_moment, whitening
from cifar_scratch.nn.shapes import conv_geometry, pair, pool_geometry


@dataclass(frozen=True)
class LayerPlan:
    """A module's shapes for a given input, worked out without allocating anything.

    ``params``/``buffers``: dotted name -> shape (nested names for containers). ``activations`` and
    ``scratch``: values per sample that a training step holds (outputs; zero-bordered copies of convolution inputs, dropout masks).
    """

    output_shape: tuple[int, ...]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    buffers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    scratch: int = 0
    activations: int = -1  # -1: the output's size (a leaf); containers add up their children's

    def __post_init__(self):
        if self.activations < 0:
            object.__setattr__(self, "activations", math.prod(self.output_shape))


class Module:
    """What every layer and container has: a name, ``children()``, nested dotted names for parameters,
    gradients and buffers, a recursive train/eval mode, state dicts, and per-parameter flags.

    ``params`` (trained arrays), ``grads`` (same keys, filled by ``backward``) and ``buffers`` (saved,
    not trained) are the one way to read a module's arrays: dotted name -> array, for the module and
    everything below it (``stage2.residual1.conv2d1.weight``). A leaf holds them as its own dicts; a
    container gathers its children's. The arrays are the modules' own: update them in place.

    ``trainable = False`` freezes every parameter of the module and of its children. ``decays`` names
    the module's own parameters that weight decay and L2 apply to by default (weight matrices and
    kernels: never biases or batch-norm parameters). ``input_shape``/``output_shape`` are per sample,
    set by ``build``.
    """

    kind = "module"
    decays: tuple[str, ...] = ()
    #: Whether ``backward`` takes ``input_grad=False`` to skip the input gradient when nothing upstream
    #: needs it (then returning None): worth it where that gradient costs a GEMM (dense, conv2d, containers).
    skips_input_grad = False
    #: An activation function (its outputs are what per-layer health describes); a rectifier's units can
    #: die (never positive again), which health counts.
    activation = False
    rectifier = False

    def __init__(self) -> None:
        self.name = self.kind
        self.explicit_name = False  # a name given in the config, kept instead of kind + number
        self.config_path: str | None = None  # where in the config it comes from (model.layers.3), for messages
        self.training = True
        self.trainable = True
        self.frozen: set[str] = set()  # own parameters frozen while the others train (batch norm's scale, say)
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ tree
    def children(self) -> list[Module]:
        return []

    def local(self, what: str) -> dict[str, np.ndarray]:
        """This module's own ``params``, ``grads`` or ``buffers`` (not its children's)."""
        return {}

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted path, module) for this module and every descendant, depth first."""
        yield prefix, self
        for child in self.children():
            yield from child.named_modules(f"{prefix}.{child.name}" if prefix else child.name)

    def gather(self, what: str, prefix: str = "") -> dict[str, np.ndarray]:
        """Own and nested ``params``/``grads``/``buffers`` by dotted name; the arrays are the modules' own.
        (Read them as ``module.params`` etc.: a container's are this, gathered from its children.)"""
        out = {f"{prefix}{key}": value for key, value in self.local(what).items()}
        for child in self.children():
            out |= child.gather(what, f"{prefix}{child.name}.")
        return out

    def parameter_flags(self, prefix: str = "", frozen: bool = False) -> dict[str, tuple[bool, bool]]:
        """Dotted name -> (trainable, decays by default), for every parameter here and below."""
        frozen = frozen or not self.trainable
        out = {f"{prefix}{key}": (not frozen and key not in self.frozen, key in self.decays) for key in self.local("params")}
        for child in self.children():
            out |= child.parameter_flags(f"{prefix}{child.name}.", frozen)
        return out

    def train(self, mode: bool = True) -> Module:
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by dotted name (the module's own arrays, as in PyTorch)."""
        return {**self.gather("params"), **self.gather("buffers")}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the module's own; names and shapes must match exactly (ValueError otherwise)."""
        mine = self.state_dict()
        if set(mine) != set(state):
            missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
            raise ValueError(f"names differ: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, array in mine.items():
            if array.shape != state[name].shape:
                raise ValueError(f"{name}: shape {state[name].shape} does not match {array.shape}")
            array[...] = state[name]

    # ------------------------------------------------------------------ compute
    def plan(self, input_shape: tuple[int, ...]) -> LayerPlan:
        """Output, parameter and buffer shapes for per-sample ``input_shape``; ValueError if it does not fit."""
        return LayerPlan(tuple(input_shape))

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> tuple[int, ...]:
        """Create parameters for per-sample ``input_shape``; return the per-sample output shape."""
        self.input_shape = tuple(input_shape)
        self.output_shape = self.plan(self.input_shape).output_shape
        return self.output_shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the output -> gradient w.r.t. the input; fills ``grads``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class Layer(Module):
    """A leaf module: its own ``params`` (trained), ``grads`` (same keys, filled by ``backward``) and
    ``buffers`` (saved but not trained); it keeps the cache of its latest training forward pass until
    its backward pass uses it."""

    kind = "layer"

    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._cache = None

    def local(self, what: str) -> dict[str, np.ndarray]:
        return getattr(self, what)

    def _hold_cache(self, engine, cache) -> None:
        """Keep a forward pass's cache, and the kernels that made it, for the backward pass: in training
        only, since evaluation has no backward pass and a cache would keep its activations alive."""
        self._cache = (engine, cache) if self.training else None

    def _release_cache(self):
        """(kernels, cache) of the forward pass, dropped here: the layers after this one have already
        released theirs, so a backward pass holds only the caches it has yet to use (the first layers', the largest, last)."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward without a training forward pass before it")
        held, self._cache = self._cache, None
        return held


class Dense(Layer):
    """(N, D) -> (N, units). ``weight``: (D, units), ``bias``: (units,)."""

    kind = "dense"
    skips_input_grad = True
    decays = ("weight",)

    def __init__(self, units: int, bias: bool = True, init: str = "he_normal") -> None:
        super().__init__()
        self.units, self.use_bias, self.init = units, bias, init

    def plan(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.name}: expects flat input (D,), got {input_shape}; add a flatten layer before it")
        params = {"weight": (input_shape[0], self.units)} | ({"bias": (self.units,)} if self.use_bias else {})
        return LayerPlan((self.units,), params)

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        fan_in = input_shape[0]
        self.params["weight"] = initialize(self.init, (fan_in, self.units), fan_in, self.units, rng, dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.units, dtype=dtype)
        return self.output_shape

    def forward(self, x):
        K = kernels.active()
        out, cache = K.dense_forward(x, self.params["weight"], self.params.get("bias"))
        self._hold_cache(K, cache)
        return out

    def backward(self, dout, input_grad=True):
        K, cache = self._release_cache()
        dx, dweight, dbias = K.dense_backward(dout, cache, input_grad)
        self.grads["weight"] = dweight
        if self.use_bias:
            self.grads["bias"] = dbias
        return dx


class Flatten(Layer):
    """(N, *shape) -> (N, prod(shape))."""

    kind = "flatten"

    def plan(self, input_shape):
        return LayerPlan((math.prod(input_shape),))

    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape((dout.shape[0], *self.input_shape))


class _KernelLayer(Layer):
    """A parameter-free layer over a pure kernel pair, named by ``kernel_names``: (forward, backward), with
    ``forward(x, *options) -> (out, cache)`` and ``backward(dout, cache)``. Activations keep the input
    shape; pools define ``plan``."""

    kernel_names: tuple[str, str] = ("", "")

    def _options(self) -> tuple:
        return ()

    def forward(self, x):
        K = kernels.active()
        out, cache = getattr(K, self.kernel_names[0])(x, *self._options())
        self._hold_cache(K, cache)
        return out

    def backward(self, dout):
        K, cache = self._release_cache()
        return getattr(K, self.kernel_names[1])(dout, cache)


class ReLU(_KernelLayer):
    kind = "relu"
    activation = rectifier = True
    kernel_names = ("relu_forward", "relu_backward")


class LeakyReLU(_KernelLayer):
    kind = "leaky_relu"
    activation = rectifier = True
    kernel_names = ("leaky_relu_forward", "leaky_relu_backward")

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = alpha

    def _options(self):
        return (self.alpha,)


class Tanh(_KernelLayer):
    kind = "tanh"
    activation = True
    kernel_names = ("tanh_forward", "tanh_backward")


class Sigmoid(_KernelLayer):
    kind = "sigmoid"
    activation = True
    kernel_names = ("sigmoid_forward", "sigmoid_backward")


class Dropout(Layer):
    """Inverted dropout in training mode, identity in eval mode. Masks come from the run's generator."""

    kind = "dropout"

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__()
        self.rate = rate

    def plan(self, input_shape):
        return LayerPlan(tuple(input_shape), scratch=math.prod(input_shape))  # the mask

    def build(self, input_shape, rng, dtype=np.float32):
        self._rng = rng
        return super().build(input_shape, rng, dtype)

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            self._cache = None
            return x
        K = kernels.active()
        out, mask = K.dropout_forward(x, self.rate, self._rng)
        self._hold_cache(K, mask)
        return out

    def backward(self, dout):
        if self._cache is None:  # rate 0: the identity
            return dout
        K, mask = self._release_cache()
        return K.dropout_backward(dout, mask)


class GELU(_KernelLayer):
    """GELU; ``approximate``: "tanh" (the tanh form) or "none" (the erf form), as PyTorch names them."""

    kind = "gelu"
    activation = rectifier = True

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate: 'tanh' or 'none' (got {approximate!r})")
        self.approximate = approximate

    @property
    def kernel_names(self) -> tuple[str, str]:
        return ("gelu_forward" if self.approximate == "tanh" else "gelu_erf_forward"), "gelu_backward"

    def _options(self) -> tuple:
        return (self.training,)  # evaluation keeps no derivative


class Scale(Layer):
    """x -> factor * x, a constant (untrained) multiplier, as airbench's logit scaling; any shape."""

    kind = "scale"

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * x.dtype.type(self.factor)

    def backward(self, dout):
        return dout * dout.dtype.type(self.factor)


class Conv2D(Layer):
    """(H, W, C) -> (Ho, Wo, filters). ``weight``: (kh, kw, C, filters), ``bias``: (filters,).

    ``init="whiten"`` (airbench's first layer) takes its kernel from data: He normal when built, then
    :meth:`adapt` to a sample of the images it will see.
    """

    kind = "conv2d"
    skips_input_grad = True
    decays = ("weight",)

    def __init__(self, filters: int, kernel=3, stride=1, padding="same", bias: bool = True, init: str = "he_normal"):
        super().__init__()
        self.filters, self.kernel, self.stride = filters, pair(kernel), pair(stride)
        self.padding, self.use_bias, self.init = padding, bias, init
        self.workspace = Workspace()

    def plan(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects images (H, W, C), got {input_shape}")
        h, w, c = input_shape
        (top, left), (out_h, out_w) = conv_geometry((h, w), self.kernel, self.stride, self.padding)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{self.name}: a {self.kernel} kernel does not fit the {h}x{w} input")
        params = {"weight": (*self.kernel, c, self.filters)} | ({"bias": (self.filters,)} if self.use_bias else {})
        # Zero-bordered copies of the input and of the output gradient; im2col columns are gathered a
        # block at a time (conv.COLUMN_BLOCK), a constant that needs no per-sample share.
        padded = (h + 2 * top + self.kernel[0]) * (w + 2 * left + self.kernel[1]) * (c + self.filters)
        return LayerPlan((out_h, out_w, self.filters), params, scratch=padded)

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        c = input_shape[2]
        fan_in, fan_out = self.kernel[0] * self.kernel[1] * c, self.kernel[0] * self.kernel[1] * self.filters
        init = "he_normal" if self.init == "whiten" else self.init  # until adapt() sees the data
        self.params["weight"] = initialize(init, (*self.kernel, c, self.filters), fan_in, fan_out, rng, dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.filters, dtype=dtype)
        return self.output_shape

    def adapt(self, images: np.ndarray) -> None:
        """Data-dependent initialisation (as Keras' ``adapt``): with ``init="whiten"``, the kernel becomes
        the whitening of every patch of ``images`` ((N, H, W, C), as the layer will see them); ValueError
        when ``filters`` is not what whitening gives. Other inits keep their weights."""
        if self.init == "whiten":
            moment = patch_moment(images, self.kernel)
            self.params["weight"][...] = whitening(moment, self.kernel, self.filters)

    def forward(self, x):
        K = kernels.active()
        out, cache = K.conv2d_forward(
            x, self.params["weight"], self.params.get("bias"), self.stride, self.padding, self.workspace, self.training
        )
        self._hold_cache(K, cache)
        return out

    def backward(self, dout, input_grad=True):
        K, cache = self._release_cache()
        dx, dweight, dbias = K.conv2d_backward(dout, cache, input_grad)
        self.grads["weight"] = dweight
        if self.use_bias:
            self.grads["bias"] = dbias
        return dx


class _Pool(_KernelLayer):
    """(H, W, C) -> (Ho, Wo, C) over size x size windows (floor mode: windows that do not fit are dropped)."""

    def __init__(self, size=2, stride=None):
        super().__init__()
        self.size = pair(size)
        self.stride = pair(stride) if stride is not None else self.size

    def plan(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects images (H, W, C), got {input_shape}")
        out_h, out_w = pool_geometry(input_shape[:2], self.size, self.stride)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"{self.name}: a {self.size} window does not fit the {input_shape[0]}x{input_shape[1]} input")
        return LayerPlan((out_h, out_w, input_shape[2]))

    def _options(self):
        return self.size, self.stride


class MaxPool2D(_Pool):
    kind = "maxpool2d"
    kernel_names = ("maxpool_forward", "maxpool_backward")

    def _options(self):
        return (*super()._options(), self.training)  # evaluation keeps no winners


class AvgPool2D(_Pool):
    kind = "avgpool2d"
    kernel_names = ("avgpool_forward", "avgpool_backward")


class _GlobalPool(_KernelLayer):
    """(H, W, C) -> (C,)."""

    def plan(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects images (H, W, C), got {input_shape}")
        return LayerPlan((input_shape[2],))


class GlobalAvgPool(_GlobalPool):
    kind = "global_avgpool"
    kernel_names = ("global_avgpool_forward", "global_avgpool_backward")


class GlobalMaxPool(_GlobalPool):
    kind = "global_maxpool"
    kernel_names = ("global_maxpool_forward", "global_maxpool_backward")


class BatchNorm(Layer):
    """Normalises the last axis: (D,) after dense layers, (H, W, C) after convolutions.

    ``weight`` (scale) and ``bias`` (shift) are trained, (C,) each, unless ``affine`` is false;
    ``running_mean`` and ``running_var`` are buffers: saved in checkpoints, used in eval mode.
    """

    kind = "batchnorm"

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.momentum, self.eps, self.affine = momentum, eps, affine

    def plan(self, input_shape):
        channels = (input_shape[-1],)
        params = {"weight": channels, "bias": channels} if self.affine else {}
        return LayerPlan(tuple(input_shape), params, {"running_mean": channels, "running_var": channels})

    def build(self, input_shape, rng, dtype=np.float32):
        super().build(input_shape, rng, dtype)
        channels = input_shape[-1]
        if self.affine:
            self.params["weight"] = np.ones(channels, dtype)
            self.params["bias"] = np.zeros(channels, dtype)
        self.buffers["running_mean"] = np.zeros(channels, dtype)
        self.buffers["running_var"] = np.ones(channels, dtype)
        return input_shape

    def forward(self, x):
        K = kernels.active()
        out, cache = K.batchnorm_forward(
            x,
            self.params.get("weight"),
            self.params.get("bias"),
            self.buffers["running_mean"],
            self.buffers["running_var"],
            self.training,
            self.momentum,
            self.eps,
        )
        self._hold_cache(K, cache)
        return out

    def backward(self, dout):
        K, cache = self._release_cache()
        dx, dgamma, dbeta = K.batchnorm_backward(dout, cache)
        if self.affine:
            self.grads["weight"], self.grads["bias"] = dgamma, dbeta
        return dx
