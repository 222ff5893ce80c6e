"""The typed run configuration: the single source of truth for what a run does.

A YAML file plus ``dotted.key=value`` overrides is validated into a :class:`RunConfig`;
the run folder's ``config.yaml`` is :func:`dump_config` of exactly that object.
Every problem becomes one line ``dotted.path: message (got X)`` in a :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from cifar_scratch.errors import ConfigError

Init = Literal["he_normal", "he_uniform", "xavier_normal", "xavier_uniform"]
Monitor = Literal["val_loss", "val_accuracy"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- data
class AugmentConfig(_Section):
    """Random transforms of training images (never of validation or test images)."""

    flip: bool = Field(False, description="Mirror left-right with probability 1/2.")
    translate: int = Field(0, ge=0, description="Shift by up to this many pixels in each direction (a random crop of the padded image).")
    padding: Literal["reflect", "zero"] = Field("reflect", description="What a shift uncovers: mirrored pixels or black (0).")
    cutout: int = Field(0, ge=0, description="Side of a square erased (set to 0) at a random centre; 0 disables it.")
    copies: int = Field(
        0,
        ge=0,
        description="0: augment every training batch on the fly. N > 0: append N augmented copies of the training "
        "split once, before training (seeded by training.seed), and leave batches as they are.",
    )

    @model_validator(mode="after")
    def _copies_need_a_transform(self) -> "AugmentConfig":
        if self.copies and not (self.flip or self.translate or self.cutout):
            raise ValueError("copies: needs at least one of flip, translate, cutout")
        return self


class DataConfig(_Section):
    dataset: Literal["cifar10", "mnist", "fashion_mnist", "digits", "imagefolder"] = "cifar10"
    source: str | None = Field(
        None,
        description="cifar10: an image folder or .tar.gz of one in CIFAR-10 layout, read instead of the "
        "official release; mnist/fashion_mnist: a folder holding the four official IDX files (.gz or not); "
        "imagefolder: required, the folder or archive to read.",
    )
    download: bool = Field(True, description="cifar10/mnist/fashion_mnist: download the official files when they are missing.")
    classes: list[Any] | None = Field(None, description="Class subset by name or index; labels become 0..k-1 in this order.")
    grayscale: bool = False
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the training split held out for validation.")
    test_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the training split held out as test set when the source has no test split."
    )
    split_seed: int = Field(0, description="Seed of the stratified validation/test split (independent of training.seed).")
    normalize: Literal["standardize", "scale", "none"] = Field(
        "standardize", description="standardize: per-channel mean/std of the training split; scale: x/255; none: raw 0..255."
    )
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _source_needed(self) -> "DataConfig":
        if self.dataset == "imagefolder" and not self.source:
            raise ValueError("source: required when dataset is 'imagefolder'")
        if self.dataset == "digits" and self.source:
            raise ValueError("source: not used by the digits dataset")
        return self

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, value: list[Any] | None) -> list[str | int] | None:
        if value is not None:
            for item in value:
                if isinstance(item, bool) or not isinstance(item, (str, int)):
                    raise ValueError(f"each class is a name or an index (got {item!r})")
            if len(value) < 2:
                raise ValueError("at least 2 classes are needed")
            if len(set(value)) != len(value):
                raise ValueError("classes must not repeat")
        return value


# --------------------------------------------------------------------------- model
class DenseSpec(_Section):
    type: Literal["dense"]
    units: int | None = Field(None, gt=0, description="Output features; may be omitted on the last layer (= number of classes).")
    bias: bool = True
    init: Init = "he_normal"


class FlattenSpec(_Section):
    type: Literal["flatten"]


class ReLUSpec(_Section):
    type: Literal["relu"]


class LeakyReLUSpec(_Section):
    type: Literal["leaky_relu"]
    alpha: float = Field(0.01, ge=0.0)


class TanhSpec(_Section):
    type: Literal["tanh"]


class SigmoidSpec(_Section):
    type: Literal["sigmoid"]


class DropoutSpec(_Section):
    type: Literal["dropout"]
    rate: float = Field(0.5, ge=0.0, lt=1.0)


class GELUSpec(_Section):
    type: Literal["gelu"]


Size = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]


class Conv2DSpec(_Section):
    type: Literal["conv2d"]
    filters: PositiveInt
    kernel: Size = Field(3, description="Square size, or [height, width].")
    stride: Size = 1
    padding: Union[Literal["same", "valid"], NonNegativeInt] = Field(
        "same", description="same: output = ceil(input / stride), as Keras; valid: no padding; N: N pixels on every side."
    )
    bias: bool = True
    init: Literal["he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "dirac"] = Field(
        "he_normal", description="dirac: identity (centre tap passes channel c to filter c), as torch.nn.init.dirac_."
    )


class MaxPool2DSpec(_Section):
    type: Literal["maxpool2d"]
    size: Size = 2
    stride: Optional[Size] = Field(None, description="Defaults to size (non-overlapping windows).")


class AvgPool2DSpec(_Section):
    type: Literal["avgpool2d"]
    size: Size = 2
    stride: Optional[Size] = Field(None, description="Defaults to size (non-overlapping windows).")


class GlobalAvgPoolSpec(_Section):
    type: Literal["global_avgpool"]


class GlobalMaxPoolSpec(_Section):
    type: Literal["global_maxpool"]


class BatchNormSpec(_Section):
    type: Literal["batchnorm"]
    momentum: float = Field(0.1, gt=0.0, le=1.0, description="PyTorch convention: running = (1 - m) running + m batch (Keras 0.99 = 0.01 here).")
    eps: float = Field(1e-5, gt=0.0)
    affine: bool = Field(True, description="Learn a scale (weight) and shift (bias) per channel.")


LayerSpec = Annotated[
    Union[
        DenseSpec, FlattenSpec, ReLUSpec, LeakyReLUSpec, TanhSpec, SigmoidSpec, GELUSpec, DropoutSpec,
        Conv2DSpec, MaxPool2DSpec, AvgPool2DSpec, GlobalAvgPoolSpec, GlobalMaxPoolSpec, BatchNormSpec,
    ],
    Field(discriminator="type"),
]


LAYER_TYPE_NAMES = tuple(typing.get_args(spec.model_fields["type"].annotation)[0] for spec in typing.get_args(LayerSpec.__origin__))


class ModelConfig(_Section):
    layers: list[LayerSpec] = Field(min_length=1)

    @field_validator("layers", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        # `- relu` is shorthand for `- {type: relu}`.
        if isinstance(value, list):
            return [{"type": item} if isinstance(item, str) else item for item in value]
        return value


# --------------------------------------------------------------------------- optimizer
class SGDSpec(_Section):
    name: Literal["sgd"]
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    l2: float = Field(0.0, ge=0.0, description="L2 penalty: l2 * w is added to the gradient of every weight matrix.")
    weight_decay: float = Field(0.0, ge=0.0, description="Decoupled weight decay: w -= lr * weight_decay * w.")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDSpec":
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov: needs momentum > 0")
        return self


class _AdamFamily(_Section):
    lr: float = Field(0.001, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)


class AdamSpec(_AdamFamily):
    name: Literal["adam"]
    l2: float = Field(0.0, ge=0.0, description="L2 penalty added to the gradient (classic Adam + L2).")


class AdamWSpec(_AdamFamily):
    name: Literal["adamw"]
    weight_decay: float = Field(0.01, ge=0.0, description="Decoupled weight decay (Loshchilov & Hutter).")


OptimizerSpec = Annotated[Union[SGDSpec, AdamSpec, AdamWSpec], Field(discriminator="name")]


# --------------------------------------------------------------------------- schedule
class _Warmup(_Section):
    warmup_epochs: float = Field(0.0, ge=0.0, description="Linear warm-up from 0 to the schedule's value, per step.")


class ConstantSchedule(_Warmup):
    name: Literal["constant"]


class StepSchedule(_Warmup):
    name: Literal["step"]
    step_epochs: int = Field(10, gt=0)
    gamma: float = Field(0.1, gt=0.0)


class ExponentialSchedule(_Warmup):
    name: Literal["exponential"]
    gamma: float = Field(0.95, gt=0.0, description="Multiplier per epoch.")


class CosineSchedule(_Warmup):
    name: Literal["cosine"]
    min_lr: float = Field(0.0, ge=0.0)


class OneCycleSchedule(_Section):
    name: Literal["onecycle"]
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    div_factor: float = Field(25.0, gt=1.0, description="Start at lr / div_factor.")
    final_div_factor: float = Field(1e4, gt=1.0, description="End at lr / (div_factor * final_div_factor).")


class CyclicSchedule(_Section):
    name: Literal["cyclic"]
    base_lr: float = Field(1e-4, ge=0.0, description="Bottom of each triangle; optimizer.lr is the first peak.")
    step_epochs: float = Field(2.0, gt=0.0, description="Half-cycle length of the first cycle, in epochs.")
    step_growth: float = Field(1.0, ge=1.0, description="Each cycle's half-length is this times the previous one's.")
    decay: float = Field(1.0, gt=0.0, le=1.0, description="Each cycle's amplitude is this times the previous one's.")


class PlateauSchedule(_Warmup):
    name: Literal["plateau"]
    monitor: Monitor = "val_loss"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(5, ge=0)
    threshold: float = Field(1e-4, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)


ScheduleSpec = Annotated[
    Union[
        ConstantSchedule, StepSchedule, ExponentialSchedule, CosineSchedule, OneCycleSchedule, CyclicSchedule, PlateauSchedule
    ],
    Field(discriminator="name"),
]


# --------------------------------------------------------------------------- training
class EarlyStoppingConfig(_Section):
    patience: int = Field(5, ge=1, description="Epochs without improvement of training.monitor before stopping.")
    min_delta: float = Field(0.0, ge=0.0)


class TrainingConfig(_Section):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    seed: int = 0
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    monitor: Monitor = Field("val_loss", description="Metric that picks the best checkpoint and drives early stopping.")
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint_every: int = Field(1, gt=0, description="Write checkpoints/last.npz every N epochs (and always at the end).")


class OutputConfig(_Section):
    runs_dir: str = "runs"
    plots: bool = True


class RunConfig(_Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig = DataConfig()
    model: ModelConfig
    optimizer: OptimizerSpec = Field(default_factory=lambda: SGDSpec(name="sgd"))
    schedule: ScheduleSpec = Field(default_factory=lambda: ConstantSchedule(name="constant"))
    training: TrainingConfig = TrainingConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, tree: Any) -> Any:
        # An override such as `optimizer.lr=0.1` on a config without an optimizer section
        # creates {lr: 0.1}: it means the default optimizer with that learning rate.
        if isinstance(tree, dict):
            for section, default in (("optimizer", "sgd"), ("schedule", "constant")):
                if isinstance(tree.get(section), dict) and "name" not in tree[section]:
                    tree[section] = {"name": default, **tree[section]}
        return tree

    @model_validator(mode="after")
    def _monitors_need_validation(self) -> "RunConfig":
        if self.data.val_fraction == 0.0:
            if self.training.early_stopping is not None:
                raise ValueError("training.early_stopping: needs a validation split (data.val_fraction > 0)")
            if isinstance(self.schedule, PlateauSchedule):
                raise ValueError("schedule: plateau needs a validation split (data.val_fraction > 0)")
        return self


# --------------------------------------------------------------------------- loading
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=0.02"`` -> ``(["optimizer", "lr"], 0.02)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{text}: overrides look like dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: value is not valid YAML ({exc.problem if hasattr(exc, 'problem') else exc})") from None
    return key.split("."), value


def apply_override(tree: dict, keys: list[str], value: Any) -> None:
    """Set ``tree[k1][k2]... = value``, creating mappings on the way; integer keys index lists."""
    node: Any = tree
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
                raise ConfigError(f"{where}: no list item {key} (the list has {len(node)} items)")
            index = int(key)
            if last:
                node[index] = value
            else:
                if isinstance(node[index], str):  # layer shorthand `relu` -> {type: relu}
                    node[index] = {"type": node[index]}
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if child is None:  # absent, or `null` in the YAML: the override creates the section
                    child = node[key] = {}
                elif not isinstance(child, (dict, list)):
                    raise ConfigError(f"{where}: is a value, not a section (got {child!r})")
                node = child
        else:
            raise ConfigError(f"{'.'.join(keys[:depth])}: is a value, not a section (got {node!r})")


def read_yaml_mapping(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (got {type(tree).__name__})")
    return tree


def build_config(tree: dict, overrides: list[str] = ()) -> RunConfig:
    """Apply ``overrides`` to the raw mapping ``tree`` and validate it."""
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(tree, keys, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([format_error(err, tree) for err in exc.errors()]) from None


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    return build_config(read_yaml_mapping(Path(path)), overrides)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, every default written out; loading it gives back ``config``."""
    return yaml.safe_dump(_kind_first(config.model_dump(mode="json")), sort_keys=False, default_flow_style=None)


def _kind_first(value: Any) -> Any:
    """Put `name`/`type` first in every mapping, so each layer and section reads as 'what, then how'."""
    if isinstance(value, list):
        return [_kind_first(v) for v in value]
    if isinstance(value, dict):
        head = {k: value[k] for k in ("type", "name") if k in value}
        return head | {k: _kind_first(v) for k, v in value.items() if k not in head}
    return value


# --------------------------------------------------------------------------- error lines
def format_error(err: dict, tree: dict) -> str:
    """One pydantic error -> ``dotted.path: message (got X)`` with union tags removed."""
    path, owner = _clean_location(err["loc"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        # Cross-field validators name the field, relative to their model: "source: required ...".
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head:
            path, msg = path + head.split("."), rest
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
        if owner is not None:
            close = difflib.get_close_matches(str(path[-1]), list(owner.model_fields), n=1, cutoff=0.6)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
            else:
                allowed = sorted(owner.model_fields, key=lambda name: name not in ("type", "name"))  # kind first
                msg += f"; allowed: {', '.join(allowed)}"
        return f"{'.'.join(path)}: {msg}"
    if kind == "union_tag_invalid":
        msg = f"unknown {err['ctx']['discriminator'].strip(chr(39))} {err['ctx']['tag']!r}; choose from {err['ctx']['expected_tags']}"
        return f"{'.'.join(path)}: {msg}"
    if kind == "union_tag_not_found":
        keys = ", ".join(map(str, got)) if isinstance(got := err.get("input"), dict) else repr(got)
        return f"{'.'.join(path)}: needs a {err['ctx']['discriminator']} key (got keys: {keys}; in YAML flow style write 'key: value' with a space)"
    if kind == "missing":
        return f"{'.'.join(path)}: required"
    got = err.get("input")
    # A whole section as input says nothing the path does not; a scalar is worth quoting.
    suffix = "" if isinstance(got, (dict, list)) and kind == "value_error" else (
        " (got a mapping)" if isinstance(got, dict) else f" (got {got!r})")
    if "(got " in msg:  # the validator already quoted the offending value
        suffix = ""
    return f"{'.'.join(path) or '<config>'}: {msg}{suffix}"


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation)]
    return [annotation]


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _clean_location(loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """Walk the schema along ``loc``: keep field names and list indices, drop union tags.

    Returns the dotted parts and the model that owns the last part (for did-you-mean).
    """
    parts: list[str] = []
    owner: type[BaseModel] | None = None
    current: Any = RunConfig
    for item in loc:
        if isinstance(item, int):
            parts.append(str(item))
            args = typing.get_args(_unwrap(current))
            current = args[0] if args else None
            continue
        models = [m for m in _union_members(current) if _is_model(m)]
        tagged = {tag: m for m in models for tag in _literal_tags(m)}
        if len(models) > 1 and item in tagged:
            current = tagged[item]  # a discriminated-union tag, not a key the user wrote
            continue
        model = models[0] if len(models) == 1 else None
        if model is not None and item in model.model_fields:
            owner = model
            parts.append(item)
            current = model.model_fields[item].annotation
            continue
        if model is not None:  # an unknown key under this model
            owner = model
            parts.append(str(item))
            current = None
            continue
        # A tag of a plain union such as `str | int`: not part of the user's path.
    return parts, owner


def _literal_tags(model: type[BaseModel]) -> list[str]:
    for field in ("type", "name"):
        info = model.model_fields.get(field)
        if info is not None and typing.get_origin(info.annotation) is Literal:
            return list(typing.get_args(info.annotation))
    return []
