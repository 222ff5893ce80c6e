"""CIFAR-10: official-format archives, checksum checks, the restricted unpickler, download via local HTTP."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from cifar_scratch.data import cifar10
from cifar_scratch.data.download import RemoteFile, download, extract_tar
from cifar_scratch.errors import DataError
from tests.data.helpers import add_tar_member, cifar_batch_bytes, make_cifar_archive


def test_download_verify_extract_and_load(tmp_path, http_root):
    www, url = http_root
    archive, archive_md5, checksums, images, labels = make_cifar_archive(www)
    remote = RemoteFile(archive.name, (f"{url}/{archive.name}",), archive_md5)
    data_dir = tmp_path / "data"
    folder = cifar10.prepare(data_dir, True, progress=False, release=cifar10.Release(remote, checksums))
    assert folder == data_dir / cifar10.FOLDER
    assert [p.name for p in data_dir.glob(".*")] == [".locks"], "no temporary files may be left behind"
    (train_x, train_y), (test_x, test_y), names = cifar10.load(folder)
    assert train_x.shape == (100, 32, 32, 3) and train_x.dtype == np.uint8
    assert np.array_equal(train_x, images) and np.array_equal(train_y, labels)  # channel-planar -> NHWC exactly
    assert test_x.shape == (20, 32, 32, 3) and names == cifar10.CLASSES
    # Second call: the existing folder is used without any download.
    archive.unlink()
    assert cifar10.prepare(data_dir, True, progress=False, release=cifar10.Release(remote, checksums)) == folder


def test_mirror_fallback(tmp_path, http_root):
    www, url = http_root
    archive, archive_md5, *_ = make_cifar_archive(www)
    remote = RemoteFile(archive.name, (f"{url}/missing/{archive.name}", f"{url}/{archive.name}"), archive_md5)
    assert download(remote, tmp_path / "d", progress=False).read_bytes() == archive.read_bytes()


def test_checksum_mismatch_removes_download(tmp_path, http_root):
    www, url = http_root
    archive, *_ = make_cifar_archive(www)
    remote = RemoteFile(archive.name, (f"{url}/{archive.name}",), "0" * 32)
    target = tmp_path / "d"
    with pytest.raises(DataError, match="checksum mismatch"):
        download(remote, target, progress=False)
    assert list(target.iterdir()) == [], "nothing half-written may remain"


def test_corrupt_existing_archive_is_set_aside_and_fetched_again(tmp_path, http_root):
    www, url = http_root
    archive, archive_md5, *_ = make_cifar_archive(www)
    target = tmp_path / "d"
    target.mkdir()
    (target / archive.name).write_bytes(b"truncated")
    remote = RemoteFile(archive.name, (f"{url}/{archive.name}",), archive_md5)
    assert download(remote, target, progress=False).read_bytes() == archive.read_bytes()
    (aside,) = target.glob(f"{archive.name}.corrupt-*")  # the user's copy is never deleted
    assert aside.read_bytes() == b"truncated"
    (target / archive.name).write_bytes(b"truncated")
    with pytest.raises(DataError, match="checksum mismatch .* it was left in place"):
        download(remote, target, progress=False, fetch=False)
    assert (target / archive.name).read_bytes() == b"truncated"


def test_corrupt_folder_is_never_deleted(tmp_path, http_root):
    """Offline, a folder that fails its checksum stays as it is and the error says so; with the archive
    in hand, it is moved aside before the archive is extracted again."""
    www, url = http_root
    archive, archive_md5, checksums, *_ = make_cifar_archive(www)
    release = cifar10.Release(RemoteFile(archive.name, (f"{url}/{archive.name}",), archive_md5), checksums)
    folder = cifar10.prepare(tmp_path, True, progress=False, release=release)
    (tmp_path / archive.name).unlink()
    (folder / "data_batch_3").write_bytes(b"my own edit")
    with pytest.raises(DataError, match="data_batch_3: checksum mismatch(.|\n)*was left as it is"):
        cifar10.prepare(tmp_path, False, progress=False, release=release)
    assert (folder / "data_batch_3").read_bytes() == b"my own edit"
    cifar10.prepare(tmp_path, True, progress=False, release=release)
    (aside,) = tmp_path.glob(f"{cifar10.FOLDER}.corrupt-*")
    assert (aside / "data_batch_3").read_bytes() == b"my own edit"
    cifar10.verify_folder(folder, checksums)


def test_no_network_message_says_where_to_put_the_file(tmp_path):
    remote = RemoteFile("cifar-10-python.tar.gz", ("http://127.0.0.1:9/cifar-10-python.tar.gz",), "0" * 32)
    with pytest.raises(DataError, match=f"put it at {tmp_path / 'cifar-10-python.tar.gz'}"):
        download(remote, tmp_path, progress=False, timeout=2)
    with pytest.raises(DataError, match="not found: download it from"):
        cifar10.prepare(tmp_path, False, progress=False)


def test_traversal_member_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_tar_member(tar, f"{cifar10.FOLDER}/data_batch_1", b"x")
        add_tar_member(tar, "../escaped.txt", b"gotcha")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match="unsafe archive member '../escaped.txt'"):
        extract_tar(archive, out, cifar10.FOLDER)
    assert not (tmp_path / "escaped.txt").exists() and list(out.iterdir()) == []


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(f"{cifar10.FOLDER}/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="not a regular file"):
        extract_tar(archive, tmp_path, cifar10.FOLDER)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refusing to load (posix|os).system"):
        cifar10.read_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": io.BytesIO(b"")}, protocol=2))
    with pytest.raises(DataError, match="refusing to load"):
        cifar10.read_batch(path)


def test_malformed_batches_are_rejected(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(cifar_batch_bytes(np.zeros((2, 32, 32, 3), np.uint8), [0, 11]))
    with pytest.raises(DataError, match="labels"):
        cifar10.read_images(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="not a valid CIFAR-10 batch"):
        cifar10.read_images(path)


def test_corrupt_extracted_file_is_reported(tmp_path):
    archive, _, checksums, *_ = make_cifar_archive(tmp_path)
    folder = extract_tar(archive, tmp_path, cifar10.FOLDER)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3: checksum mismatch"):
        cifar10.verify_folder(folder, checksums)


def test_altered_extracted_folder_is_extracted_again(tmp_path, http_root):
    www, url = http_root
    archive, archive_md5, checksums, *_ = make_cifar_archive(www)
    release = cifar10.Release(RemoteFile(archive.name, (f"{url}/{archive.name}",), archive_md5), checksums)
    folder = cifar10.prepare(tmp_path, True, progress=False, release=release)
    (folder / "data_batch_3").write_bytes(b"garbage")
    (folder / "test_batch").unlink()
    assert cifar10.prepare(tmp_path, True, progress=False, release=release) == folder
    cifar10.verify_folder(folder, checksums)  # rebuilt from the verified archive
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".extracting")]
    assert len(list(tmp_path.glob(f"{cifar10.FOLDER}.corrupt-*"))) == 1
