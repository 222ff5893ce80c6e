"""Downloading with a progress bar, checksum verification and safe archive extraction.

Nothing half-done is ever left where a later run would trust it: downloads go to a ``.part``
file that is renamed only after its checksum matches, and archives are extracted into a
temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from cifar_scratch.errors import DataError, DataUnavailable
from cifar_scratch.fileio import file_digest


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where to get it and the checksum its publisher gives."""

    filename: str
    urls: tuple[str, ...]
    md5: str


def download(remote: RemoteFile, directory: Path, progress: bool = True, timeout: float = 30.0, fetch: bool = True) -> Path:
    """Return ``directory/remote.filename``, downloading it if missing or if its MD5 is wrong.

    Mirrors in ``remote.urls`` are tried in order. A download whose checksum does not match is
    deleted and reported; it is never renamed to the final name. With ``fetch=False`` a missing
    or corrupt file is an error instead of a download.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / remote.filename
    if target.exists():
        if file_digest(target, "md5") == remote.md5:
            return target
        if not fetch:
            raise DataError(
                f"{target}: checksum mismatch (expected MD5 {remote.md5}): the file is corrupt or not the "
                f"official one; it was left in place: replace it, or allow downloading"
            )
    if not fetch:
        raise DataUnavailable(
            f"{remote.filename} not found: download it from {remote.urls[0]} and put it at {target.absolute()} "
            "(data.download is false)"
        )
    failures = []
    for url in remote.urls:
        part = directory / f".{remote.filename}.{os.getpid()}.part"
        try:
            _fetch(url, part, progress, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        actual = file_digest(part, "md5")
        if actual != remote.md5:
            part.unlink()
            raise DataError(f"checksum mismatch for {url}: expected MD5 {remote.md5}, got {actual}; the download was deleted")
        if target.exists():
            set_aside(target, "checksum mismatch")  # never delete what may be the user's file
        os.replace(part, target)
        return target
    raise DataUnavailable(
        f"could not download {remote.filename} ({'; '.join(failures)}); without network access, download it "
        f"from {remote.urls[0]} yourself and put it at {target.absolute()}"
    )


def _fetch(url: str, destination: Path, progress: bool, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name[1:-5]}", disable=not progress) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())


def check_member_names(archive: Path, names: list[str]) -> None:
    """Refuse absolute paths and ``..`` components: an archive must not write outside its folder."""
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or ":" in path.parts[0]:
            raise DataError(f"{archive}: refusing unsafe archive member {name!r} (it would write outside the data folder)")


def set_aside(path: Path, reason: str) -> Path:
    """Rename a corrupt file or folder to ``<name>.corrupt-<time>`` beside it (atomic) and say so.

    Data in the data dir may be the user's own copy: it is never deleted, only moved out of the way.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{attempt}" if attempt > 1 else ""))
        if not aside.exists():
            os.replace(path, aside)
            print(f"{path}: {reason}; moved aside to {aside.name} (delete it when you no longer need it)", file=sys.stderr)
            return aside
    raise DataError(f"{path}: cannot move the corrupt copy aside")


def extract_tar(archive: Path, directory: Path, top_level: str) -> Path:
    """Extract ``archive`` (which must contain ``top_level/``) into ``directory`` and return ``directory/top_level``.

    Only regular files and folders are extracted; links, devices and unsafe paths are refused.
    """
    final = directory / top_level
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            check_member_names(archive, [m.name for m in members])
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"{archive}: refusing archive member {member.name!r}: not a regular file or folder")
            staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{top_level}.", suffix=".extracting"))
            try:
                tar.extractall(staging, members=members, filter="data")
                if not (staging / top_level).is_dir():
                    raise DataError(f"{archive}: expected a folder {top_level}/ inside the archive")
                os.replace(staging / top_level, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract ({exc}); delete it to download it again") from None
    return final
