"""Configs that extend configs: ``base: other.yaml``, merged deeply, lists replaced, overrides last."""

import pytest
import yaml

from cifar_scratch.config import load_config
from cifar_scratch.errors import ConfigError
from tests.conftest import REPO, digits_tree


def write(path, tree):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_chain_merges_mappings_replaces_lists_and_applies_overrides_last(tmp_path):
    write(tmp_path / "shared" / "base.yaml", digits_tree(epochs=5) | {"data": {"dataset": "imagefolder", "source": "photos"}})
    write(tmp_path / "shared" / "middle.yaml", {"base": "base.yaml", "training": {"epochs": 7}, "optimizer": {"lr": 0.2}})
    top = write(
        tmp_path / "top.yaml",
        {"base": "shared/middle.yaml", "model": {"layers": ["flatten", "dense"]}, "schedule": {"name": "step", "step_epochs": 2}},
    )
    config = load_config(top, ["training.seed=3"])
    assert config.training.epochs == 7 and config.training.batch_size == 64 and config.training.seed == 3
    assert config.optimizer.name == "sgd" and config.optimizer.lr == 0.2 and config.optimizer.momentum == 0.9
    assert [layer.type for layer in config.model.layers] == ["flatten", "dense"], "a list replaces the base's whole"
    assert (
        config.schedule.name == "step" and not hasattr(config.schedule, "warmup_epochs") or config.schedule.warmup_epochs == 0.0
    )
    assert config.data.source == str(tmp_path / "shared" / "photos"), "a path is relative to the file that names it"


def test_a_section_of_another_kind_replaces_the_base_section(tmp_path):
    write(tmp_path / "base.yaml", digits_tree())  # sgd with momentum and l2
    top = write(tmp_path / "top.yaml", {"base": "base.yaml", "optimizer": {"name": "adam", "lr": 0.001}})
    config = load_config(top)
    assert config.optimizer.name == "adam" and config.optimizer.l2 == 0.0, "sgd's momentum did not leak into adam"


def test_a_cycle_or_a_missing_base_is_one_error_naming_the_file(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml", "name": "a"})
    write(tmp_path / "b.yaml", {"base": "a.yaml", "name": "b"})
    with pytest.raises(ConfigError, match=r"b.yaml: base: a cycle of configs \(a.yaml -> b.yaml -> a.yaml\)"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", {"base": "nope.yaml"})
    with pytest.raises(ConfigError, match=r"c.yaml: base: .*nope.yaml is not a config file"):
        load_config(tmp_path / "c.yaml")
    write(tmp_path / "d.yaml", {"base": 3})
    with pytest.raises(ConfigError, match=r"d.yaml: base: the path of another config file \(got 3\)"):
        load_config(tmp_path / "d.yaml")


def test_the_gray_mlp_is_a_few_lines_on_top_of_the_colour_one():
    gray, colour = (load_config(REPO / "configs" / f"{name}.yaml") for name in ("mlp3class_gray", "mlp3class"))
    assert yaml.safe_load((REPO / "configs" / "mlp3class_gray.yaml").read_text())["base"] == "mlp3class.yaml"
    assert gray.data.grayscale and not colour.data.grayscale and gray.data.classes == colour.data.classes
    assert (gray.data.augment.flip, gray.data.augment.translate) == (False, 0)
    assert [layer.rate for layer in gray.model.layers if layer.type == "dropout"] == [0.3, 0.3]
    assert (gray.optimizer.lr, gray.optimizer.momentum, gray.optimizer.l2) == (0.02, 0.9, 0.005)
    assert (gray.schedule.name, gray.training.epochs, gray.training.label_smoothing, gray.training.tta) == (
        "cosine",
        50,
        0.0,
        "none",
    )
