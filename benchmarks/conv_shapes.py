"""Every 3x3 convolution shape of the speedrun nets, timed per algorithm: the engine's im2col kernels
against Winograd F(4x4, 3x3) (Lavin & Gray, 2016) for the forward pass, the input gradient and the
weight gradient: a prototype kept here until it earns a place in the engine (issue 28).

Usage: python benchmarks/conv_shapes.py [--batch 128 1024] [--threads 1 2] [--repeats 5] [--configs ...]

The prototype runs the way the issue asks: tiles gathered by blocks of images in the engine's thread
pool; the 6x6 input transform as one GEMM with the 36x36 Kronecker matrix B^T (x) B^T, the kernel's
as one with G (x) G; the channel mixing as 36 GEMMs, one per frequency (4x fewer multiplications than
direct convolution); the output transform as one GEMM with A^T (x) A^T. The input gradient is the
same convolution of the output gradient with the kernel turned and its channels swapped; the weight
gradient runs the transforms transposed: dU[k] = V[k]^T (A dy A^T)[k] summed over tiles (36 GEMMs
whose inner dimension is the tiles), dW = G^T dU G. Every call is checked against im2col first.
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
from cifar_scratch.nn.fast import conv, parallel
from cifar_scratch.nn.layers import Conv2D

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("speedrun93", "speedrun94")

# F(4x4, 3x3): out = A^T [ (G g G^T) * (B^T d B) ] A for a 6x6 input tile d and 3x3 kernel g.
BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=np.float64)
INPUT_T = np.kron(BT, BT).astype(np.float32)  # (36, 36): flattened 6x6 tile -> its 36 frequencies
OUTPUT_T = np.kron(AT, AT).astype(np.float32)  # (16, 36): 36 frequencies -> the flattened 4x4 output tile
KERNEL_T = np.kron(G, G).astype(np.float32)  # (36, 9): flattened 3x3 kernel -> its 36 frequencies
TILES_PER_BLOCK = 512


def winograd_kernel(weight: np.ndarray) -> np.ndarray:
    """weight (3, 3, C, F) -> U (36, C, F): G g G^T for every (c, f), frequencies first (one GEMM)."""
    return (KERNEL_T @ weight.reshape(9, -1)).reshape(36, *weight.shape[2:])


def tiled(x: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """x (N, H, W, C) -> (x zero-bordered to (N, 4 th + 2, 4 tw + 2, C), th, tw, images per block): one pixel
    of 'same' padding on top and left, the rest so that th x tw tiles of 4x4 outputs cover H x W."""
    n, h, w, c = x.shape
    th, tw = -(-h // 4), -(-w // 4)
    padded = np.zeros((n, 4 * th + 2, 4 * tw + 2, c), x.dtype)
    padded[:, 1 : h + 1, 1 : w + 1] = x
    return padded, th, tw, max(1, -(-TILES_PER_BLOCK // (th * tw)))  # the mixing GEMMs need rows: tiles


def input_frequencies(source: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Zero-bordered images (n, 4 th + 2, 4 tw + 2, C) -> V (36, n th tw, C): each 6x6 tile (stride 4)
    gathered by 36 strided copies, then B^T d B for all of them as one GEMM."""
    count, c = source.shape[0], source.shape[3]
    gathered = np.empty((36, count, th, tw, c), source.dtype)
    for i in range(6):
        for j in range(6):
            gathered[i * 6 + j] = source[:, i : i + 4 * th : 4, j : j + 4 * tw : 4]
    return (INPUT_T @ gathered.reshape(36, -1)).reshape(36, -1, c)


def winograd_forward(x: np.ndarray, u: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x (N, H, W, C), U from :func:`winograd_kernel` -> out (N, H, W, F): a stride-1 'same' 3x3 convolution."""
    n, h, w, _ = x.shape
    f = u.shape[2]
    padded, th, tw, block = tiled(x)
    out = np.empty((n, 4 * th, 4 * tw, f), x.dtype)

    def work(images: slice) -> None:
        mixed = np.matmul(input_frequencies(padded[images], th, tw), u)  # (36, tiles, F)
        result = (OUTPUT_T @ mixed.reshape(36, -1)).reshape(4, 4, -1, th, tw, f)
        target = out[images]
        for a in range(4):
            for b in range(4):
                target[:, a::4, b::4] = result[a, b]

    parallel.for_blocks(work, n, block, single_threaded_blas=True)
    out = out[:, :h, :w]
    if bias is not None:
        out = out + bias
    return out


def winograd_input_grad(dout: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """dout (N, H, W, F) -> dx (N, H, W, C): the input gradient of a stride-1 'same' 3x3 convolution is
    itself one, of dout with the kernel turned 180 degrees and its channels swapped."""
    return winograd_forward(dout, winograd_kernel(weight[::-1, ::-1].transpose(0, 1, 3, 2)), None)


def winograd_weight_grad(x: np.ndarray, dout: np.ndarray) -> np.ndarray:
    """x (N, H, W, C), dout (N, H, W, F) -> dweight (3, 3, C, F), by the transposed transforms: for each
    tile, dM = A dy A^T (6x6) is the gradient of the 36 products, dU[k] = sum over tiles of V[k]^T dM[k]
    (36 GEMMs whose inner dimension is the tiles), and dW = G^T dU G."""
    n, h, w, c = x.shape
    f = dout.shape[3]
    padded, th, tw, block = tiled(x)
    dpadded = np.zeros((n, 4 * th, 4 * tw, f), x.dtype)
    dpadded[:, :h, :w] = dout
    partial = np.zeros((-(-n // block), 36, c, f), np.float32)

    def work(images: slice) -> None:
        grad = dpadded[images]
        count = grad.shape[0]
        freq = input_frequencies(padded[images], th, tw)
        tiles = np.empty((16, count, th, tw, f), x.dtype)
        for a in range(4):
            for b in range(4):
                tiles[a * 4 + b] = grad[:, a::4, b::4]
        dmixed = (OUTPUT_T.T @ tiles.reshape(16, -1)).reshape(36, -1, f)
        np.matmul(freq.transpose(0, 2, 1), dmixed, out=partial[images.start // block])

    parallel.for_blocks(work, n, block, single_threaded_blas=True)
    du = partial.sum(axis=0)  # (36, C, F)
    return (KERNEL_T.T @ du.reshape(36, -1)).reshape(3, 3, c, f)


def shapes(configs) -> list[tuple[int, int, int, int]]:
    """(H, W, C, F) of every stride-1 3x3 'same' convolution of the configs, each once."""
    found = {}
    for name in configs:
        for _, module in cs.build_model(REPO / "configs" / f"{name}.yaml").named_modules():
            if isinstance(module, Conv2D) and module.params["weight"].shape[:2] == (3, 3) and module.padding == "same":
                h, w, c = module.input_shape
                found[(h, w, c, module.params["weight"].shape[3])] = None
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
        "ms per call (median, interleaved). im2col: fwd, dx (the backward pass with the input gradient less the one "
        "without), dw; W: Winograd F(4x4, 3x3), the prototype; ratio: im2col total / Winograd total; rel err: the "
        "largest of the three against im2col, relative to its largest value; GFLOP: of direct convolution"
    )
    print(
        f"{'shape HxWxC->F':>18} {'batch':>5} {'thr':>3} {'GFLOP':>6} {'fwd':>7} {'dx':>7} {'dw':>7} "
        f"{'W fwd':>7} {'W dx':>7} {'W dw':>7} {'ratio':>6} {'rel err':>8}"
    )
    rng = np.random.default_rng(0)
    for h, w, c, f in shapes(args.configs):
        weight = (rng.standard_normal((3, 3, c, f)) / math.sqrt(9 * c)).astype(np.float32)
        u = winograd_kernel(weight)
        for batch in args.batch:
            x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
            dout = rng.standard_normal((batch, h, w, f)).astype(np.float32)
            flops = 2 * 9 * batch * h * w * c * f / 1e9
            for threads in args.threads:
                with runtime.compute(threads):
                    reference, cache = conv.conv2d_forward(x, weight, None)
                    dx_ref, dw_ref, _ = conv.conv2d_backward(dout, cache, True)
                    error = max(
                        float(np.abs(ours - ref).max() / np.abs(ref).max())
                        for ours, ref in (
                            (winograd_forward(x, u, None), reference),
                            (winograd_input_grad(dout, weight), dx_ref),
                            (winograd_weight_grad(x, dout), dw_ref),
                        )
                    )
                    ms = median_ms(
                        {
                            "fwd": lambda: conv.conv2d_forward(x, weight, None),
                            "wino": lambda: winograd_forward(x, u, None),
                            "dx+dw": lambda: conv.conv2d_backward(dout, cache, True),
                            "dw": lambda: conv.conv2d_backward(dout, cache, False),
                            "wino dx": lambda: winograd_input_grad(dout, weight),
                            "wino dw": lambda: winograd_weight_grad(x, dout),
                        },
                        args.repeats,
                    )
                    fwd, wino, dx, dw = ms["fwd"], ms["wino"], ms["dx+dw"] - ms["dw"], ms["dw"]
                    total, wino_total = fwd + dx + dw, wino + ms["wino dx"] + ms["wino dw"]
                print(
                    f"{f'{h}x{w}x{c}->{f}':>18} {batch:>5} {threads:>3} {flops:>6.1f} {fwd:>7.1f} {dx:>7.1f} {dw:>7.1f} "
                    f"{wino:>7.1f} {ms['wino dx']:>7.1f} {ms['wino dw']:>7.1f} {total / wino_total:>6.2f} {error:>8.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
