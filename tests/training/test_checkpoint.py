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
    with pytest.raises(CheckpointError, match="unreadable"):
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
