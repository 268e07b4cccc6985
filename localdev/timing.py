"""Where an invocation's time goes: our own code vs waiting on downstream HTTP.

The bench's overhead goal is about *our* time (p50 < 5 ms per action), but an action's latency
also contains every round trip to Sentinel, Table Storage, Defender and the rest. With
``LOCAL_SERVER_TIMING=1`` the local host installs these hooks and answers each HTTP invocation
with a standard ``Server-Timing`` header::

    Server-Timing: total;dur=7.9, downstream;dur=5.6;desc="4 calls", own;dur=2.3

``downstream`` is the wall time spent inside outbound HTTP sends (requests, which also carries
the Azure Storage SDKs, and httpx, which carries msgraph-sdk); ``own`` is the rest. Only the
local host uses this; nothing in the deployed app imports it.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ENV = "LOCAL_SERVER_TIMING"


@dataclass
class Ledger:
    """Downstream time of one invocation (shared by the threads and tasks it spawns).

    ``downstream`` is wall time during which at least one send was in flight: calls made side by side
    (core/concurrency.py) overlap, and summing them would count the same wait twice and make the
    invocation's own time negative.
    """

    downstream: float = 0.0
    calls: int = 0
    in_flight: int = 0
    busy_since: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def started(self) -> None:
        with self.lock:
            if self.in_flight == 0:
                self.busy_since = time.perf_counter()
            self.in_flight += 1

    def ended(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.calls += 1
            if self.in_flight == 0:
                self.downstream += time.perf_counter() - self.busy_since


_current: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("server_timing", default=None)
_installed = False


def _timed(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ledger = _current.get()
        if ledger is None:
            return send(*args, **kwargs)
        ledger.started()
        try:
            return send(*args, **kwargs)
        finally:
            ledger.ended()
    return wrapper


def _timed_async(send: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(send)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        ledger = _current.get()
        if ledger is None:
            return await send(*args, **kwargs)
        ledger.started()
        try:
            return await send(*args, **kwargs)
        finally:
            ledger.ended()
    return wrapper


def install() -> None:
    """Wrap the transports' send methods once (requests always; httpx when it is installed)."""
    global _installed
    if _installed:
        return
    import requests.adapters

    requests.adapters.HTTPAdapter.send = _timed(requests.adapters.HTTPAdapter.send)
    try:
        import httpx
    except ImportError:  # pragma: no cover - msgraph-sdk brings httpx
        pass
    else:
        httpx.HTTPTransport.handle_request = _timed(httpx.HTTPTransport.handle_request)
        httpx.AsyncHTTPTransport.handle_async_request = _timed_async(httpx.AsyncHTTPTransport.handle_async_request)
    _installed = True


def measure(call: Callable[[], Any]) -> tuple[Any, str]:
    """Run ``call`` and return its result with the Server-Timing header value for it.

    The ledger is a context variable: tasks created on the host's event loop from this thread
    (``run_coroutine_threadsafe``) copy the context, so their sends count too.
    """
    ledger = Ledger()
    token = _current.set(ledger)
    started = time.perf_counter()
    try:
        result = call()
    finally:
        total = time.perf_counter() - started
        _current.reset(token)
    ms = 1000.0
    header = (f"total;dur={total * ms:.2f}, downstream;dur={ledger.downstream * ms:.2f};desc=\"{ledger.calls} calls\", "
              f"own;dur={max(0.0, total - ledger.downstream) * ms:.2f}")
    return result, header


def parse(header: str) -> dict[str, float]:
    """``{"total": ms, "downstream": ms, "own": ms, "calls": n}`` from a Server-Timing header value."""
    values: dict[str, float] = {}
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key == "dur":
                values[name] = float(value)
            elif key == "desc" and value.strip('"').endswith(" calls"):
                values["calls"] = float(value.strip('"').split()[0])
    return values
