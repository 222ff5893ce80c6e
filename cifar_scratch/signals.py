"""SIGINT/SIGTERM for a whole command: one handler, two behaviours.

Outside a :func:`deferred` block (loading data, evaluating, writing final metrics) a signal raises
:class:`Interrupted` at once, so every command exits with 130/143 and a message instead of a
traceback or a silent death. Inside one (a training loop) the first signal is only recorded:
the loop finishes its step, saves a checkpoint and stops. A second signal while the first is
pending raises at once, and the exception says so (nothing after the last checkpoint is saved).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A command stopped by a signal. ``exit_code`` is 128 + the signal number (130, 143).

    A BaseException, like KeyboardInterrupt: ``except Exception`` around third-party code (Pillow
    decoding an image, say) must not turn a Ctrl-C into a data error.

    ``immediate``: a second signal stopped the work without waiting for a checkpoint.
    ``run_dir``/``checkpoint``: filled in by the run layer; what the user can resume from.
    ``hint``: filled in by commands that report it otherwise (a sweep: how many jobs it stopped).
    """

    def __init__(self, signum: int, immediate: bool = False):
        self.signum, self.immediate = signum, immediate
        self.exit_code = 128 + signum
        self.run_dir = None
        self.checkpoint = None
        self.hint: str | None = None  # set by commands that say themselves what was kept and how to go on
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_deferring = 0
_pending: int | None = None


def _handler(signum, frame) -> None:
    global _pending
    if _deferring and _pending is None:
        _pending = signum
        return
    raise Interrupted(signum, immediate=_pending is not None)


@contextmanager
def handled() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM; restore the previous handlers on exit."""
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Record the first signal instead of raising; check it with :func:`pending` at safe points."""
    global _deferring, _pending
    with handled():
        _deferring += 1
        _pending = None
        try:
            yield
        finally:
            _deferring -= 1
            if not _deferring:
                _pending = None


def pending() -> int | None:
    """The signal received inside the current :func:`deferred` block, or None."""
    return _pending
