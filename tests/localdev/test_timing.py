"""Server-Timing from the local host: our own time vs downstream HTTP, for the bench's overhead figures."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from localdev import timing
from localdev.emulators.base import Emulator, Response


class Slow(Emulator):
    """Answers ``GET /slow`` after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.route("GET", "/slow", lambda req: (time.sleep(seconds), Response(200, {"ok": True}))[1])


def test_parse_reads_what_measure_writes():
    timing.install()
    with Slow(0.05) as slow:
        def work() -> int:
            time.sleep(0.02)  # our own time
            return requests.get(f"{slow.url}/slow", timeout=5).status_code

        result, header = timing.measure(work)
    values = timing.parse(header)
    assert result == 200 and values["calls"] == 1
    # Lower bounds only (a loaded machine makes everything slower, never faster): the 50 ms the emulator
    # sleeps is downstream, the 20 ms we sleep is our own, and the two add up to the total.
    assert values["downstream"] >= 50 and values["own"] >= 20
    assert values["total"] == pytest.approx(values["own"] + values["downstream"], abs=0.05)


def test_calls_side_by_side_count_their_overlap_once():
    """Two 100 ms calls at once are 100 ms or so of waiting, not 200: own time never goes negative."""
    from core.concurrency import run_all

    timing.install()
    with Slow(0.1) as slow:
        both = threading.Barrier(2)

        def call() -> int:
            both.wait(60)  # both threads are running before either sends
            return requests.get(f"{slow.url}/slow", timeout=60).status_code

        result, header = timing.measure(lambda: run_all(call, call))
    values = timing.parse(header)
    assert result == [200, 200] and values["calls"] == 2
    assert values["downstream"] <= values["total"] and values["own"] >= 0
    assert values["total"] == pytest.approx(values["own"] + values["downstream"], abs=0.05)


def test_outside_a_measurement_nothing_is_counted():
    timing.install()
    _, header = timing.measure(lambda: None)
    assert timing.parse(header)["calls"] == 0


def test_host_answers_with_server_timing(stack):
    process = stack.host(**{timing.ENV: "1"})
    try:
        response = requests.get(f"{process.url}/api/health", timeout=30)
    finally:
        process.stop()
    values = timing.parse(response.headers["Server-Timing"])
    assert values["calls"] >= 1 and values["total"] >= values["own"]  # health reads the state store
