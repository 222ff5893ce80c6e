"""Swish (Ramachandran et al., 2017): x * sigmoid(beta * x), with beta trained per channel.

A layer of your own, in your own file: cifar-scratch imports it from the config
({type: swish.py:Swish, beta: 1.0}), checks its backward pass (cifar-scratch gradcheck swish.yaml),
trains, checkpoints and resumes it like a built-in layer.
"""

import numpy as np

from cifar_scratch.nn.layers import Layer


class Swish(Layer):
    def __init__(self, beta: float = 1.0):  # the options a config may give, checked against these hints
        super().__init__()
        self.beta = beta

    def build(self, input_shape, rng, dtype=np.float32):
        """Create the parameters for per-sample input_shape (the output shape is the same)."""
        self.params["beta"] = np.full(input_shape[-1], self.beta, dtype)  # one per channel (or feature)
        return super().build(input_shape, rng, dtype)

    def forward(self, x):
        """x: (N, ..., C) -> x * s, where s = sigmoid(beta * x)."""
        s = 1.0 / (1.0 + np.exp(-self.params["beta"] * x))
        self.cache = (x, s)  # what backward needs
        return x * s

    def backward(self, dout):
        """dout: dL/d(out) -> dL/dx; fills self.grads["beta"]."""
        x, s = self.cache
        dz = dout * x * s * (1.0 - s)  # dL/d(beta x): out = x s, ds/dz = s (1 - s)
        self.grads["beta"] = (dz * x).reshape(-1, x.shape[-1]).sum(axis=0)
        return dout * s + dz * self.params["beta"]
