"""SGD (momentum, Nesterov), Adam, AdamW and Muon over a dict of named float32 parameters.

The optimizer sees only trained parameters. It updates them in place and never modifies the
gradients it is given. Every parameter has its own :class:`Hyper`: a learning-rate multiplier, a
decoupled weight decay and an L2 penalty (the builder gives weight matrices and kernels the
optimizer's decay, biases and batch-norm parameters none, and applies parameter groups).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hyper:
    """Per-parameter hyperparameters: lr is multiplied by ``lr_scale``; ``weight_decay`` is decoupled
    (w -= lr * lr_scale * weight_decay * w); ``l2`` adds l2 * w to the gradient."""

    lr_scale: float = 1.0
    weight_decay: float = 0.0
    l2: float = 0.0
    until_step: int | None = None  # updated only in steps 1..until_step (None: always)


class Optimizer:
    """The base of every optimizer, the built-in ones and a user's: :meth:`step` applies each parameter's
    :class:`Hyper` (learning-rate scale, L2, decoupled decay, its epochs) and calls :meth:`update` per
    parameter; ``self.state[slot][name]`` holds the per-parameter arrays named in ``slots`` (zeros at the
    start), which checkpoints save and resume restores bit-exactly, with ``self.steps``."""

    #: Names of per-parameter state arrays ("slots"), saved in checkpoints.
    slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], hyper: dict[str, Hyper] | None = None) -> None:
        self.params = params
        self.hyper = {name: (hyper or {}).get(name, Hyper()) for name in params}
        self.state: dict[str, dict[str, np.ndarray]] = {
            slot: {name: np.zeros_like(p) for name, p in params.items()} for slot in self.slots
        }
        self.steps = 0

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """Apply one update with base learning rate ``lr`` to every parameter."""
        self.steps += 1
        self.begin_step()
        for name, param in self.params.items():
            hyper = self.hyper[name]
            if hyper.until_step is not None and self.steps > hyper.until_step:
                continue  # its training time is over: no update, no decay, slots kept (and no gradient needed)
            grad = grads[name]
            rate = lr * hyper.lr_scale
            if hyper.l2:
                grad = grad + hyper.l2 * param  # a new array: the caller's gradient stays untouched
            if hyper.weight_decay:
                param *= 1.0 - rate * hyper.weight_decay
            self.update(name, param, grad, rate)

    def finished(self) -> set[str]:
        """Parameters the next step will not update (their ``until_step`` has passed)."""
        return {n for n, h in self.hyper.items() if h.until_step is not None and self.steps >= h.until_step}

    def begin_step(self) -> None:
        """Per-step work shared by all parameters (``self.steps`` already counts this step)."""

    def update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``param`` (dotted ``name``) in place from ``grad`` (never modify it) at rate ``lr``
        (the schedule's rate times the parameter's ``lr_scale``)."""
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

    def __init__(self, params, hyper=None, momentum=0.0, nesterov=False):
        self.momentum, self.nesterov = momentum, nesterov
        self.slots = ("velocity",) if momentum > 0 else ()
        super().__init__(params, hyper)

    def update(self, name, param, grad, lr):
        if self.momentum:
            velocity = self.state["velocity"][name]
            velocity *= self.momentum
            velocity += grad
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        param -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; with decoupled ``weight_decay`` it is AdamW."""

    slots = ("m", "v")

    def __init__(self, params, hyper=None, betas=(0.9, 0.999), eps=1e-8):
        self.beta1, self.beta2 = betas
        self.eps = eps
        super().__init__(params, hyper)

    def begin_step(self):
        # Fold both bias corrections into the step size and epsilon (Kingma & Ba, section 2).
        self._correction = np.sqrt(1.0 - self.beta2**self.steps)
        self._eps_hat = float(self.eps * self._correction)

    def update(self, name, param, grad, lr):
        m, v = self.state["m"][name], self.state["v"][name]
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * (grad * grad)
        step_size = float(lr * self._correction / (1.0 - self.beta1**self.steps))
        param -= step_size * m / (np.sqrt(v) + self._eps_hat)


#: The quintic Newton-Schulz coefficients of Muon (Jordan et al., 2024, "Muon: an optimizer for hidden
#: layers"): chosen to maximise the slope at zero, so three to five iterations push every singular value
#: into roughly [0.7, 1.2] instead of converging to exactly 1, which trains as well and costs fewer steps.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: np.ndarray, steps: int) -> np.ndarray:
    """Approximately ``U V^T`` of ``update = U S V^T`` by quintic Newton-Schulz iterations.

    update: (..., outputs) float32, the engine's layout of kernels (kh, kw, C, F) and weight matrices
    (in, out), read as a (prod(...), outputs) matrix -> a new array of the same shape and dtype whose
    singular values lie near 1 (see ``NEWTON_SCHULZ``).
    """
    a, b, c = NEWTON_SCHULZ
    x = update.reshape(-1, update.shape[-1])
    x = x / (np.linalg.norm(x) + np.float32(1e-7))  # every singular value <= 1, where the iteration converges
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    if tall:
        x = x.T
    return np.ascontiguousarray(x).reshape(update.shape)


class Muon(Optimizer):
    """Muon (Jordan et al., 2024) for the ``orthogonal`` parameters, SGD for the others.

    For an orthogonal parameter (a kernel or weight matrix), v <- momentum * v + g, the direction is
    g + momentum * v (Nesterov) or v, and p <- p - lr * orthogonalize(direction): every direction in
    the update's row and column space moves the same amount, whatever the gradient's scale. With
    ``normalize_weights`` the parameter is first rescaled to Frobenius norm sqrt(outputs), as airbench94_muon
    does for kernels followed by batch norm (their scale does not change the output, so this keeps the
    step's relative size fixed). Every other parameter takes the SGD update with its own momentum.
    """

    slots = ("velocity",)

    def __init__(
        self,
        params,
        hyper=None,
        orthogonal=(),
        momentum=0.95,
        nesterov=True,
        ns_steps=5,
        normalize_weights=False,
        fallback_momentum=0.9,
        fallback_nesterov=False,
    ):
        self.orthogonal = frozenset(orthogonal)
        self.momentum, self.nesterov, self.ns_steps = momentum, nesterov, ns_steps
        self.normalize_weights = normalize_weights
        self.fallback_momentum, self.fallback_nesterov = fallback_momentum, fallback_nesterov
        super().__init__(params, hyper)

    def update(self, name, param, grad, lr):
        orthogonal = name in self.orthogonal
        momentum, nesterov = (self.momentum, self.nesterov) if orthogonal else (self.fallback_momentum, self.fallback_nesterov)
        velocity = self.state["velocity"][name]
        velocity *= momentum
        velocity += grad
        direction = grad + momentum * velocity if nesterov else velocity
        if not orthogonal:
            param -= lr * direction
            return
        if self.normalize_weights:
            norm = np.linalg.norm(param)
            if norm > 0:
                param *= np.float32(np.sqrt(param.shape[-1]) / norm)
        param -= lr * orthogonalize(direction, self.ns_steps)
