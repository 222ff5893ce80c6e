"""The documentation cannot drift from the schema: the full reference is written from it, and the
README's config example must be a valid config."""

import re

import yaml

from cifar_scratch.config import RunConfig, build_config
from cifar_scratch.config import reference as config_reference
from tests.conftest import REPO

GUIDE = REPO / "docs" / "guide.md"


def test_the_guides_config_reference_is_what_the_schema_says():
    text = GUIDE.read_text(encoding="utf-8")
    written = text[text.index(config_reference.START) + len(config_reference.START) : text.index(config_reference.END)]
    assert written.strip() == config_reference.render().strip(), (
        "docs/guide.md's config reference is stale: run python -m cifar_scratch.config.reference docs/guide.md"
    )


def test_every_key_the_reference_lists_has_a_description():
    rendered = config_reference.render()
    empty = [line for line in rendered.splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not empty, empty


def test_the_readmes_config_example_is_a_valid_config_with_the_schemas_keys():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("name: ")]
    config = build_config(yaml.safe_load(block))  # unknown keys, wrong values: a ConfigError
    assert isinstance(config, RunConfig)


def test_the_reference_renders_types_ranges_and_registered_choices():
    rendered = config_reference.render()
    assert "| `dataset` | `cifar10` | `mnist` | `fashion_mnist` | `digits` | `imagefolder` |" not in rendered
    assert "`cifar10` \\| `mnist` \\| `fashion_mnist` \\| `digits` \\| `imagefolder`" in rendered
    assert "| `split_seed` | int in [0, 4,294,967,294] | `0` |" in rendered
    assert "#### model.layers: `type: conv2d`" in rendered and "#### optimizer: `name: muon`" in rendered
