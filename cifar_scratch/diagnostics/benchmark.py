"""``cifar-scratch benchmark``: training and inference throughput of a config's model, where the
time goes per layer, peak memory, achieved GFLOP/s against this machine's float32 GEMM peak, and
optionally the same model in PyTorch timed in the same run, interleaved with ours."""

from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from cifar_scratch import runtime
from cifar_scratch.builders import build_loss, build_model, build_optimizer, model_input_shape, num_classes
from cifar_scratch.config import RunConfig
from cifar_scratch.errors import UserError
from cifar_scratch.kinds.optimizers import OPTIMIZER_KINDS
from cifar_scratch.nn import layers as L

#: Keys of the JSON written by ``--json`` (documented in the README).
JSON_FIELDS = (
    "config",
    "batch_size",
    "steps",
    "repeats",
    "threads",
    "engine",
    "conv_algorithm",
    "machine",
    "train",
    "inference",
    "layers",
    "peak_memory_mb",
    "gflop_per_train_step",
    "achieved_gflops",
    "gemm_peak_gflops",
    "torch",
)


def layer_flops(layer: L.Layer, batch: int) -> tuple[float, float]:
    """(forward, backward) floating-point operations of a built layer's matrix products for one batch.

    Backward counts the weight gradient and the input gradient (2x forward); element-wise work is
    ignored, so "achieved GFLOP/s" measures how well the GEMMs are fed.
    """
    in_shape, out_shape = layer.input_shape, layer.output_shape
    if isinstance(layer, L.Conv2D):
        forward = 2.0 * batch * out_shape[0] * out_shape[1] * out_shape[2] * layer.kernel[0] * layer.kernel[1] * in_shape[2]
    elif isinstance(layer, L.Dense):
        forward = 2.0 * batch * in_shape[0] * layer.units
    else:
        return 0.0, 0.0
    return forward, 2.0 * forward


def gemm_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 GEMM rate of this machine's BLAS at the current thread limit."""
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call."""
    fn()
    return 1e3 * statistics.median(_timed(fn) for _ in range(repeats))


class OurModel:
    """Training step (forward, loss, backward without the unused input gradient, optimizer update) and inference step."""

    def __init__(self, config: RunConfig, batch: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.model = build_model(config.model, model_input_shape(config), num_classes(config), rng, batch)
        self.optimizer = build_optimizer(config.optimizer, self.model)
        self.x = rng.standard_normal((batch, *self.model.input_shape)).astype(np.float32)
        self.labels = rng.integers(0, num_classes(config), batch)
        self.lr = config.optimizer.lr
        self.smoothing = config.training.label_smoothing
        self.loss = build_loss(config)

    def train_step(self) -> None:
        self.model.train()
        logits = self.model.forward(self.x)
        _, dlogits = self.loss(logits, self.labels)
        self.model.backward(dlogits, input_grad=False)
        self.optimizer.step(self.model.grads, self.lr)

    def inference_step(self) -> None:
        self.model.eval()
        self.model.forward(self.x)

    def leaves(self) -> list[tuple[str, L.Layer]]:
        """(dotted name, layer) of every leaf module, in forward order."""
        return [(name, module) for name, module in self.model.named_modules() if isinstance(module, L.Layer)]

    def layer_times(self, repeats: int) -> list[dict]:
        """Median forward and backward milliseconds of each leaf over ``repeats`` ordinary training steps:
        each leaf's methods are wrapped with a timer while the model runs as in training."""
        times = {name: {"forward": [], "backward": [], "input_grad": True} for name, _ in self.leaves()}

        def timed(name, method, phase):
            def run(x, **options):
                if phase == "backward":
                    times[name]["input_grad"] = options.get("input_grad", True)
                start = time.perf_counter()
                out = method(x, **options)
                times[name][phase].append(time.perf_counter() - start)
                return out

            return run

        for name, layer in self.leaves():
            layer.forward, layer.backward = (
                timed(name, layer.forward, "forward"),
                timed(name, layer.backward, "backward"),
            )
        try:
            for _ in range(repeats):
                self.model.train()
                logits = self.model.forward(self.x)
                _, dlogits = self.loss(logits, self.labels)
                self.model.backward(dlogits, input_grad=False)
        finally:
            for _, layer in self.leaves():
                del layer.forward, layer.backward  # back to the class's methods
        rows = []
        for name, layer in self.leaves():
            t = times[name]
            forward, backward = layer_flops(layer, len(self.x))
            rows.append(
                {
                    "layer": name,
                    "type": type(layer).__name__,
                    "output_shape": list(layer.output_shape),
                    "forward_ms": 1e3 * statistics.median(t["forward"]),
                    "backward_ms": 1e3 * statistics.median(t["backward"]) if t["backward"] else 0.0,
                    # Backward without an input gradient (the first trained layer) does half the work.
                    "gflop": (forward + (backward if t["input_grad"] else backward / 2) * bool(t["backward"])) / 1e9,
                }
            )
        return rows

    def peak_memory_mb(self) -> float:
        """Peak of NumPy allocations during one training step (tracemalloc sees NumPy's buffers)."""
        tracemalloc.start()
        try:
            self.train_step()
            return tracemalloc.get_traced_memory()[1] / 1e6
        finally:
            tracemalloc.stop()


class TorchModel:
    """The same architecture and weights in PyTorch (CPU, float32), same batch and optimizer family."""

    def __init__(self, ours: OurModel, config: RunConfig, threads: int | None):
        from cifar_scratch.diagnostics.torch_reference import build_torch_model, import_torch, to_torch_input

        torch = self.torch = import_torch()
        if threads:
            torch.set_num_threads(threads)
        self.model, names = build_torch_model(ours.model)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        kind = OPTIMIZER_KINDS[config.optimizer.name]
        if kind.torch is None:
            raise UserError(f"--against torch: no PyTorch twin is defined for the {kind.name!r} optimizer")
        self.optimizers = kind.torch(torch, config.optimizer, trained, names, ours.optimizer)
        self.x = to_torch_input(ours.x)
        self.labels = torch.from_numpy(ours.labels)
        self.smoothing = ours.smoothing

    def train_step(self) -> None:
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.labels, label_smoothing=self.smoothing)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()

    def inference_step(self) -> None:
        self.model.eval()
        with self.torch.inference_mode():
            self.model(self.x)

    def info(self) -> dict:
        """Its version and the vector kernels it runs: ATen's (ATEN_CPU_CAPABILITY caps them) and
        oneDNN's cap (ONEDNN_MAX_CPU_ISA), which emulating an AVX2 CPU on an AVX-512 one must set both."""
        return {
            "version": self.torch.__version__,
            "aten_cpu_capability": self.torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        }


def _rates(times: list[float], images: int) -> dict:
    rates = sorted(images / t for t in times)
    return {
        "images_per_s_median": statistics.median(rates),
        "images_per_s_min": rates[0],
        "images_per_s_max": rates[-1],
        "step_ms_median": 1e3 * statistics.median(times),
        "samples": len(times),
    }


def run_benchmark(
    config: RunConfig,
    batch_size: int,
    steps: int,
    repeats: int,
    threads: int | None,
    against_torch: bool = False,
    warmup: int = 2,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Time ``repeats`` blocks of ``steps`` steps after ``warmup`` steps; with torch, blocks alternate ours/torch."""
    ours = OurModel(config, batch_size)
    theirs = TorchModel(ours, config, threads) if against_torch else None
    contenders = {"ours": ours, **({"torch": theirs} if theirs else {})}
    results: dict = {
        "config": config.name,
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "threads": threads,
        "engine": config.training.engine,
        "conv_algorithm": config.training.conv_algorithm,
        "machine": runtime.machine(threads),
    }
    for phase in ("train", "inference"):
        for model in contenders.values():
            for _ in range(warmup):
                getattr(model, f"{phase}_step")()
        times = {name: [] for name in contenders}
        for repeat in range(repeats):
            for name, model in contenders.items():  # interleaved: a slow spell of the machine hits both
                step = getattr(model, f"{phase}_step")
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                times[name].append((time.perf_counter() - start) / steps)
            progress(f"{phase} repeat {repeat + 1}/{repeats}")
        results[phase] = {name: _rates(t, batch_size) for name, t in times.items()}
        if theirs:
            results[phase]["ratio"] = (
                results[phase]["ours"]["images_per_s_median"] / results[phase]["torch"]["images_per_s_median"]
            )
    results["layers"] = ours.layer_times(max(3, repeats))
    results["peak_memory_mb"] = ours.peak_memory_mb()
    results["gflop_per_train_step"] = sum(row["gflop"] for row in results["layers"])
    results["achieved_gflops"] = results["gflop_per_train_step"] / (results["train"]["ours"]["step_ms_median"] / 1e3)
    results["gemm_peak_gflops"] = gemm_peak_gflops()
    results["torch"] = theirs.info() if theirs else None
    return results
