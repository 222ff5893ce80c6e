"""The console script handles Ctrl-C and SIGTERM from its first moment, while its imports still run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO


def catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to see when the handlers are in")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_ends_with_its_code_and_a_message(tmp_path, signum):
    process = subprocess.Popen(
        [sys.executable, "-m", "cifar_scratch", "train", str(REPO / "configs" / "digits.yaml"), "--runs-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the entry point has installed its handlers (SIGTERM's bit in the caught-signals mask):
    # the interpreter is up, and NumPy, Typer and the engine are still being imported for about a second.
    deadline = time.monotonic() + 30
    while not catches_sigterm(process.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, (out, err)
    assert err.strip().splitlines() == [f"interrupted by {signal.Signals(signum).name} while starting", "nothing was written"]
    assert "Traceback" not in err and not list(tmp_path.iterdir())
