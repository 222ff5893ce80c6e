"""Config schema: validation messages with dotted paths, overrides, round trip of the resolved config."""

import copy

import pytest
import yaml

from cifar_scratch.config import RunConfig, build_config, dump_config, load_config
from cifar_scratch.errors import ConfigError
from tests.conftest import REPO

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
        (["optimizer.name=adamx"], "optimizer: unknown name 'adamx'; choose from 'sgd', 'adam', 'adamw', 'muon'"),
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
    config = build_config(
        copy.deepcopy(BASE),
        ["optimizer.lr=0.02", "training.epochs=30", "data.classes=[cat, 3]", "model.layers.1.units=16", "schedule.name=cosine"],
    )
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
    configs = sorted((REPO / "configs").glob("*.yaml"))
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


# --------------------------------------------------------------------------- hostile input
def tree() -> dict:
    return copy.deepcopy(BASE)


BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "model: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


@pytest.mark.parametrize(
    "content, message",
    ids=["binary", "deep", "long-int", "alias-bomb", "huge"],
    argvalues=[
        (b"\xff\xfe\x00\x01", "not UTF-8 text"),
        (b"a: " + b"[" * 1000 + b"]" * 1000, "nested too deeply"),
        (b"training: {seed: " + b"9" * 5000 + b"}", "a number longer than Python converts"),
        (BOMB.encode(), "expands to more than 100,000 values"),
        (b"x" * 1_000_001, "larger than 1,000,000 bytes"),
    ],
)
def test_files_that_are_not_configs_are_one_line(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert len(info.value.lines) == 1 and len(str(info.value)) < 300


def test_error_lines_never_echo_huge_values():
    with pytest.raises(ConfigError) as info:
        build_config(tree(), ["name=" + "x" * 100_000])
    assert len(str(info.value)) < 300 and "chars)" in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.seed=-1", "training.seed: Input should be greater than or equal to 0"),
        ("data.split_seed=-5", "data.split_seed: Input should be greater than or equal to 0"),
        ("optimizer.lr=.inf", "optimizer.lr: Input should be a finite number"),
        ("optimizer.lr=1.0e+300", "optimizer.lr: Input should be less than or equal to 100"),
        ("optimizer.weight_decay=1.0e+25", "optimizer.weight_decay: Input should be less than or equal to 1"),
        ("optimizer={name: sgd, lr: 50, weight_decay: 0.5}", "optimizer.weight_decay: lr \\* weight_decay must be below 1"),
        ("optimizer={name: adam, betas: [0.9, 1.0]}", "optimizer.betas.1: Input should be less than 1"),
        ("schedule.warmup_epochs=.inf", "schedule.warmup_epochs: Input should be a finite number"),
        ("training.epochs=true", "training.epochs: Input should be a valid integer"),
        ("optimizer.lr=true", "optimizer.lr: Input should be a number, not a boolean"),
        ("model.layers.2={type: leaky_relu, alpha: .inf}", "model.layers.2.alpha: Input should be a finite number"),
        ("schedule={name: cyclic, base_lr: 0.5}", "schedule.base_lr: must be below optimizer.lr"),
        ('data.source="a\\0b"', "data.source: must be a path"),
    ],
)
def test_values_that_would_crash_or_train_to_nan_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(tree(), [override])


def test_switching_optimizer_suggests_replacing_the_section():
    config = tree()
    config["optimizer"] = {"name": "sgd", "momentum": 0.9}
    with pytest.raises(
        ConfigError,
        match="momentum belongs to sgd / muon, not adam: to switch, replace the whole section, e.g. optimizer=\\{name: adam, lr: ...\\}",
    ):
        build_config(config, ["optimizer.name=adam"])


def test_relative_source_is_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    config = tree()
    config["data"] = {"dataset": "imagefolder", "source": "../images"}
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert load_config(folder / "c.yaml").data.source == str(tmp_path / "project" / "images")
    # On the command line a relative path means the current folder, as in any shell command.
    assert load_config(folder / "c.yaml", ["data.source=elsewhere"]).data.source == str(tmp_path / "elsewhere")


def test_alternating_flips_need_online_augmentation():
    assert build_config(tree(), ["data.augment={flip: alternate}"]).data.augment.flip == "alternate"
    with pytest.raises(ConfigError, match="data.augment.flip: alternate flips follow the epochs"):
        build_config(tree(), ["data.augment={flip: alternate, copies: 2}"])
    with pytest.raises(ConfigError, match="data.augment.flip"):
        build_config(tree(), ["data.augment={flip: sometimes}"])
