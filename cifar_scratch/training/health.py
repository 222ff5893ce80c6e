"""Per-layer health, for learners: what each layer's outputs look like, which units are dead, how large
its gradient is and how far each step moves its weights, per epoch; and a warning when a layer is dead,
exploding, vanishing or updated out of proportion.

For every layer with parameters and every activation function, per epoch (``diagnostics.csv``):

- ``act_mean``, ``act_std``: of the layer's outputs, over the sampled training steps;
- ``dead_fraction`` (rectifiers: relu, leaky_relu, gelu): the share of units (an image's channels, a
  vector's entries) that were never positive on any sampled batch of the epoch;
- ``grad_norm``: the L2 norm of the layer's parameter gradients, mean over every step of the epoch;
- ``update_ratio``: ||w after - w before|| / ||w before|| of one optimizer step, mean over the sampled
  steps (cs231n's rule of thumb: around 1e-3).

Activations and updates are sampled every ``every`` steps: reading every activation of every step
would cost a CNN about a tenth of its epoch; gradient norms are read every step, since the global
norm (history's ``grad_norm``, clipping) sums them anyway.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from cifar_scratch.nn.layers import Layer
from cifar_scratch.nn.model import Sequential

#: The columns of diagnostics.csv.
HEALTH_FIELDS = ("epoch", "layer", "config", "kind", "act_mean", "act_std", "dead_fraction", "grad_norm", "update_ratio")
#: A rectifier with more than this share of dead units is a dead layer.
DEAD_SHARE = 0.5
#: A weight layer whose gradient RMS or update ratio is this far (either way) from the median of the
#: other weight layers is exploding, vanishing, or updated out of proportion.
OUTLIER_FACTOR = 100.0
#: An update ratio this many times cs231n's 1e-3 is too large whatever the other layers do.
RULE_OF_THUMB = 1e-3


@dataclass
class _Sums:
    """One layer's running sums within an epoch."""

    steps: int = 0  # steps whose gradient norm counted
    grad_norm: float = 0.0
    samples: int = 0  # sampled steps whose update counted
    update_ratio: float = 0.0
    act_sum: float = 0.0
    act_squares: float = 0.0
    act_count: int = 0
    alive: np.ndarray | None = None  # a rectifier's units seen positive (checkpoints: np.packbits, as hex)


class LayerHealth:
    """Watches ``model`` (its layers with parameters and its activation functions) through training steps:
    :meth:`begin_step`, :meth:`after_backward`, :meth:`after_update` around each, :meth:`end_epoch` after
    each epoch. Its state (the rows so far, the open epoch's sums, the warnings given) goes into checkpoints."""

    def __init__(self, model: Sequential, trained: dict[str, np.ndarray], every: int = 10):
        self.every = every
        self.layers = {
            path: module
            for path, module in model.named_modules()
            if isinstance(module, Layer) and (module.params or module.activation)
        }
        self._path_of = {id(module): path for path, module in self.layers.items()}
        #: Each layer's trained parameters (dotted names and the arrays the optimizer updates).
        self.trained = {
            path: {f"{path}.{k}": trained[f"{path}.{k}"] for k in module.params if f"{path}.{k}" in trained}
            for path, module in self.layers.items()
        }
        #: Layers whose weights (kernels, matrices) train: they are compared with each other for the warnings
        #: (a frozen kernel with a trained bias, as a whitened stem, is not: a bias's ratio says little).
        self.weighted = [
            path for path, module in self.layers.items() if any(f"{path}.{name}" in self.trained[path] for name in module.decays)
        ]
        self.sums = {path: _Sums() for path in self.layers}
        self.rows: list[dict] = []
        self.warned: dict[str, str] = {}  # "<layer>:<problem>" -> its message: each problem is warned once per run
        self.sampling = False
        self._before: dict[str, np.ndarray] = {}
        model.observe(self._observe)

    # ------------------------------------------------------------------ a step
    def begin_step(self, step: int) -> None:
        """Before the forward pass of step ``step`` (0-based): sample it or not."""
        self.sampling = step % self.every == 0

    def _observe(self, module, out: np.ndarray) -> None:
        path = self._path_of.get(id(module))
        if not self.sampling or path is None or not module.training:
            return
        sums = self.sums[path]
        flat = out.reshape(-1)
        sums.act_sum += float(flat.sum())
        sums.act_squares += float(np.einsum("i,i->", flat, flat))  # not a BLAS dot: the same sum on any thread count
        sums.act_count += flat.size
        if module.rectifier:
            fired = out.reshape(-1, out.shape[-1]).max(axis=0) > 0
            sums.alive = fired if sums.alive is None else sums.alive | fired

    def after_backward(self, squares: dict[str, float]) -> None:
        """With the step's squared gradient norms by parameter (those trained this step); a sampled
        step keeps a copy of the weights to measure the update."""
        for path, params in self.trained.items():
            present = [name for name in params if name in squares]
            if present:
                self.sums[path].grad_norm += math.sqrt(sum(squares[name] for name in present))
                self.sums[path].steps += 1
        if self.sampling:
            self._before = {name: array.copy() for params in self.trained.values() for name, array in params.items()}

    def after_update(self) -> None:
        """After the optimizer's step: a sampled step's update ratio per layer."""
        if self.sampling:
            for path, params in self.trained.items():
                weight = sum(float(np.einsum("i,i->", self._before[n].ravel(), self._before[n].ravel())) for n in params)
                if params and weight > 0:
                    moved = sum(float(np.sum(np.square(params[n] - self._before[n]))) for n in params)
                    self.sums[path].update_ratio += math.sqrt(moved / weight)
                    self.sums[path].samples += 1
        self._before, self.sampling = {}, False

    # ------------------------------------------------------------------ an epoch
    def end_epoch(self, epoch: int) -> tuple[list[dict], list[str]]:
        """Close the epoch -> (its rows, one per layer; the warnings not given before)."""
        rows = [self._row(epoch, path, module, self.sums[path]) for path, module in self.layers.items()]
        self.rows += rows
        self.sums = {path: _Sums() for path in self.layers}
        messages = []
        for key, message in self._problems(rows):
            if key not in self.warned:
                self.warned[key] = message
                messages.append(message)
        return rows, messages

    def _row(self, epoch: int, path: str, module, sums: _Sums) -> dict:
        row = dict.fromkeys(HEALTH_FIELDS)
        row.update(epoch=epoch, layer=path, config=module.config_path or "", kind=module.kind)
        if sums.act_count:
            mean = sums.act_sum / sums.act_count
            row["act_mean"], row["act_std"] = mean, math.sqrt(max(sums.act_squares / sums.act_count - mean * mean, 0.0))
        if sums.alive is not None:
            row["dead_fraction"] = 1.0 - float(sums.alive.mean())
        if sums.steps:
            row["grad_norm"] = sums.grad_norm / sums.steps
        if sums.samples:
            row["update_ratio"] = sums.update_ratio / sums.samples
        return row

    def _problems(self, rows: list[dict]):
        """(key, message) for each problem the epoch's rows show."""
        by_layer = {row["layer"]: row for row in rows}
        epoch = rows[0]["epoch"] if rows else 0
        for row in rows:
            dead = row["dead_fraction"]
            if dead is not None and dead > DEAD_SHARE:
                yield (
                    f"{row['layer']}:dead",
                    (
                        f"{_where(row)}: {dead:.0%} of its units were never positive in epoch {epoch} (dead units): check the "
                        "layer before it (a large negative bias, its initialisation) or lower optimizer.lr"
                    ),
                )
        rms = {
            path: norm / math.sqrt(sum(a.size for a in self.trained[path].values()))
            for path, norm in self._measured(by_layer, "grad_norm").items()
        }
        for path, factor in _outliers(rms):
            problem = "exploding" if factor > 1 else "vanishing"
            size = f"{factor:.0f}x" if factor > 1 else f"1/{1 / factor:.0f}"
            yield (
                f"{path}:{problem}",
                (
                    f"{_where(by_layer[path])}: its gradient (RMS {rms[path]:.2g} per weight) is {size} the median of the other "
                    f"weight layers in epoch {epoch} ({problem} gradients): lower optimizer.lr, add batch norm, or set "
                    "training.grad_clip.max_norm"
                ),
            )
        ratios = self._measured(by_layer, "update_ratio")
        flagged = dict(_outliers(ratios))
        for path, ratio in ratios.items():
            if path in flagged or ratio > OUTLIER_FACTOR * RULE_OF_THUMB:
                relative = flagged.get(path)
                against = (
                    f"{relative:.3g}x the median of the other weight layers"
                    if relative is not None
                    else f"{ratio / RULE_OF_THUMB:.0f}x the rule of thumb 1e-3"
                )
                yield (
                    f"{path}:update",
                    (
                        f"{_where(by_layer[path])}: each step moves its weights by {ratio:.2g} of their norm in epoch {epoch}, "
                        f"{against}: check its learning rate (optimizer.lr, a group's lr_scale)"
                    ),
                )

    def _measured(self, by_layer: dict[str, dict], column: str) -> dict[str, float]:
        """The weight layers' positive, finite figures of ``column`` (a frozen or diverged layer has none)."""
        values = {path: by_layer[path][column] for path in self.weighted}
        return {path: v for path, v in values.items() if v is not None and math.isfinite(v) and v > 0}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        sums = {
            path: {**asdict(s), "alive": None if s.alive is None else np.packbits(s.alive).tobytes().hex()}
            for path, s in self.sums.items()
        }
        return {"rows": self.rows, "warned": self.warned, "sums": sums}

    def load_state_dict(self, state: dict) -> None:
        """The state :meth:`state_dict` wrote; ValueError if it does not fit this model."""
        try:
            sums = {path: _Sums(**values) for path, values in state["sums"].items()}
            rows, warned = [dict(row) for row in state["rows"]], {str(k): str(v) for k, v in state["warned"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"layer health: {type(exc).__name__} {exc}") from None
        if set(sums) != set(self.layers) or any(set(row) != set(HEALTH_FIELDS) for row in rows):
            raise ValueError("layer health: its layers or columns are not this model's")
        names = {f.name for f in fields(_Sums)}
        for path, values in state["sums"].items():
            numbers = [v for k, v in values.items() if k != "alive"]
            if set(values) != names or not all(v is None or isinstance(v, (int, float)) for v in numbers):
                raise ValueError(f"layer health: the sums of {path} are damaged")
            for name, value in values.items():  # JSON holds NaN (a diverging step's sums) as null
                if value is None and name != "alive":
                    setattr(sums[path], name, float("nan"))
            if values["alive"] is not None:
                try:
                    packed = np.frombuffer(bytes.fromhex(values["alive"]), np.uint8)
                except (TypeError, ValueError):
                    raise ValueError(f"layer health: the sums of {path} are damaged") from None
                units = self.layers[path].output_shape[-1]
                if len(packed) != -(-units // 8):
                    raise ValueError(f"layer health: the sums of {path} are damaged")
                sums[path].alive = np.unpackbits(packed, count=units).astype(bool)
        self.sums, self.rows, self.warned = sums, rows, warned


def _where(row: dict) -> str:
    """A layer as the user finds it: its place in the config and its dotted name."""
    return f"{row['config']} ({row['layer']})" if row["config"] else row["layer"]


def _outliers(values: dict[str, float]):
    """(name, value / median of the others) for each value more than OUTLIER_FACTOR away from the median
    of the others (a geometric comparison); needs two others to stand against."""
    for name, value in values.items():
        others = [v for n, v in values.items() if n != name]
        if len(others) < 2:
            continue
        factor = value / float(np.median(others))
        if factor > OUTLIER_FACTOR or factor < 1 / OUTLIER_FACTOR:
            yield name, factor
