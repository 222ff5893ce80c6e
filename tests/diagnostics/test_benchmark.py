"""`cifar-scratch benchmark`: runs on a tiny config and writes the documented JSON fields."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cifar_scratch.cli import app
from cifar_scratch.diagnostics.benchmark import JSON_FIELDS, layer_flops
from cifar_scratch.diagnostics.gradcheck import make_layer
from tests.conftest import REPO

runner = CliRunner()


def benchmark(*args):
    return runner.invoke(app, ["benchmark", *map(str, args)])


def test_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = benchmark(REPO / "configs" / "digits.yaml", "--steps", 1, "--repeats", 2, "--threads", 1, "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert tuple(report) == JSON_FIELDS
    assert report["batch_size"] == 32 and report["train"]["ours"]["samples"] == 2
    assert report["train"]["ours"]["images_per_s_median"] > 0 and report["gemm_peak_gflops"] > 0
    assert [row["layer"] for row in report["layers"]] == ["flatten1", "dense1", "relu1", "dense2"]
    assert report["torch"] is None
    assert "images/s (median)" in result.output


def test_benchmark_names_the_blas_kernels_and_a_pinned_core_type(tmp_path, monkeypatch):
    """OpenBLAS's kernels decide the GEMM peak, so the report says which ran and whether the environment chose them."""
    from cifar_scratch.runtime import machine, vector_isa

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    info = machine(1)
    assert info["threads"] == 1 and info["isa"] in ("AVX-512", "AVX2", "no AVX2")
    assert [vector_isa({"avx2", "avx512f"}), vector_isa({"avx2", "fma"}), vector_isa({"sse4_2"})] == [
        "AVX-512",
        "AVX2",
        "no AVX2",
    ]
    assert info["openblas_coretype"] == "Haswell"
    assert any("kernels)" in line for line in info["blas"] if line.startswith("openblas"))
    result = benchmark(REPO / "configs" / "digits.yaml", "--steps", 1, "--repeats", 1, "--threads", 1)
    assert result.exit_code == 0 and "note: OPENBLAS_CORETYPE=Haswell pins OpenBLAS's kernels" in result.output
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert machine(1)["openblas_coretype"] is None


def test_numpy_simd_names_its_target_and_can_be_held_to_avx2():
    """Emulating an AVX2 CPU on an AVX-512 one pins NumPy's own loops too, and the report says so."""
    import os
    import subprocess
    import sys

    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__

    from cifar_scratch.runtime import machine, numpy_simd

    assert numpy_simd() in (*__cpu_dispatch__, *__cpu_baseline__)
    assert machine(1)["numpy_simd"] == numpy_simd()
    if machine(1)["isa"] != "AVX-512" or "X86_V4" not in __cpu_dispatch__:
        pytest.skip("needs an AVX-512 CPU and a NumPy that dispatches to it, to turn AVX-512 off")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
    code = "from cifar_scratch.runtime import machine; m = machine(1); print(m['numpy_simd'], m['numpy_disabled_features'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "X86_V3" and "X86_V4" in out.stdout


def test_conv_flop_count():
    layer = make_layer("conv2d", {"filters": 8})
    layer.build((6, 6, 4), np.random.default_rng(0))
    forward, backward = layer_flops(layer, batch=2)
    assert forward == 2 * 2 * 36 * 8 * 9 * 4 and backward == 2 * forward


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["optimizer={name: muon, normalize_weights: true}"]], ids=["config", "muon"])
def test_benchmark_against_torch(tmp_path, overrides):
    pytest.importorskip("torch", reason="PyTorch is an optional extra: pip install torch==2.13.0")
    out = tmp_path / "bench.json"
    options = "--batch-size 16 --steps 1 --repeats 2 --threads 1 --against torch".split()
    result = benchmark(REPO / "configs" / "mnist_cnn.yaml", *overrides, *options, "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["torch"]["version"].startswith("2.13") and report["train"]["ratio"] > 0
    assert "ours / torch: train" in result.output


def test_median_ms_warms_up_once_then_times_each_call():
    from cifar_scratch.diagnostics.benchmark import median_ms

    calls = []
    assert median_ms(lambda: calls.append(1), repeats=4) >= 0.0
    assert len(calls) == 5


def test_benchmark_times_the_same_muon_update_in_torch():
    """benchmark --against torch times our Muon step in PyTorch: both take the same step from the same gradient."""
    torch = pytest.importorskip("torch", reason="PyTorch is an optional extra: pip install torch==2.13.0")
    from cifar_scratch.builders import build_optimizer
    from cifar_scratch.diagnostics.torch_reference import build_torch_model
    from cifar_scratch.kinds.optimizers import MuonSpec, torch_muon
    from cifar_scratch.nn.layers import Conv2D, Dense, Flatten
    from cifar_scratch.nn.model import Sequential

    model = Sequential([Conv2D(5), Flatten(), Dense(2)])
    model.build((6, 6, 3), np.random.default_rng(0))
    spec = MuonSpec(name="muon", lr=0.1, momentum=0.6, ns_steps=3, normalize_weights=True)
    ours = build_optimizer(spec, model)
    torch_model, names = build_torch_model(model)
    kernel, to_ours = names["conv2d1.weight"]
    theirs = torch_muon(torch, [kernel], spec.lr, spec.momentum, spec.nesterov, spec.ns_steps, spec.normalize_weights)
    rng = np.random.default_rng(1)
    for _ in range(2):
        grad = rng.standard_normal(model.params["conv2d1.weight"].shape).astype(np.float32)
        ours.step({**{n: np.zeros_like(p) for n, p in model.params.items()}, "conv2d1.weight": grad}, spec.lr)
        kernel.grad = torch.from_numpy(grad.transpose(3, 2, 0, 1).copy())  # (kh, kw, C, F) -> (F, C, kh, kw)
        theirs.step()
    np.testing.assert_allclose(to_ours(kernel), model.params["conv2d1.weight"], atol=1e-5)
