"""The run configuration: what a run does, as a typed schema, read from YAML and overrides.

- :mod:`~cifar_scratch.config.schema`: every section and key, with types, ranges, defaults and descriptions;
- :mod:`~cifar_scratch.config.loading`: YAML file + ``dotted.key=value`` overrides -> :class:`RunConfig`, and back;
- :mod:`~cifar_scratch.config.messages`: validation errors as one ``dotted.path: message`` line each;
- :mod:`~cifar_scratch.config.reference`: the config reference in docs/guide.md, written from the schema.
"""

from cifar_scratch.config.loading import (
    RESUMABLE_KEYS,
    apply_override,
    build_config,
    changed_keys,
    dump_config,
    load_config,
    lookup,
    parse_override,
    read_yaml_mapping,
)
from cifar_scratch.config.messages import format_error
from cifar_scratch.config.schema import (
    TTA_MODES,
    AugmentConfig,
    ConstantSchedule,
    CosineSchedule,
    CyclicSchedule,
    DataConfig,
    EarlyStoppingConfig,
    EMAConfig,
    ExponentialSchedule,
    ModelConfig,
    OneCycleSchedule,
    OutputConfig,
    PiecewiseSchedule,
    PlateauSchedule,
    RunConfig,
    StepSchedule,
    TrainingConfig,
)

__all__ = [
    "RESUMABLE_KEYS",
    "TTA_MODES",
    "AugmentConfig",
    "ConstantSchedule",
    "CosineSchedule",
    "CyclicSchedule",
    "DataConfig",
    "EMAConfig",
    "EarlyStoppingConfig",
    "ExponentialSchedule",
    "ModelConfig",
    "OneCycleSchedule",
    "OutputConfig",
    "PiecewiseSchedule",
    "PlateauSchedule",
    "RunConfig",
    "StepSchedule",
    "TrainingConfig",
    "apply_override",
    "build_config",
    "changed_keys",
    "dump_config",
    "format_error",
    "load_config",
    "lookup",
    "parse_override",
    "read_yaml_mapping",
]
