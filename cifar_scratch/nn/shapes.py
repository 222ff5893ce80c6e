"""Shapes of convolutions and pools: padding, output sizes, window geometry (shared by both kernel engines)."""

from __future__ import annotations

import math


def pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """3 -> (3, 3); [2, 3] -> (2, 3)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def resolve_padding(padding: str | int, kernel: int, stride: int, size: int) -> tuple[int, int]:
    """(before, after) padding along one axis. ``same`` follows TensorFlow/Keras: output = ceil(size / stride),
    with any odd pixel of padding at the end."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    return int(padding), int(padding)


def output_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - kernel) // stride + 1


def conv_geometry(in_hw, kernel, stride, padding):
    """-> (pads (top, left), out (Ho, Wo)) for an input of spatial size ``in_hw``."""
    (top, bottom), (left, right) = (resolve_padding(padding, kernel[a], stride[a], in_hw[a]) for a in (0, 1))
    out = (output_size(in_hw[0], kernel[0], stride[0], top, bottom), output_size(in_hw[1], kernel[1], stride[1], left, right))
    return (top, left), out


def pool_geometry(in_hw, size, stride):
    """Windows that fit entirely (floor mode, no padding, as Keras 'valid' and PyTorch's default)."""
    return tuple((in_hw[a] - size[a]) // stride[a] + 1 for a in (0, 1))
