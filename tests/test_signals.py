"""One handler for SIGINT/SIGTERM: immediate outside training, deferred inside, immediate again on a second signal."""

import os
import signal

import pytest

from cifar_scratch import signals


def test_outside_a_deferred_block_a_signal_raises_at_once():
    with signals.handled(), pytest.raises(signals.Interrupted) as info:
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.exit_code == 143 and not info.value.immediate
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "previous handler restored"


def test_inside_a_deferred_block_the_first_signal_waits_and_a_second_one_does_not():
    with signals.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.pending() == signal.SIGINT
        with pytest.raises(signals.Interrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
    assert info.value.immediate and info.value.exit_code == 130
    assert signals.pending() is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_generic_exception_handlers_do_not_swallow_an_interruption():
    """Code that wraps a library in ``except Exception`` (decoding images, say) must let Ctrl-C through."""
    with signals.handled(), pytest.raises(signals.Interrupted):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except Exception:  # noqa: BLE001 - what the test is about
            pytest.fail("an interruption was caught as an ordinary error")
