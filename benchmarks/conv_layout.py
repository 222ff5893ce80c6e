"""NHWC vs NCHW for an im2col convolution in NumPy: the measurement behind the engine's layout.

Usage: python benchmarks/conv_layout.py [--threads N] [--repeats 5]

For each layer shape of configs/cifar_cnn.yaml and configs/fast_cnn.yaml, times one forward pass
(im2col + GEMM, producing the layout the next layer consumes) both ways:
  NHWC: windows copied through a strided view into (N*Ho*Wo, kh*kw*C); GEMM -> (N*Ho*Wo, F) is NHWC.
  NCHW: windows copied into (C*kh*kw, N*Ho*Wo); GEMM (F, K) @ (K, M) -> (F, N*Ho*Wo), then a
        transpose back to (N, F, Ho, Wo).
Prints the medians and the NCHW/NHWC ratio.
"""

from __future__ import annotations

import argparse

import numpy as np
from threadpoolctl import threadpool_limits

from cifar_scratch.diagnostics.benchmark import median_ms
from cifar_scratch.nn.fast.conv import Workspace, conv2d_forward

SHAPES = [  # (batch, size, in channels, filters)
    (128, 32, 32, 32),
    (128, 16, 64, 64),
    (512, 31, 24, 64),
    (512, 15, 64, 128),
    (512, 7, 128, 128),
]


def nchw_forward(x: np.ndarray, w: np.ndarray, padded: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), w (F, C, 3, 3), stride 1, same padding -> (N, F, H, W)."""
    n, c, h, width = x.shape
    padded[:, :, 1:-1, 1:-1] = x
    s = padded.strides
    windows = np.lib.stride_tricks.as_strided(padded, (c, 3, 3, n, h, width), (s[1], s[2], s[3], s[0], s[2], s[3]))
    np.copyto(cols.reshape(c, 3, 3, n, h, width), windows)
    out = w.reshape(w.shape[0], -1) @ cols  # (F, N*H*W)
    return np.ascontiguousarray(out.reshape(w.shape[0], n, h, width).transpose(1, 0, 2, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with threadpool_limits(args.threads, user_api="blas"):
        for n, size, c, f in SHAPES:
            x = rng.standard_normal((n, size, size, c)).astype(np.float32)
            w = rng.standard_normal((3, 3, c, f)).astype(np.float32)
            workspace = Workspace()
            nhwc = median_ms(lambda: conv2d_forward(x, w, None, 1, "same", workspace), args.repeats)
            x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            w_nchw = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
            padded = np.zeros((n, c, size + 2, size + 2), np.float32)
            cols = np.empty((c * 9, n * size * size), np.float32)
            reference, _ = conv2d_forward(x, w, None, 1, "same")
            assert np.allclose(nchw_forward(x_nchw, w_nchw, padded, cols).transpose(0, 2, 3, 1), reference, atol=1e-3)
            nchw = median_ms(lambda: nchw_forward(x_nchw, w_nchw, padded, cols), args.repeats)
            print(
                f"N={n:<4} {size:>2}x{size:<2} C={c:<3} F={f:<3}  NHWC {nhwc:7.1f} ms   NCHW {nchw:7.1f} ms   NCHW/NHWC {nchw / nhwc:.2f}"
            )


if __name__ == "__main__":
    main()
