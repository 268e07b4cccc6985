"""Shared fixtures: one stack (Azurite + emulators) per test session, hosts per module."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests


@pytest.fixture(scope="session")
def stack():
    from localdev.stack import Stack
    from tests.sentinel_spec import stack_validator

    # With the official spec beside the project, the ARM emulator rejects what the spec rejects (in CI the
    # spec must be there: a missing one fails the session instead of quietly running a lenient emulator).
    with Stack(validator=stack_validator()) as running:
        yield running


@pytest.fixture
def clean_stack(stack):
    stack.reset()
    return stack


class HostClient:
    """Calls the local host the way a Logic App HTTP action does."""

    def __init__(self, host) -> None:
        self.host = host
        self.http = requests.Session()

    def post(self, route: str, body: Any = None, *, raw: bytes | None = None, key: str | None = "default",
             timeout: float = 120) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if key == "default":
            key = self.host.function_key
        if key is not None:
            headers["x-functions-key"] = key
        return self.http.post(f"{self.host.url}/api/{route}", json=body if raw is None else None,
                              data=raw, headers=headers, timeout=timeout)

    def get(self, route: str, *, key: str | None = "default", timeout: float = 120) -> requests.Response:
        headers = {}
        if key == "default":
            key = self.host.function_key
        if key is not None:
            headers["x-functions-key"] = key
        return self.http.get(f"{self.host.url}/api/{route}", headers=headers, timeout=timeout)


@pytest.fixture(scope="module")
def host(stack):
    process = stack.host()
    try:
        yield HostClient(process)
    finally:
        process.stop()


@pytest.fixture
def host_with(stack):
    """Start hosts with other settings (``host_with(APPROVERS="...")``); each is stopped after the test."""
    started = []

    def start(**overrides: str) -> HostClient:
        process = stack.host(**overrides)
        started.append(process)
        return HostClient(process)

    yield start
    for process in started:
        process.stop()
# Waits are on events (a predicate turning true); their bound is only paid when the event never comes, so it
# is generous: on a loaded 2-core machine (load 5-15) a queue trigger or a restart takes many times longer
# than on an idle one. ``TEST_WAIT_SECONDS`` raises it further.
MIN_WAIT_SECONDS = float(os.environ.get("TEST_WAIT_SECONDS", "60"))


def count_reads(store: Any) -> list[int]:
    """Count the single-row reads (``StateStore.get``) ``store`` sends to Table Storage from now on: a test that a
    waiting run sends none (issue #16, no spinning locks)."""
    reads, get = [0], store.get

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        return get(*args, **kwargs)

    store.get = counted
    return reads


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll until ``predicate`` is truthy (deferred work, queue triggers); fail when it is not within
    ``timeout`` seconds, or ``MIN_WAIT_SECONDS`` when that is longer."""
    timeout = max(timeout, MIN_WAIT_SECONDS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
