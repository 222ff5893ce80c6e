"""The typed run configuration: every section, key, type, range, default and description.

This is the single source of truth for what a run does: :mod:`~cifar_scratch.config.loading` validates
YAML into a :class:`RunConfig`, :mod:`~cifar_scratch.config.reference` writes the documentation from it.
The layer and optimizer unions come from the kinds' records (:mod:`cifar_scratch.kinds`).
"""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from cifar_scratch.kinds import layers as layers_kinds
from cifar_scratch.kinds import losses as loss_kinds
from cifar_scratch.kinds import optimizers as optimizer_kinds
from cifar_scratch.kinds.layers import CONTAINER_SPECS, LayerSpec, bare_layer_names
from cifar_scratch.kinds.losses import CrossEntropySpec
from cifar_scratch.kinds.optimizers import SGDSpec
from cifar_scratch.nn.kernels import CONV_ALGORITHMS, ENGINES
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
        "(required); npz: the .npz file of arrays (required). A list is tried in order and the first source that is there is used: a missing path, or an "
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
    image_size: Optional[tuple[Annotated[Int, Field(ge=1, le=4096)], Annotated[Int, Field(ge=1, le=4096)]]] = Field(
        None,
        description="imagefolder: [height, width] every image is resized to (shorter side scaled to cover it, then the "
        "centre cropped; predict does the same); null: images must share one size.",
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
        if self.image_size is not None and self.dataset != "imagefolder":
            raise ValueError(f"image_size: resizes the images of an imagefolder dataset, not of {self.dataset}")
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


# --------------------------------------------------------------------------- optimizer, loss
OptimizerSpec = optimizer_kinds.optimizer_union()
LossSpec = loss_kinds.loss_union()


def refresh_loss_kinds() -> None:
    """Rebuild the schema after a loss kind was (un)registered (:func:`cifar_scratch.kinds.losses.register_loss`)."""
    RunConfig.model_fields["loss"].annotation = typing.get_args(loss_kinds.loss_union())[0]
    RunConfig.model_rebuild(force=True)


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


class GradClipConfig(_Section):
    """Clipping of the gradients by their global norm (PyTorch's clip_grad_norm_)."""

    max_norm: Float = Field(
        ...,
        gt=0.0,
        le=1e12,
        description="When the L2 norm of all trained gradients together exceeds this, scale them down to it.",
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
    grad_clip: Optional[GradClipConfig] = Field(
        None,
        description="Clip the gradients: {max_norm: N}, over all trained parameters together; history.csv's "
        "grad_norm column is the epoch's mean norm before clipping (recorded with or without this).",
    )
    tta: Literal[TTA_MODES] = Field(
        "none",
        description="Test-time augmentation of the final metrics (and evaluate's default): the mean of the logits of "
        "the image and its mirror (flip), and of both shifted by one pixel each way (flip+translate). "
        "Plain accuracy is reported beside it.",
    )
    engine: Literal[tuple(ENGINES)] = Field(
        "fast",
        description="The kernels that run: fast (cifar_scratch/nn/fast) or reference (cifar_scratch/nn/reference.py: "
        "the math in plain NumPy, to read and to step through in a debugger; slower). Results agree within float32 "
        "rounding; a run keeps its engine on resume.",
    )
    conv_algorithm: Literal[CONV_ALGORITHMS] = Field(
        "im2col",
        description="How the fast engine computes stride-1 3x3 convolutions ('same' or 'valid'): im2col (one GEMM "
        "over the gathered patches), winograd (F(4x4, 3x3), or F(5x5, 3x3) where its tiles fit better, as on 15x15: "
        "4-4.6x fewer multiplications, float32 error about 1e-5 of the largest value) or auto (Winograd where it measured faster: 16 or more channels on each side). Other "
        "convolutions go by im2col; the reference engine ignores this.",
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
    health: bool = Field(
        True,
        description="Per-layer health: activation statistics, dead units, gradient norms and update ratios per epoch "
        "(diagnostics.csv, plots/layers.png), and a warning for a dead, exploding or vanishing layer.",
    )
    health_every: Int = Field(
        10, ge=1, le=1_000_000, description="Steps between samples of activations and weight updates (gradients: every step)."
    )
    tensorboard: bool = Field(
        False,
        description="Write TensorBoard event files into the run folder's tensorboard/ (train --tensorboard; needs "
        "the tensorboard extra).",
    )
    histogram_every: Int = Field(
        5, ge=1, le=1_000_000, description="Epochs between TensorBoard histograms of every weight and gradient."
    )


class RunConfig(_Section):
    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100, description="The run folder's suffix: runs/<time>_<name>."
    )
    data: DataConfig = Field(default_factory=DataConfig)  # built when validated: its checks read the dataset records
    model: ModelConfig
    optimizer: OptimizerSpec = Field(default_factory=lambda: SGDSpec(name="sgd"))
    loss: LossSpec = Field(
        default_factory=lambda: CrossEntropySpec(name="cross_entropy"),
        description="The training loss: cross_entropy, or your own (name: file.py:Class). The history reports "
        "cross-entropy whichever loss trains.",
    )
    schedule: ScheduleSpec = Field(default_factory=lambda: ConstantSchedule(name="constant"))
    training: TrainingConfig = TrainingConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, tree: Any) -> Any:
        # An override such as `optimizer.lr=0.1` on a config without an optimizer section
        # creates {lr: 0.1}: it means the default optimizer with that learning rate.
        if isinstance(tree, dict):
            for section, default in (("optimizer", "sgd"), ("schedule", "constant"), ("loss", "cross_entropy")):
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
    def _smoothing_is_cross_entropys(self) -> RunConfig:
        if self.training.label_smoothing and self.loss.name != "cross_entropy":
            raise ValueError(
                f"training.label_smoothing: smooths cross_entropy's targets, not those of {self.loss.name} "
                f"(got {self.training.label_smoothing:g}); set it to 0 or give the loss its own option"
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
