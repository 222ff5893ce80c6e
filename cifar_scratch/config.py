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
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cifar_scratch.errors import ConfigError
from cifar_scratch.fileio import open_regular
from cifar_scratch.kinds import layers as layers_kinds
from cifar_scratch.kinds import optimizers as optimizer_kinds
from cifar_scratch.kinds.layers import CONTAINER_SPECS, LayerSpec, bare_layer_names
from cifar_scratch.kinds.optimizers import SGDSpec
from cifar_scratch.options import MAX_SEED, OFFICIAL_SOURCE, Float, Int, Section

Monitor = Literal["val_loss", "val_accuracy"]
_Section = Section  # every section's base: unknown keys and non-finite numbers refused


# --------------------------------------------------------------------------- data
class AugmentConfig(_Section):
    """Random transforms of training images (never of validation or test images)."""

    flip: Union[Literal["alternate"], bool] = Field(
        False,
        description="true: mirror left-right with probability 1/2; alternate: each image is mirrored in every other "
        "epoch (a random half in the first), as in airbench.",
    )
    translate: Int = Field(
        0, ge=0, description="Shift by up to this many pixels in each direction (a random crop of the padded image)."
    )
    padding: Literal["reflect", "zero"] = Field("reflect", description="What a shift uncovers: mirrored pixels or black (0).")
    cutout: Int = Field(0, ge=0, description="Side of a square erased (set to 0) at a random centre; 0 disables it.")
    copies: Int = Field(
        0,
        ge=0,
        description="0: augment every training batch on the fly. N > 0: append N augmented copies of the training "
        "split once, before training (seeded by training.seed), and leave batches as they are.",
    )

    @model_validator(mode="after")
    def _copies_need_a_transform(self) -> AugmentConfig:
        if self.copies and not (self.flip or self.translate or self.cutout):
            raise ValueError("copies: needs at least one of flip, translate, cutout")
        if self.copies and self.flip == "alternate":
            raise ValueError("flip: alternate flips follow the epochs, so they need online augmentation (copies: 0)")
        return self


class DataConfig(_Section):
    dataset: str = Field(
        "cifar10",
        description="The dataset: one of the records of cifar_scratch/kinds/datasets.py.",
        json_schema_extra={"choices": "datasets"},
    )
    source: Union[str, list[str], None] = Field(
        None,
        description="Where the images come from: 'official' (the dataset's official release: the data dir, then "
        "a download), or a path: cifar10: an image folder or .tar.gz of one in CIFAR-10 layout; mnist/fashion_mnist: "
        "a folder holding the four official IDX files (.gz or not); imagefolder: the folder or archive to read "
        "(required). A list is tried in order and the first source that is there is used: a missing path, or an "
        "official release that is neither in the data dir nor downloadable, passes to the next. The run's "
        "config.yaml records the one used. null: official.",
    )
    download: bool = Field(True, description="cifar10/mnist/fashion_mnist: download the official files when they are missing.")
    classes: list[Any] | None = Field(None, description="Class subset by name or index; labels become 0..k-1 in this order.")
    grayscale: bool = Field(False, description="Convert the images to one channel of ITU-R BT.601 luma.")
    val_fraction: Float = Field(0.1, ge=0.0, lt=1.0, description="Share of the training split held out for validation.")
    test_fraction: Float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the training split held out as test set when the source has no test split."
    )
    split_seed: Int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the stratified validation/test split (independent of training.seed)."
    )
    split_method: Literal["stratified", "per_class"] = Field(
        "stratified",
        description="stratified: scikit-learn's train_test_split with stratify (class shares kept); per_class: each "
        "class in turn gives round(fraction x its count) images drawn by numpy's default_rng(split_seed).choice, "
        "the held-out split of airbench's CPU reference (peer_airbench_torch.py) on the CIFAR-10 JPEG copy.",
    )
    normalize: Literal["standardize", "scale", "none"] = Field(
        "standardize", description="standardize: per-channel mean/std of the training split; scale: x/255; none: raw 0..255."
    )
    augment: AugmentConfig = AugmentConfig()

    @property
    def sources(self) -> list[str]:
        """The candidates in order: ``official`` or an absolute path each."""
        if self.source is None:
            return [OFFICIAL_SOURCE]
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @field_validator("dataset")
    @classmethod
    def _a_dataset_kind(cls, value: str) -> str:
        from cifar_scratch.kinds.datasets import DATASET_KINDS

        if value not in DATASET_KINDS:
            close = difflib.get_close_matches(value, list(DATASET_KINDS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown dataset {value!r}{hint}; choose from {', '.join(DATASET_KINDS)}")
        return value

    @model_validator(mode="after")
    def _source_needed(self) -> DataConfig:
        from cifar_scratch.kinds.datasets import DATASET_KINDS

        kind = DATASET_KINDS[self.dataset]
        if kind.needs_source and not self.source:
            raise ValueError(f"source: required when dataset is {self.dataset!r}")
        if not kind.paths and not kind.official and self.source:
            raise ValueError(f"source: not used by the {self.dataset} dataset")
        if not kind.official and self.source and OFFICIAL_SOURCE in self.sources:
            raise ValueError(f"source: the {self.dataset} dataset has no {OFFICIAL_SOURCE} release; give the folder or archive")
        return self

    @field_validator("source")
    @classmethod
    def _paths(cls, value: str | list[str] | None) -> str | list[str] | None:
        for path in [value] if isinstance(value, str) else value or []:
            if "\0" in path or not path.strip():
                raise ValueError("must be a path or 'official' (got an empty string or a NUL character)")
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one source (a path or 'official'), or null for the official release")
            if len(set(value)) != len(value):
                raise ValueError("the same source is listed twice")
        return value

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
class ModelConfig(_Section):
    layers: Annotated[list[LayerSpec], BeforeValidator(bare_layer_names)] = Field(min_length=1)


def refresh_optimizer_kinds() -> None:
    """Rebuild the schema after an optimizer kind was (un)registered
    (:func:`cifar_scratch.kinds.optimizers.register_optimizer`)."""
    RunConfig.model_fields["optimizer"].annotation = typing.get_args(optimizer_kinds.optimizer_union())[
        0
    ]  # the field keeps its discriminator
    RunConfig.model_rebuild(force=True)


def refresh_layer_kinds() -> None:
    """Rebuild the schema after a layer kind was registered (:func:`cifar_scratch.kinds.layers.register_layer`):
    the blocks' and the model's ``layers`` then take the new kind, and so does every config."""
    union = layers_kinds.layer_union()
    layers_kinds.LayerSpec = union
    for model in (*CONTAINER_SPECS, ModelConfig):
        model.model_fields["layers"].annotation = list[union]
        model.model_rebuild(force=True)
    RunConfig.model_rebuild(force=True)


# --------------------------------------------------------------------------- optimizer
OptimizerSpec = optimizer_kinds.optimizer_union()


# --------------------------------------------------------------------------- schedule
class _Warmup(_Section):
    warmup_epochs: Float = Field(0.0, ge=0.0, le=1e6, description="Linear warm-up from 0 to the schedule's value, per step.")


class ConstantSchedule(_Warmup):
    name: Literal["constant"]


class StepSchedule(_Warmup):
    name: Literal["step"]
    step_epochs: Int = Field(10, gt=0, description="Epochs between two drops of the rate.")
    gamma: Float = Field(0.1, gt=0.0, le=1.0, description="Multiplier at each drop.")


class ExponentialSchedule(_Warmup):
    name: Literal["exponential"]
    gamma: Float = Field(0.95, gt=0.0, le=1.0, description="Multiplier per epoch.")


class CosineSchedule(_Warmup):
    name: Literal["cosine"]
    min_lr: Float = Field(0.0, ge=0.0, description="The rate never goes below this.")


class OneCycleSchedule(_Section):
    name: Literal["onecycle"]
    pct_start: Float = Field(0.3, gt=0.0, lt=1.0, description="Share of the steps spent rising to optimizer.lr.")
    div_factor: Float = Field(25.0, gt=1.0, description="Start at lr / div_factor.")
    final_div_factor: Float = Field(1e4, gt=1.0, description="End at lr / (div_factor * final_div_factor).")


class CyclicSchedule(_Section):
    name: Literal["cyclic"]
    base_lr: Float = Field(1e-4, ge=0.0, description="Bottom of each triangle; optimizer.lr is the first peak.")
    step_epochs: Float = Field(2.0, gt=0.0, description="Half-cycle length of the first cycle, in epochs.")
    step_growth: Float = Field(1.0, ge=1.0, le=10.0, description="Each cycle's half-length is this times the previous one's.")
    decay: Float = Field(1.0, gt=0.0, le=1.0, description="Each cycle's amplitude is this times the previous one's.")


class PiecewiseSchedule(_Section):
    name: Literal["piecewise"]
    points: list[tuple[Annotated[Float, Field(ge=0.0)], Annotated[Float, Field(ge=0.0, le=1e3)]]] = Field(
        min_length=2,
        description="[epoch, multiplier of optimizer.lr] pairs; the rate runs in straight lines between them "
        "(fractional epochs allowed) and stays flat beyond the first and last. Airbench's triangle: "
        "[[0, 0.2], [2.5, 1], [10, 0]].",
    )

    @field_validator("points")
    @classmethod
    def _increasing(cls, points):
        epochs = [p[0] for p in points]
        if any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ValueError(f"epochs must increase from point to point (got {epochs})")
        return points


class PlateauSchedule(_Warmup):
    name: Literal["plateau"]
    monitor: Monitor = Field("val_loss", description="The metric whose plateau lowers the rate.")
    factor: Float = Field(0.1, gt=0.0, lt=1.0, description="Multiplier of the rate at a plateau.")
    patience: Int = Field(5, ge=0, description="Epochs without improvement (by more than threshold) before the rate drops.")
    threshold: Float = Field(1e-4, ge=0.0, description="Smallest change of the metric that counts as improvement (relative).")
    min_lr: Float = Field(0.0, ge=0.0, description="The rate never goes below this.")


ScheduleSpec = Annotated[
    Union[
        ConstantSchedule,
        StepSchedule,
        ExponentialSchedule,
        CosineSchedule,
        OneCycleSchedule,
        CyclicSchedule,
        PlateauSchedule,
        PiecewiseSchedule,
    ],
    Field(discriminator="name"),
]


# --------------------------------------------------------------------------- training
class EarlyStoppingConfig(_Section):
    patience: Int = Field(5, ge=1, description="Epochs without improvement of training.monitor before stopping.")
    min_delta: Float = Field(0.0, ge=0.0, description="Smallest change of training.monitor that counts as improvement.")


#: Test-time augmentation: the views whose logits are averaged (airbench's mirror and 1-pixel shifts).
TTA_MODES = ("none", "flip", "flip+translate")


class EMAConfig(_Section):
    """An exponential moving average of the weights (parameters and batch-norm statistics), used for
    validation, the best checkpoint and the final metrics."""

    decay: Float = Field(0.99, gt=0.0, lt=1.0, description="Weight of the old average at each update.")
    every: Int = Field(1, ge=1, description="Update every N optimizer steps.")
    warmup_epochs: Float = Field(0.0, ge=0.0, le=1e6, description="The decay ramps up as (step / warmup)^3 over these epochs.")
    start_epochs: Float = Field(
        0.0, ge=0.0, le=1e6, description="Epochs before the average begins, as a copy of the weights (airbench: 3)."
    )
    lookahead: bool = Field(
        False, description="After each update and at each epoch's end set the weights to the average (airbench's lookahead)."
    )


class TrainingConfig(_Section):
    epochs: Int = Field(10, gt=0, le=1_000_000, description="Passes over the training split.")
    batch_size: Int = Field(128, gt=0, le=1_000_000, description="Images per training step.")
    drop_last: bool = Field(
        False,
        description="Skip the last, smaller batch of each epoch (PyTorch's DataLoader option): every step sees "
        "batch_size images, as airbench trains.",
    )
    seed: Int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seed of the run's one np.random.Generator: initialisation, shuffling, dropout, augmentation.",
    )
    label_smoothing: Float = Field(
        0.0, ge=0.0, lt=1.0, description="The target is (1 - s) one_hot + s / K; history reports plain cross-entropy."
    )
    monitor: Monitor = Field("val_loss", description="Metric that picks the best checkpoint and drives early stopping.")
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint_every: Int = Field(1, gt=0, description="Write checkpoints/last.npz every N epochs (and always at the end).")
    ema: Optional[EMAConfig] = Field(
        None, description="Average the weights: {decay: 0.99, every: 1, warmup_epochs: 0, start_epochs: 0, lookahead: false}."
    )
    tta: Literal[TTA_MODES] = Field(
        "none",
        description="Test-time augmentation of the final metrics (and evaluate's default): the mean of the logits of "
        "the image and its mirror (flip), and of both shifted by one pixel each way (flip+translate). "
        "Plain accuracy is reported beside it.",
    )
    engine: Literal["fast", "reference"] = Field(
        "fast",
        description="The kernels that run: fast (cifar_scratch/nn/fast) or reference (cifar_scratch/nn/reference.py: "
        "the math in plain NumPy, to read and to step through in a debugger; slower). Results agree within float32 "
        "rounding; a run keeps its engine on resume.",
    )
    evaluate_train: bool = Field(
        True,
        description="Measure the training split with the final weights too (train_accuracy in metrics.json); "
        "false saves a pass over it, as speed runs do.",
    )


class OutputConfig(_Section):
    runs_dir: str = Field(
        "runs", description="Where run folders go (--runs-dir overrides it); config.yaml records the folder used."
    )
    plots: bool = Field(True, description="Draw loss, accuracy, learning-rate and confusion-matrix plots.")


class RunConfig(_Section):
    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100, description="The run folder's suffix: runs/<time>_<name>."
    )
    data: DataConfig = Field(default_factory=DataConfig)  # built when validated: its checks read the dataset records
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
    def _rates_fit_together(self) -> RunConfig:
        decay = getattr(self.optimizer, "weight_decay", 0.0)
        if self.optimizer.lr * decay >= 1.0:
            raise ValueError(
                f"optimizer.weight_decay: lr * weight_decay must be below 1, or every step flips the weights' sign "
                f"(got {self.optimizer.lr:g} * {decay:g})"
            )
        if isinstance(self.schedule, CyclicSchedule) and self.schedule.base_lr >= self.optimizer.lr:
            raise ValueError(
                f"schedule.base_lr: must be below optimizer.lr, the peak (got {self.schedule.base_lr:g} >= {self.optimizer.lr:g})"
            )
        return self

    @model_validator(mode="after")
    def _monitors_need_validation(self) -> RunConfig:
        if self.data.val_fraction == 0.0:
            if self.training.early_stopping is not None:
                raise ValueError("training.early_stopping: needs a validation split (data.val_fraction > 0)")
            if isinstance(self.schedule, PlateauSchedule):
                raise ValueError("schedule: plateau needs a validation split (data.val_fraction > 0)")
        return self


# --------------------------------------------------------------------------- loading
#: A config is a few hundred bytes; anything near this is not a config.
MAX_CONFIG_BYTES = 1_000_000
#: Values a config may expand to: YAML aliases can make 600 bytes mean billions of values.
MAX_CONFIG_VALUES = 100_000


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with every failure mode as one ConfigError line: syntax, nesting too deep for
    Python's recursion limit, integers too long to convert, and alias bombs (checked after loading:
    the loaded tree shares its repeated nodes, so it is small; walking it counts the expansion)."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise ConfigError(f"{at}: invalid YAML ({getattr(exc, 'problem', None) or _short_text(str(exc))})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise ConfigError(f"{where}: invalid value: a number longer than Python converts (4,300 digits)") from None
    if _count_values(tree, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{where}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases?); not a config")
    return tree


def _count_values(node: Any, limit: int, depth: int = 0) -> int:
    """Values in ``node`` with shared (aliased) nodes counted at every use; stops counting past ``limit``."""
    if depth > 100:
        return limit + 1
    if isinstance(node, dict):
        total = 1
        for value in node.values():
            total += 1 + _count_values(value, limit - total, depth + 1)  # the key, then its value
            if total > limit:
                break
        return total
    if isinstance(node, list):
        total = 1
        for value in node:
            total += _count_values(value, limit - total, depth + 1)
            if total > limit:
                break
        return total
    return 1


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=0.02"`` -> ``(["optimizer", "lr"], 0.02)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{_short_text(text)}: overrides look like dotted.key=value")
    value = _parse_yaml(raw, key) if raw.strip() else None
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
                    raise ConfigError(f"{where}: is a value, not a section (got {_short(child)})")
                node = child
        else:
            raise ConfigError(f"{'.'.join(keys[:depth])}: is a value, not a section (got {_short(node)})")


def read_yaml_mapping(path: Path) -> dict:
    """The config file's top-level mapping; every way a file can fail to be one is a ConfigError line."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file")
        with open_regular(path) as handle:  # a FIFO or device planted as a config must not block or flood
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); is it a config file?") from None
    tree = _parse_yaml(text, str(path))
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (got {type(tree).__name__})")
    return tree


#: Fields that hold paths. Written in a config file, a relative path means relative to that file;
#: given as an override on the command line, relative to the current folder (as a shell user means).
PATH_FIELDS = (("data", "source"),)


def _absolute_paths(tree: dict, base: Path) -> None:
    for section, key in PATH_FIELDS:
        node = tree.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), (str, list)):
            node[key] = (
                [_absolute(item, base) for item in node[key]] if isinstance(node[key], list) else _absolute(node[key], base)
            )


def _absolute(item: Any, base: Path) -> Any:
    """A relative path made absolute against ``base``; ``official`` and what is not a path stay (validation judges them)."""
    if not isinstance(item, str) or not item or "\0" in item or item == OFFICIAL_SOURCE:
        return item
    path = Path(item).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def build_config(tree: dict, overrides: list[str] = (), base_dir: Path | None = None) -> RunConfig:
    """Apply ``overrides`` to the raw mapping ``tree`` and validate it.

    Relative paths in ``tree`` are taken relative to ``base_dir`` (the config file's folder), those
    in overrides relative to the current folder; the resolved config holds absolute paths only.
    """
    if base_dir is not None:
        _absolute_paths(tree, base_dir)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(tree, keys, value)
    _absolute_paths(tree, Path.cwd())
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError([format_error(err, tree) for err in exc.errors()[:20]]) from None
    except RecursionError:
        raise ConfigError("<config>: nested too deeply to be a config") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    return build_config(read_yaml_mapping(path), overrides, base_dir=path.resolve().parent)


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


#: Keys that may change on --resume; anything else would make config.yaml lie about what ran.
RESUMABLE_KEYS = ("training.epochs", "training.early_stopping", "training.checkpoint_every", "output.plots")


def lookup(tree, dotted: str):
    """The value at a dotted path of a config tree (None where there is none)."""
    for key in dotted.split("."):
        if isinstance(tree, dict):
            tree = tree.get(key)
        elif isinstance(tree, list) and key.isdigit() and int(key) < len(tree):
            tree = tree[int(key)]
        else:
            return None
    return tree


def changed_keys(old, new, prefix: str = "") -> list[str]:
    """Dotted paths where two config trees differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [c for k in keys for c in changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in changed_keys(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]


# --------------------------------------------------------------------------- error lines
def format_error(err: dict, tree: dict, root: type[BaseModel] | None = None) -> str:
    """One pydantic error -> ``dotted.path: message (got X)`` with union tags removed; ``root``: the
    schema validated (default :class:`RunConfig`)."""
    path, owner = _clean_location(err["loc"], root or RunConfig)
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
            msg += _switch_hint(owner, str(path[-1]), path[:-1])
        return f"{_short_text('.'.join(path))}: {msg}"
    if kind == "union_tag_invalid":
        msg = f"unknown {err['ctx']['discriminator'].strip(chr(39))} {err['ctx']['tag']!r}; choose from {err['ctx']['expected_tags']}"
        return f"{'.'.join(path)}: {msg}"
    if kind == "union_tag_not_found":
        keys = _short_text(", ".join(map(str, got))) if isinstance(got := err.get("input"), dict) else _short(got)
        return f"{'.'.join(path)}: needs a {err['ctx']['discriminator']} key (got keys: {keys}; in YAML flow style write 'key: value' with a space)"
    if kind == "missing":
        return f"{'.'.join(path)}: required"
    got = err.get("input")
    # A whole section as input says nothing the path does not; a scalar is worth quoting.
    suffix = "" if isinstance(got, (dict, list)) and kind == "value_error" else f" (got {_short(got)})"
    if "(got " in msg:  # the validator already quoted the offending value
        suffix = ""
    return f"{_short_text('.'.join(path)) or '<config>'}: {_short_text(msg, 300)}{suffix}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: an error line never echoes a huge (or alias-expanded) value."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else f"a list of {len(value)} items"
    return _short_text(repr(value), limit)


def _short_text(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text):,} chars)"


def _switch_hint(owner: type[BaseModel], key: str, section: list[str]) -> str:
    """After ``optimizer.name=adam`` on an SGD config, ``momentum`` is unknown: say whose key it is,
    and how to replace the whole section instead of one key of it."""
    if not section or section[0] not in ("optimizer", "schedule") or len(section) != 1:
        return ""
    kind = _literal_tags(owner)
    members = _union_members(RunConfig.model_fields[section[0]].annotation)
    owners = [tag for m in members if _is_model(m) and key in m.model_fields for tag in _literal_tags(m)]
    if not owners or not kind:
        return ""
    example = f"{{name: {kind[0]}, lr: ...}}" if section[0] == "optimizer" else f"{{name: {kind[0]}}}"
    return f"; {key} belongs to {' / '.join(owners)}, not {kind[0]}: to switch, replace the whole section, e.g. {section[0]}={example}"


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


def _clean_location(loc: tuple, root: type[BaseModel]) -> tuple[list[str], type[BaseModel] | None]:
    """Walk the schema along ``loc``: keep field names and list indices, drop union tags.

    Returns the dotted parts and the model that owns the last part (for did-you-mean).
    """
    parts: list[str] = []
    owner: type[BaseModel] | None = None
    current: Any = root
    for item in loc:
        if typing.get_origin(_unwrap(current)) is dict:  # a key the user chose (a mapping's key)
            parts.append(str(item))
            current = typing.get_args(_unwrap(current))[1]
            continue
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
