"""Child processes of the local stack (Azurite, the function host)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: give the child a chance to shut down cleanly."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
