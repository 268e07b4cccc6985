"""Helpers of the core tests that run calls at once: a barrier start, and urllib3's pool warnings counted."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


def together(calls: int, work: Callable[[int], None], timeout: float = 60) -> None:
    """Run ``work(0..calls-1)`` in threads released at the same moment; wait for all of them."""
    gate = threading.Barrier(calls)

    def run(n: int) -> None:
        gate.wait()
        work(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)


def pool_full_warnings(caplog, calls: int, work: Callable[[int], None]) -> int:
    """How many connections urllib3 threw away ("Connection pool is full") while ``calls`` calls ran at once."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        together(calls, work)
    return sum("Connection pool is full" in r.getMessage() for r in caplog.records)
