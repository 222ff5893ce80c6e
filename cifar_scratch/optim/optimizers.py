"""SGD (momentum, Nesterov), Adam and AdamW over a dict of named float32 parameters.

The optimizer sees only trained parameters. It updates them in place and never modifies the
gradients it is given. Weight penalties (``l2``, ``weight_decay``) apply to weight matrices
(names ending in ``.weight``), not to biases, as in Keras kernel regularisers.
"""

from __future__ import annotations

import numpy as np

from cifar_scratch.config import AdamSpec, AdamWSpec, SGDSpec


def _decays(name: str) -> bool:
    return name.endswith(".weight")


class Optimizer:
    #: Names of per-parameter state arrays ("slots"), saved in checkpoints.
    slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], l2: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params, self.l2, self.weight_decay = params, l2, weight_decay
        self.state: dict[str, dict[str, np.ndarray]] = {
            slot: {name: np.zeros_like(p) for name, p in params.items()} for slot in self.slots
        }
        self.steps = 0

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """Apply one update with learning rate ``lr`` to every parameter."""
        self.steps += 1
        self._begin_step(lr)
        for name, param in self.params.items():
            grad = grads[name]
            if _decays(name):
                if self.l2:
                    grad = grad + self.l2 * param  # a new array: the caller's gradient stays untouched
                if self.weight_decay:
                    param *= 1.0 - lr * self.weight_decay
            self._update(name, param, grad, lr)

    def _begin_step(self, lr: float) -> None:
        """Per-step work shared by all parameters."""

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """``{"<slot>/<param name>": array}`` for checkpoints."""
        return {f"{slot}/{name}": arr for slot, arrays in self.state.items() for name, arr in arrays.items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], steps: int) -> None:
        for slot, named in self.state.items():
            for name, arr in named.items():
                arr[...] = arrays[f"{slot}/{name}"]
        self.steps = steps


class SGD(Optimizer):
    """v <- momentum * v + g;  p <- p - lr * (g + momentum * v if nesterov else v)  (PyTorch's form)."""

    def __init__(self, params, momentum=0.0, nesterov=False, l2=0.0, weight_decay=0.0):
        self.momentum, self.nesterov = momentum, nesterov
        self.slots = ("velocity",) if momentum > 0 else ()
        super().__init__(params, l2, weight_decay)

    def _update(self, name, param, grad, lr):
        if self.momentum:
            velocity = self.state["velocity"][name]
            velocity *= self.momentum
            velocity += grad
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        param -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; with ``weight_decay`` (decoupled) it is AdamW."""

    slots = ("m", "v")

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, l2=0.0, weight_decay=0.0):
        self.beta1, self.beta2 = betas
        self.eps = eps
        super().__init__(params, l2, weight_decay)

    def _begin_step(self, lr):
        # Fold both bias corrections into one step size and epsilon (Kingma & Ba, section 2).
        correction = np.sqrt(1.0 - self.beta2**self.steps)
        self._step_size = float(lr * correction / (1.0 - self.beta1**self.steps))
        self._eps_hat = float(self.eps * correction)

    def _update(self, name, param, grad, lr):
        m, v = self.state["m"][name], self.state["v"][name]
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * (grad * grad)
        param -= self._step_size * m / (np.sqrt(v) + self._eps_hat)


def build_optimizer(spec: SGDSpec | AdamSpec | AdamWSpec, params: dict[str, np.ndarray]) -> Optimizer:
    if isinstance(spec, SGDSpec):
        return SGD(params, momentum=spec.momentum, nesterov=spec.nesterov, l2=spec.l2, weight_decay=spec.weight_decay)
    if isinstance(spec, AdamWSpec):
        return Adam(params, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
    return Adam(params, betas=spec.betas, eps=spec.eps, l2=spec.l2)
