"""Gradient clipping by global norm, against PyTorch's definition, and in a run."""

import numpy as np
import pytest

import cifar_scratch as cs
from cifar_scratch.optim.clipping import clip_by_global_norm, global_norm, squared_norms
from tests.conftest import digits_tree


def grads_of(seed=0):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((30, 20)).astype(np.float32), "a.bias": rng.standard_normal(20).astype(np.float32)}


def test_the_global_norm_is_the_norm_of_all_gradients_together():
    grads = grads_of()
    together = np.concatenate([g.ravel() for g in grads.values()]).astype(np.float64)
    assert global_norm(squared_norms(grads, grads)) == pytest.approx(np.linalg.norm(together), rel=1e-6)


def test_clipping_scales_to_max_norm_and_leaves_small_gradients_alone():
    grads = grads_of()
    norm = global_norm(squared_norms(grads, grads))
    before = {k: v.copy() for k, v in grads.items()}
    assert not clip_by_global_norm(grads, grads, norm * 2, norm)
    assert all(np.array_equal(grads[k], before[k]) for k in grads)
    assert clip_by_global_norm(grads, grads, 1.0, norm)
    assert global_norm(squared_norms(grads, grads)) == pytest.approx(1.0, rel=1e-5)
    for k in grads:  # the direction is kept
        np.testing.assert_allclose(grads[k] * norm, before[k], rtol=1e-4)
        assert grads[k].dtype == np.float32


def test_clipping_only_touches_the_names_it_is_given():
    grads = grads_of()
    frozen = grads["a.bias"].copy()
    norm = global_norm(squared_norms(grads, ["a.weight"]))
    clip_by_global_norm(grads, ["a.weight"], 0.1, norm)
    assert np.array_equal(grads["a.bias"], frozen)


@pytest.mark.slow
def test_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch", reason="torch (test extra) is the reference")
    grads = grads_of(3)
    params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = torch.from_numpy(g.copy())
    total = torch.nn.utils.clip_grad_norm_(params, max_norm=2.0)
    norm = global_norm(squared_norms(grads, grads))
    clip_by_global_norm(grads, grads, 2.0, norm)
    assert norm == pytest.approx(float(total), rel=1e-5)
    for p, g in zip(params, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_clipped_run_records_the_norm_before_clipping_and_trains_otherwise(tmp_path):
    plain = cs.train(digits_tree(epochs=2), runs_dir=tmp_path)
    clipped = cs.train(digits_tree(epochs=2, grad_clip={"max_norm": 0.05}), runs_dir=tmp_path)
    loose = cs.train(digits_tree(epochs=2, grad_clip={"max_norm": 1e9}), runs_dir=tmp_path)
    norms = [row["grad_norm"] for row in plain.history]
    assert all(n > 0.05 for n in norms)
    assert all(row["grad_norm"] > 0.05 for row in clipped.history)  # after clipping no step's would be
    assert clipped.history[-1]["train_loss"] != plain.history[-1]["train_loss"]
    assert loose.history == [
        {**row, "epoch_time": loose_row["epoch_time"]} for row, loose_row in zip(plain.history, loose.history)
    ]
