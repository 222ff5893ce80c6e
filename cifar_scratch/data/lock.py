"""One process at a time per dataset in a shared data dir.

Runs of a sweep (``xargs -P``, job arrays) often start together on one empty data dir. Every
step that downloads, extracts or decodes into it runs under :func:`data_lock`; the waiting runs
then find the finished result, which was published by an atomic rename, and reuse it.
The lock is an OS-level lock (``flock`` on POSIX), so a killed process never leaves it held.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_DIR = ".locks"


@contextmanager
def data_lock(data_dir: Path, name: str, progress: bool = True) -> Iterator[None]:
    """Hold ``data_dir/.locks/<name>.lock`` exclusively; say so on stderr when another process has it."""
    folder = Path(data_dir) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / f"{name}.lock")
    try:
        lock.acquire(blocking=False)
    except Timeout:
        if progress:
            print(f"waiting for another process that is preparing {name} in {data_dir} ...", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
