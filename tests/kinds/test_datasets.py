"""Dataset kinds are records: the config's choices, the loader and the model's input shape read them."""

import numpy as np
import pytest

from cifar_scratch.builders import model_input_shape, num_classes
from cifar_scratch.config import build_config
from cifar_scratch.data import Loaded, Split, load_dataset
from cifar_scratch.errors import ConfigError
from cifar_scratch.kinds.datasets import DATASET_KINDS, DatasetKind, register_dataset


def config(**data):
    return build_config({"data": data, "model": {"layers": ["flatten", "dense"]}})


@pytest.mark.parametrize(
    ("dataset", "shape"),
    [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("digits", (8, 8, 1))],
)
def test_input_shapes_and_classes_come_from_the_records_without_loading(dataset, shape):
    assert model_input_shape(config(dataset=dataset)) == shape and num_classes(config(dataset=dataset)) == 10
    assert model_input_shape(config(dataset=dataset, grayscale=True))[-1] == 1


def test_an_unknown_dataset_is_one_line_with_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"data.dataset: unknown dataset 'cifar' \(did you mean 'cifar10'\?\); choose from cifar10, "
    ):
        config(dataset="cifar")


def test_what_a_dataset_takes_as_source_is_its_records():
    with pytest.raises(ConfigError, match="data.source: not used by the digits dataset"):
        config(dataset="digits", source="/x")
    with pytest.raises(ConfigError, match="data.source: required when dataset is 'imagefolder'"):
        config(dataset="imagefolder")


def test_a_new_dataset_is_one_record(tmp_path):
    def load(config, source, data_dir, progress):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (60, 5, 5, 2), dtype=np.uint8)
        return Loaded(Split(images, np.arange(60) % 3), None, ("a", "b", "c"), "noise (5x5x2)")

    register_dataset(DatasetKind("noise", load, (5, 5, 2), ("a", "b", "c"), paths=False))  # the whole record
    try:
        noise = config(dataset="noise", val_fraction=0.2, test_fraction=0.2)
        assert model_input_shape(noise) == (5, 5, 2) and num_classes(noise) == 3
        dataset = load_dataset(noise.data, tmp_path, progress=False)
        assert dataset.class_names == ("a", "b", "c") and len(dataset.train) + len(dataset.val) + len(dataset.test) == 60
    finally:
        del DATASET_KINDS["noise"]
