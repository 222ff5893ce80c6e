import zipfile

import numpy as np
import pytest

from cifar_scratch.errors import CheckpointError
from cifar_scratch.training.checkpoint import group, load_checkpoint, save_checkpoint


def test_round_trip_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    arrays = {"param/dense1.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "train/permutation": np.arange(5)}
    save_checkpoint(path, arrays, {"epoch": 3, "value": float("nan"), "rng": {"state": 2**100}})
    loaded, meta = load_checkpoint(path)
    assert meta["epoch"] == 3 and meta["value"] is None and meta["rng"]["state"] == 2**100
    assert loaded.keys() == arrays.keys() and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert loaded["param/dense1.weight"].dtype == np.float32
    assert group(loaded, "param") == {"dense1.weight": loaded["param/dense1.weight"]}
    with np.load(path, allow_pickle=False) as plain:  # readable with plain NumPy too
        assert "param/dense1.weight" in plain.files
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temp files left


def test_object_arrays_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", '{"format": "cifar-scratch-checkpoint", "version": 2}')
        with archive.open("x.npy", "w") as member:
            np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="x: holds Python objects, which are never loaded"):
        load_checkpoint(path)
    (tmp_path / "other.npz").write_bytes(b"PK nonsense")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


def test_a_checkpoint_of_the_previous_format_is_a_clear_error(tmp_path):
    path = tmp_path / "old.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", '{"format": "cifar-scratch-checkpoint", "version": 1}')
    with pytest.raises(CheckpointError, match="checkpoint format 1 is not supported .* reads format 2"):
        load_checkpoint(path)


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"a": np.ones(3)}, {"epoch": 1})

    class Boom:
        shape, dtype = (1,), np.dtype("float32")

        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"a": Boom()}, {"epoch": 2})
    assert load_checkpoint(path)[1]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]


HEADER = '{"format": "cifar-scratch-checkpoint", "version": 2}'


def npy_header(shape, dtype="<f4") -> bytes:
    """A .npy version 1.0 header declaring ``shape``, with no data after it."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def test_a_header_claiming_a_trillion_floats_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", HEADER)
        archive.writestr("param/dense1.weight.npy", npy_header((10**12,)) + b"\0" * 64)
    with pytest.raises(
        CheckpointError, match=r"param/dense1.weight: its header declares \(1000000000000,\) float32 .* holds 64 bytes"
    ):
        load_checkpoint(path)


def test_a_compressed_member_cannot_expand_past_the_shape_it_must_have(tmp_path):
    """A 200 MB array of zeros deflates to about 200 KB; read, it would take 200 MB. The model's
    parameter is 4 x 3, so the member is refused from its header, and almost nothing is allocated."""
    import tracemalloc

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", HEADER)
        with archive.open("param/dense1.weight.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.zeros(50_000_000, np.float32))
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"param/dense1.weight has shape \(50000000,\), expected \(4, 3\)"):
            load_checkpoint(path, lambda name, metadata: {"param/dense1.weight": (4, 3)}.get(name))
        assert tracemalloc.get_traced_memory()[1] < 10_000_000
    finally:
        tracemalloc.stop()


def test_members_the_reader_does_not_ask_for_are_not_read(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"param/w": np.ones((2, 2), np.float32), "optim/velocity/w": np.ones((2, 2), np.float32)}, {})
    arrays, _ = load_checkpoint(path, lambda name, metadata: (2, 2) if name.startswith("param/") else None)
    assert list(arrays) == ["param/w"]


def test_a_checkpoint_that_is_not_a_regular_file_is_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(CheckpointError, match="no such checkpoint .not a regular file."):
        load_checkpoint(tmp_path / "fifo.npz")


def test_a_header_the_tokenizer_chokes_on_is_a_checkpoint_error(tmp_path):
    """NumPy reads a .npy header with Python's tokenizer: a bit flip there raised TokenError (the fuzz
    campaign found it), which is a damaged checkpoint like any other."""
    path = tmp_path / "flipped.npz"
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (6, }"  # an unclosed parenthesis
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", HEADER)
        archive.writestr("param/w.npy", b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + b"\0" * 24)
    with pytest.raises(CheckpointError, match=r"flipped.npz: unreadable checkpoint \((TokenError|SyntaxError)"):
        load_checkpoint(path)
