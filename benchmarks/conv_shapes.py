"""Every stride-1 3x3 convolution shape of the speedrun nets (or of the configs named), timed per
algorithm: the engine's im2col and Winograd F(4x4, 3x3) or F(5x5, 3x3) kernels (cifar_scratch/nn/fast/conv.py,
winograd.py) against an FFT convolution kept here as a prototype, for the forward pass, the input
gradient and the weight gradient (issue 28).

Usage: python benchmarks/conv_shapes.py [--batch 128 1024] [--threads 1 2] [--repeats 5] [--configs ...]

The FFT prototype: the zero-bordered images, (H + 2) x (W + 2) rounded up to a size of 2s, 3s and 5s,
go through NumPy's real 2-D FFT (pocketfft, float32 in, complex64 out) by blocks of images in the
engine's pool; the channel mixing is one complex GEMM per frequency; the inverse FFT gives the
circular correlation, of which the valid part is the output. Input gradient: the product with the
kernel's transform unconjugated (a full convolution). Weight gradient: the images' transforms times the
output gradient's, conjugated, summed over the images by the GEMMs, and the 3x3 lags of the inverse
FFT. Every result is checked against im2col first.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np

import cifar_scratch as cs
from cifar_scratch import runtime
from cifar_scratch.nn.fast import conv, parallel, winograd
from cifar_scratch.nn.layers import Conv2D
from cifar_scratch.nn.shapes import conv_geometry

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("speedrun93", "speedrun94")
#: Images per block of FFT work.
FFT_IMAGES = 16


def fast_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (pocketfft's fast sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _spectrum(images: np.ndarray, size: tuple[int, int], top_left: int) -> np.ndarray:
    """images (n, H, W, C) placed at (top_left, top_left) in zeros of ``size`` -> (P Q', n, C) complex64."""
    n, h, w, c = images.shape
    padded = np.zeros((n, *size, c), np.float32)
    padded[:, top_left : top_left + h, top_left : top_left + w] = images
    spectrum = np.fft.rfft2(padded, axes=(1, 2))  # (n, P, Q', C)
    return np.ascontiguousarray(spectrum.transpose(1, 2, 0, 3)).reshape(-1, n, c)


def _signal(spectrum: np.ndarray, n: int, size: tuple[int, int]) -> np.ndarray:
    """(P Q', n, K) complex -> (n, P, Q, K) float32 by the inverse real FFT."""
    k = spectrum.shape[2]
    freq = spectrum.reshape(size[0], size[1] // 2 + 1, n, k).transpose(2, 0, 1, 3)
    return np.fft.irfft2(freq, s=size, axes=(1, 2)).astype(np.float32, copy=False)


def fft_kernel(weight: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """weight (3, 3, C, F) -> its transform (P Q', C, F), complex64."""
    padded = np.zeros((*size, *weight.shape[2:]), np.float32)
    padded[:3, :3] = weight
    return np.fft.rfft2(padded, axes=(0, 1)).reshape(-1, *weight.shape[2:])


def fft_forward(x: np.ndarray, kernel_t: np.ndarray, size) -> np.ndarray:
    """x (N, H, W, C) -> (N, H, W, F): correlation with the kernel whose transform is ``kernel_t``."""
    n, h, w, _ = x.shape
    out = np.empty((n, h, w, kernel_t.shape[2]), np.float32)
    conjugate = kernel_t.conj()

    def work(images: slice) -> None:
        mixed = np.matmul(_spectrum(x[images], size, 1), conjugate)
        out[images] = _signal(mixed, images.stop - images.start, size)[:, :h, :w]

    parallel.for_blocks(work, n, FFT_IMAGES, single_threaded_blas=True)
    return out


def fft_input_grad(dout: np.ndarray, kernel_t: np.ndarray, size) -> np.ndarray:
    """dout (N, H, W, F) -> dx (N, H, W, C): the full convolution with the kernel, cut to the input."""
    n, h, w, _ = dout.shape
    dx = np.empty((n, h, w, kernel_t.shape[1]), np.float32)
    turned = np.ascontiguousarray(kernel_t.transpose(0, 2, 1))  # (P Q', F, C)

    def work(images: slice) -> None:
        mixed = np.matmul(_spectrum(dout[images], size, 0), turned)
        dx[images] = _signal(mixed, images.stop - images.start, size)[:, 1 : h + 1, 1 : w + 1]

    parallel.for_blocks(work, n, FFT_IMAGES, single_threaded_blas=True)
    return dx


def fft_weight_grad(x: np.ndarray, dout: np.ndarray, size) -> np.ndarray:
    """x (N, H, W, C), dout (N, H, W, F) -> dweight (3, 3, C, F): the lags 0-2 of the images' circular
    correlation with the output gradient, summed over the images by the per-frequency GEMMs."""
    n, _, _, c = x.shape
    f = dout.shape[3]
    partials = np.empty((math.ceil(n / FFT_IMAGES), size[0] * (size[1] // 2 + 1), c, f), np.complex64)

    def work(images: slice) -> None:
        xs = _spectrum(x[images], size, 1).transpose(0, 2, 1)  # (P Q', C, n)
        np.matmul(xs, _spectrum(dout[images], size, 0).conj(), out=partials[images.start // FFT_IMAGES])

    parallel.for_blocks(work, n, FFT_IMAGES, single_threaded_blas=True)
    lags = _signal(partials.sum(axis=0).reshape(-1, 1, c * f), 1, size)  # (1, P, Q, C F)
    return lags[0, :3, :3].reshape(3, 3, c, f)


def shapes(configs) -> list[tuple[int, int, int, int, int]]:
    """(H, W, C, F, pad) of every convolution of the configs that Winograd computes (winograd.applies:
    stride-1 3x3, pad 1 'same' or 0 'valid'), each once."""
    found = {}
    for name in configs:
        for _, module in cs.build_model(REPO / "configs" / f"{name}.yaml").named_modules():
            if not isinstance(module, Conv2D):
                continue
            in_hw, kernel = module.input_shape[:2], module.params["weight"].shape[:2]
            pads, out_hw = conv_geometry(in_hw, kernel, module.stride, module.padding)
            if winograd.applies(kernel, module.stride, pads, in_hw, out_hw):
                found[(*module.input_shape, module.params["weight"].shape[3], pads[0])] = None
    return list(found)


def median_ms(calls: dict, repeats: int) -> dict[str, float]:
    """Median ms of each call, after a warm-up of each, the calls interleaved so that a slow spell of the
    (shared) machine hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    args = parser.parse_args()
    machine = runtime.machine()
    print(f"{machine['cpu']} ({machine['isa']}), {', '.join(machine['blas'])}")
    print(
        "ms per call (median, interleaved): fwd, dx (input gradient), dw (weight gradient) of im2col (the engine's, dx "
        "as the backward pass with the input gradient less the one without), W (the engine's Winograd, F(4x4) or F(5x5) as the layer takes) and "
        "FFT (the prototype above, 'same' only); x: im2col total / that algorithm's total; err: the largest of the "
        "three against im2col, relative to its largest value; GFLOP: of direct convolution; v: 'valid' padding"
    )
    print(
        f"{'shape HxWxC->F':>18} {'batch':>5} {'thr':>3} {'GFLOP':>6} {'fwd':>7} {'dx':>7} {'dw':>7} "
        f"{'W fwd':>7} {'W dx':>7} {'W dw':>7} {'W x':>5} {'W err':>7} "
        f"{'F fwd':>7} {'F dx':>7} {'F dw':>7} {'F x':>5} {'F err':>7}"
    )
    rng = np.random.default_rng(0)
    for h, w, c, f, pad in shapes(args.configs):
        _, (ho, wo) = conv_geometry((h, w), (3, 3), (1, 1), pad)
        weight = (rng.standard_normal((3, 3, c, f)) / math.sqrt(9 * c)).astype(np.float32)
        size = (fast_size(h + 2), fast_size(w + 2))
        for batch in args.batch:
            x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
            dout = rng.standard_normal((batch, ho, wo, f)).astype(np.float32)
            flops = 2 * 9 * batch * ho * wo * c * f / 1e9
            for threads in args.threads:
                with runtime.compute(threads):
                    # im2col as a layer runs it: its zero-bordered copy of x kept in a workspace between calls
                    workspace = conv.Workspace()
                    reference, cache = conv.conv2d_forward(x, weight, None, 1, pad, workspace)
                    references = (reference, *conv.conv2d_backward(dout, cache, True)[:2])
                    # Winograd as a layer runs it: the forward pass keeps the input's V for the weight gradient
                    kept = winograd.frequencies_buffer(x.shape, pad, x.dtype)
                    # Its dx and dw share one pass (winograd.backward): dw alone is timed, dx is the difference
                    algorithms = {
                        "W": (
                            lambda: winograd.forward(x, weight, None, pad, kept),
                            lambda: winograd.backward(kept, dout, weight, pad)[0],
                            lambda: winograd.backward(kept, dout, weight, pad, input_grad=False)[1],
                        ),
                    }
                    if pad:  # the FFT prototype does 'same' convolutions only (it lost on all of them)
                        algorithms["F"] = (
                            lambda: fft_forward(x, fft_kernel(weight, size), size),
                            lambda: fft_input_grad(dout, fft_kernel(weight, size), size),
                            lambda: fft_weight_grad(x, dout, size),
                        )
                    errors = {
                        name: max(float(np.abs(call() - ref).max() / np.abs(ref).max()) for call, ref in zip(calls, references))
                        for name, calls in algorithms.items()
                    }
                    timed = {
                        "fwd": lambda: conv.conv2d_forward(x, weight, None, 1, pad, workspace),
                        "dx+dw": lambda: conv.conv2d_backward(dout, cache, True),
                        "dw": lambda: conv.conv2d_backward(dout, cache, False),
                    }
                    for name, calls in algorithms.items():
                        timed |= {f"{name} {part}": call for part, call in zip(("fwd", "dx", "dw"), calls)}
                    ms = median_ms(timed, args.repeats)
                ours = (ms["fwd"], ms["dx+dw"] - ms["dw"], ms["dw"])
                label = f"{h}x{w}x{c}->{f}" + ("" if pad else " v")
                cells = [f"{label:>18} {batch:>5} {threads:>3} {flops:>6.1f}"]
                cells += [" ".join(f"{v:>7.1f}" for v in ours)]
                for name in ("W", "F"):
                    if name not in algorithms:
                        cells += [" ".join(f"{'-':>7}" for _ in range(3)), f"{'-':>5} {'-':>7}"]
                        continue
                    theirs = [ms[f"{name} {part}"] for part in ("fwd", "dx", "dw")]
                    if name == "W":  # its "dx" call ran both gradients
                        theirs[1] -= theirs[2]
                    cells += [" ".join(f"{v:>7.1f}" for v in theirs), f"{sum(ours) / sum(theirs):>5.2f} {errors[name]:>7.1e}"]
                print(" ".join(cells), flush=True)


if __name__ == "__main__":
    main()
