"""Crash-safe writing: temporaries carry this program's suffix, folders are swapped in whole."""

import pytest

from cifar_scratch.fileio import (
    TEMP_SUFFIX,
    atomic_folder,
    atomic_open,
    atomic_write_text,
    open_regular,
    read_limited,
    remove_stale_temporaries,
)


def test_atomic_open_leaves_only_the_final_file(tmp_path):
    with atomic_open(tmp_path / "a.txt") as handle:
        handle.write("x")
        (temporary,) = [p for p in tmp_path.iterdir() if p.name != "a.txt"]
        assert temporary.name.startswith(".a.txt.") and temporary.name.endswith(TEMP_SUFFIX)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_folder_replaces_whole_and_keeps_a_users_files(tmp_path):
    out = tmp_path / "eval" / "test"
    with atomic_folder(out, ("metrics.json", "plot.png")) as staging:
        atomic_write_text(staging / "metrics.json", "old")
        atomic_write_text(staging / "plot.png", "old")
    (out / "my-notes.txt").write_text("mine")
    with atomic_folder(out, ("metrics.json", "plot.png")) as staging:
        atomic_write_text(staging / "metrics.json", "new")
        assert (out / "metrics.json").read_text() == "old", "the old results stay until the new ones are complete"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "my-notes.txt"]
    assert (out / "metrics.json").read_text() == "new" and (out / "my-notes.txt").read_text() == "mine"
    assert [p.name for p in out.parent.iterdir()] == ["test"], "no temporary folder is left"


def test_an_interrupted_folder_leaves_the_old_one_and_nothing_else(tmp_path):
    out = tmp_path / "test"
    with atomic_folder(out, ("metrics.json",)) as staging:
        atomic_write_text(staging / "metrics.json", "old")
    with pytest.raises(KeyboardInterrupt), atomic_folder(out, ("metrics.json", "a.png")) as staging:
        atomic_write_text(staging / "a.png", "half")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["test"] and [p.name for p in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "old"


def test_stale_temporaries_are_this_programs_only(tmp_path):
    ours = [tmp_path / f".last.npz.ab_1cd9z{TEMP_SUFFIX}", tmp_path / f".run.json.zzzzzzzz{TEMP_SUFFIX}"]
    users = [tmp_path / ".draft.tmp", tmp_path / "notes.tmp", tmp_path / f".x.toolong99{TEMP_SUFFIX}"]
    for path in ours + users:
        path.write_text("x")
    killed_swap = tmp_path / f".test.q1w2e3r4{TEMP_SUFFIX}"  # an old eval folder, mid-swap, with a user's file
    killed_swap.mkdir()
    (killed_swap / "metrics.json").write_text("{}")
    (killed_swap / "mine.txt").write_text("mine")
    deeper = tmp_path / "notes"
    deeper.mkdir()
    (deeper / f".paper.abcdefgh{TEMP_SUFFIX}").write_text("not in a folder this program writes")
    removed = remove_stale_temporaries([tmp_path], owned=("metrics.json",))
    assert sorted(removed) == sorted([*ours, killed_swap])
    assert all(p.exists() for p in users) and not any(p.exists() for p in ours)
    assert [p.name for p in killed_swap.iterdir()] == ["mine.txt"], "a user's file is never deleted"
    assert (deeper / f".paper.abcdefgh{TEMP_SUFFIX}").exists()


def test_open_regular_refuses_fifos_devices_and_folders_without_blocking(tmp_path):
    import errno
    import os

    os.mkfifo(tmp_path / "fifo")  # no writer: a plain open() would block forever
    for path, kind in ((tmp_path / "fifo", "a FIFO"), ("/dev/zero", "a device or socket"), (tmp_path, "a folder")):
        with pytest.raises(OSError) as caught:
            open_regular(path)
        assert caught.value.errno == errno.EINVAL and caught.value.strerror == f"not a regular file ({kind})"
    (tmp_path / "a").write_bytes(b"abc")
    with open_regular(tmp_path / "a") as handle:
        assert handle.read() == b"abc"


def test_read_limited_checks_the_size_before_reading(tmp_path):
    import errno

    sparse = tmp_path / "run.json"
    with open(sparse, "wb") as handle:  # 20 GB on paper, nothing on disk
        handle.truncate(20 * 10**9)
    with pytest.raises(OSError) as caught:
        read_limited(sparse, 1000)
    assert (
        caught.value.errno == errno.EFBIG and caught.value.strerror == "20.0 GB is more than such a file holds (1.0 KB at most)"
    )
    (tmp_path / "b").write_bytes(b"x" * 10)
    assert read_limited(tmp_path / "b", 10) == b"x" * 10


def test_format_bytes_in_powers_of_1000():
    from cifar_scratch.fileio import format_bytes

    assert [format_bytes(n) for n in (999, 1536, 20e9, 3.2e18)] == ["999 bytes", "1.5 KB", "20.0 GB", "3,200.0 PB"]
