"""The strict IDX reader: types, shapes, and clear errors for truncated or foreign files."""

import gzip

import numpy as np
import pytest

from cifar_scratch.data.idx import parse_idx, read_idx, unpack
from cifar_scratch.errors import DataError
from tests.data.helpers import idx_bytes


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_every_type(dtype):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    parsed = parse_idx(idx_bytes(array))
    assert parsed.dtype == np.dtype(dtype) and parsed.dtype.isnative
    assert parsed.shape == (2, 3, 5) and np.array_equal(parsed, array)


def test_header_is_big_endian():
    data = idx_bytes(np.array([1, 258], dtype=np.int16))
    assert data[:8] == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2])
    assert data[8:] == bytes([0, 1, 1, 2])
    assert parse_idx(data).tolist() == [1, 258]


def test_truncated_file_is_refused():
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"f: IDX file truncated: 3151 bytes, but its header \(4, 28, 28\) announces 3152"):
        parse_idx(data[:-1], "f")


def test_trailing_bytes_are_refused():
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx(idx_bytes(np.zeros(3, np.uint8)) + b"\0")


def test_truncated_header_is_refused():
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(idx_bytes(np.zeros((2, 2), np.uint8))[:9])


@pytest.mark.parametrize(
    "magic", [b"\x00\x01\x08\x03", b"\x00\x00\x07\x03", b"\x00\x00\x08\x00", b"\x1f\x8b\x08\x00", b"PK\x03\x04"]
)
def test_wrong_magic_number_is_refused(magic):
    data = magic + idx_bytes(np.zeros((1, 2, 2), np.uint8))[4:]
    with pytest.raises(DataError, match=f"not an IDX file \\(magic number 0x{magic.hex()}"):
        parse_idx(data, "x")


def test_empty_file_is_refused():
    with pytest.raises(DataError, match="shorter than the 4-byte magic number"):
        parse_idx(b"")


def test_read_idx_gunzips_by_content(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "plain-named").write_bytes(gzip.compress(idx_bytes(array)))  # no .gz suffix: detected anyway
    (tmp_path / "raw.gz").write_bytes(idx_bytes(array))  # misleading suffix: read as raw
    assert np.array_equal(read_idx(tmp_path / "plain-named"), array)
    assert np.array_equal(read_idx(tmp_path / "raw.gz"), array)


def test_corrupt_gzip_is_a_clear_error():
    packed = gzip.compress(idx_bytes(np.zeros((10, 10), np.uint8)))
    with pytest.raises(DataError, match="where: corrupt gzip file"):
        unpack(packed[: len(packed) // 2], "where")
