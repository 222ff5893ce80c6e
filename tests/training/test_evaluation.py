import numpy as np
import pytest

from cifar_scratch.builders import build_model
from cifar_scratch.config.schema import ModelConfig
from cifar_scratch.data import Normalizer, Split
from cifar_scratch.data.augment import tta_views
from cifar_scratch.training.evaluation import evaluate_split, scores, split_logits


@pytest.fixture
def measured():
    rng = np.random.default_rng(0)
    config = ModelConfig.model_validate({"layers": [{"type": "conv2d", "filters": 4}, "relu", "flatten", {"type": "dense"}]})
    model = build_model(config, (8, 8, 3), 5, rng)
    split = Split(rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), rng.integers(0, 5, 10))
    return model, Normalizer.fit(split.images, "standardize"), split


@pytest.mark.parametrize("tta", ["flip", "flip+translate"])
def test_one_pass_gives_the_plain_and_the_tta_logits_with_each_view_forwarded_once(measured, tta):
    model, normalizer, split = measured
    calls = []
    forward = model.forward
    model.forward = lambda x: calls.append(len(x)) or forward(x)
    plain, averaged = split_logits(model, normalizer, split, tta, batch_size=4)
    views = len(tta_views(split.images[:1], tta))
    assert sum(calls) == views * len(split), "the identity view is not forwarded a second time for the plain logits"
    del model.forward
    assert np.array_equal(plain, evaluate_split(model, normalizer, split, batch_size=4)[2])
    assert np.array_equal(averaged, evaluate_split(model, normalizer, split, batch_size=4, tta=tta)[2])
    assert not np.array_equal(plain, averaged)
    assert split_logits(model, normalizer, split)[1] is None


def test_scores_are_cross_entropy_and_accuracy_and_nan_when_empty():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]], np.float32)
    loss, accuracy = scores(logits, np.array([0, 0, 0]))
    expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1)), np.log(1 / (1 + np.e)), np.log(np.exp(3) / (np.exp(3) + 1))])
    assert loss == pytest.approx(expected, rel=1e-5) and accuracy == pytest.approx(2 / 3)
    assert all(np.isnan(scores(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))))
