"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
interpolated momentum, so every weight moves by exactly lr per step.

An optimizer of your own, in your own file: {name: lion.py:Lion, lr: 0.001, weight_decay: 0.1}. The
base class applies lr, parameter groups, L2 and decoupled weight decay; its state arrays ("slots")
are checkpointed and resumed bit-exactly.
"""

import numpy as np

from cifar_scratch.optim.optimizers import Optimizer


class Lion(Optimizer):
    def __init__(self, params, hyper=None, beta1: float = 0.9, beta2: float = 0.99):
        self.beta1, self.beta2 = beta1, beta2
        self.slots = ("momentum",)  # one array per parameter, zeros at the start
        super().__init__(params, hyper)

    def update(self, name, param, grad, lr):
        """param -= lr * sign(beta1 m + (1 - beta1) g);  m <- beta2 m + (1 - beta2) g."""
        m = self.state["momentum"][name]
        param -= lr * np.sign(self.beta1 * m + (1.0 - self.beta1) * grad)
        m *= self.beta2
        m += (1.0 - self.beta2) * grad
