"""Config schema: validation messages with dotted paths, overrides, round trip of the resolved config."""

import copy

import pytest
import yaml

from cifar_scratch.config import RunConfig, build_config, dump_config, load_config
from cifar_scratch.errors import ConfigError

BASE = {"model": {"layers": ["flatten", {"type": "dense", "units": 8}, "relu", {"type": "dense"}]}}


def errors(overrides, tree=None):
    with pytest.raises(ConfigError) as info:
        build_config(copy.deepcopy(tree or BASE), overrides)
    return info.value.lines


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["training.epocs=3"], "training.epocs: unknown key (did you mean 'epochs'?)"),
        (["optimizer.lr=-1"], "optimizer.lr: Input should be greater than 0 (got -1)"),
        (["model.layers.1.unitz=3"], "model.layers.1.unitz: unknown key (did you mean 'units'?)"),
        (["optimizer.name=adamx"], "optimizer: unknown name 'adamx'; choose from 'sgd', 'adam', 'adamw'"),
        (["model.layers.0=bogus"], "model.layers.0: unknown type 'bogus'"),
        (["data.dataset=imagefolder"], "data.source: required when dataset is 'imagefolder'"),
        (["optimizer={name: sgd, nesterov: true}"], "optimizer.nesterov: needs momentum > 0"),
        (["data.augment.flp=true"], "data.augment.flp: unknown key (did you mean 'flip'?)"),
        (["data.augment.translate=-1"], "data.augment.translate: Input should be greater than or equal to 0 (got -1)"),
        (["data.augment={copies: 2}"], "data.augment.copies: needs at least one of flip, translate, cutout"),
        (["data.augment.padding=wrap"], "data.augment.padding: Input should be 'reflect' or 'zero' (got 'wrap')"),
        (["data.val_fraction=0", "training.early_stopping={patience: 2}"], "training.early_stopping: needs a validation split"),
        (["training.batch_size=abc"], "training.batch_size: Input should be a valid integer"),
        (["model.layers.9.units=3"], "model.layers.9: no list item 9"),
        (["optimizer.lr"], "optimizer.lr: overrides look like dotted.key=value"),
        (["optimizer={name: adam, momentum: 0.9}"], "optimizer.momentum: unknown key; allowed: name, lr, betas, eps, l2"),
    ],
)
def test_error_lines(overrides, expected):
    lines = errors(overrides)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_overrides_apply_and_parse_yaml():
    config = build_config(copy.deepcopy(BASE), ["optimizer.lr=0.02", "training.epochs=30", "data.classes=[cat, 3]",
                                                 "model.layers.1.units=16", "schedule.name=cosine"])
    assert config.optimizer.lr == 0.02 and config.training.epochs == 30
    assert config.data.classes == ["cat", 3]
    assert config.model.layers[1].units == 16 and config.schedule.name == "cosine"


def test_resolved_config_round_trips():
    config = build_config(copy.deepcopy(BASE), ["optimizer={name: adamw, lr: 0.003}", "schedule={name: onecycle}"])
    text = dump_config(config)
    assert RunConfig.model_validate(yaml.safe_load(text)) == config
    assert text.splitlines()[0] == "name: run"


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  layers: [flatten\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))
    assert configs, "no shipped configs found"
    for path in configs:
        load_config(path)


def test_override_into_a_null_section():
    tree = copy.deepcopy(BASE)
    tree["training"] = {"early_stopping": None}
    config = build_config(tree, ["training.early_stopping.patience=3"])
    assert config.training.early_stopping.patience == 3


def test_override_through_a_value_is_refused():
    tree = copy.deepcopy(BASE)
    tree["training"] = {"epochs": 10}
    assert errors(["training.epochs.x=3"], tree) == ["training.epochs: is a value, not a section (got 10)"]
    assert errors(["model.layers.1.units.x=3"]) == ["model.layers.1.units: is a value, not a section (got 8)"]
