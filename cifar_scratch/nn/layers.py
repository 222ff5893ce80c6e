"""Thin stateful layers over the pure kernels in :mod:`cifar_scratch.nn.functional`.

Each layer keeps ``params`` (trained), ``grads`` (same keys, filled by ``backward``) and
``buffers`` (saved but not trained). Shapes in docstrings exclude the batch dimension N
unless written out. A layer keeps only the cache of its latest forward pass.
"""

from __future__ import annotations

import math

import numpy as np

from cifar_scratch.nn import functional as F
from cifar_scratch.nn.init import initialize


class Layer:
    kind = "layer"

    def __init__(self) -> None:
        self.name = self.kind
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True
        self._cache = None

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> tuple[int, ...]:
        """Create parameters for per-sample ``input_shape``; return the per-sample output shape."""
        return input_shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class Dense(Layer):
    """(N, D) -> (N, units). ``weight``: (D, units), ``bias``: (units,)."""

    kind = "dense"

    def __init__(self, units: int, bias: bool = True, init: str = "he_normal") -> None:
        super().__init__()
        self.units, self.use_bias, self.init = units, bias, init

    def build(self, input_shape, rng, dtype=np.float32):
        if len(input_shape) != 1:
            raise ValueError(f"{self.name}: expects flat input (D,), got {input_shape}; add a flatten layer before it")
        fan_in = input_shape[0]
        self.params["weight"] = initialize(self.init, (fan_in, self.units), fan_in, self.units, rng, dtype)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.units, dtype=dtype)
        return (self.units,)

    def forward(self, x):
        out, self._cache = F.dense_forward(x, self.params["weight"], self.params.get("bias"))
        return out

    def backward(self, dout):
        dx, dweight, dbias = F.dense_backward(dout, self._cache)
        self.grads["weight"] = dweight
        if self.use_bias:
            self.grads["bias"] = dbias
        return dx


class Flatten(Layer):
    """(N, *shape) -> (N, prod(shape))."""

    kind = "flatten"

    def build(self, input_shape, rng, dtype=np.float32):
        self._input_shape = input_shape
        return (math.prod(input_shape),)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape((dout.shape[0], *self._input_shape))


class _Elementwise(Layer):
    """An activation applied element by element: any shape -> same shape."""

    def _kernels(self):
        raise NotImplementedError

    def forward(self, x):
        forward, _ = self._kernels()
        out, self._cache = forward(x)
        return out

    def backward(self, dout):
        _, backward = self._kernels()
        return backward(dout, self._cache)


class ReLU(_Elementwise):
    kind = "relu"

    def _kernels(self):
        return F.relu_forward, F.relu_backward


class LeakyReLU(_Elementwise):
    kind = "leaky_relu"

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = alpha

    def _kernels(self):
        return (lambda x: F.leaky_relu_forward(x, self.alpha)), F.leaky_relu_backward


class Tanh(_Elementwise):
    kind = "tanh"

    def _kernels(self):
        return F.tanh_forward, F.tanh_backward


class Sigmoid(_Elementwise):
    kind = "sigmoid"

    def _kernels(self):
        return F.sigmoid_forward, F.sigmoid_backward


class Dropout(Layer):
    """Inverted dropout in training mode, identity in eval mode. Masks come from the run's generator."""

    kind = "dropout"

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__()
        self.rate = rate

    def build(self, input_shape, rng, dtype=np.float32):
        self._rng = rng
        return input_shape

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            self._cache = None
            return x
        out, self._cache = F.dropout_forward(x, self.rate, self._rng)
        return out

    def backward(self, dout):
        return dout if self._cache is None else F.dropout_backward(dout, self._cache)


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Flatten, ReLU, LeakyReLU, Tanh, Sigmoid, Dropout)
}
