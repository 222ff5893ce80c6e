"""A strict reader for the IDX format of MNIST and Fashion-MNIST.

Layout (big-endian): two zero bytes, a type code, the number of dimensions ``d``, ``d`` sizes
as uint32, then the values in C order. The reader checks every one of those fields and that the
file holds exactly the number of bytes they announce, so a truncated or foreign file is an
error naming the file, never a silently wrong array.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cifar_scratch.errors import DataError

DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, where: str = "IDX data") -> np.ndarray:
    """IDX bytes -> array of the stored shape, in native byte order."""
    if len(data) < 4:
        raise DataError(f"{where}: not an IDX file ({len(data)} bytes, shorter than the 4-byte magic number)")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in DTYPES or ndim == 0:
        raise DataError(f"{where}: not an IDX file (magic number 0x{data[:4].hex()}, expected 0x0000 + type code + dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header ({len(data)} bytes, expected at least {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{where}: IDX file {state}: {len(data)} bytes, but its header {shape} announces {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def unpack(data: bytes, where: str) -> bytes:
    """``data`` gunzipped when it is a gzip stream (recognised by its magic bytes, not a file name)."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{where}: corrupt gzip file ({exc})") from None


def read_idx(path: Path) -> np.ndarray:
    return parse_idx(unpack(Path(path).read_bytes(), str(path)), str(path))
