"""The fault vocabulary of the reliability matrix: what every external API can do to us.

Each ``FaultKind`` is one row of the matrix. ``inject(emulator, kind)`` keeps the fault active
for every matching request while inside the ``with`` block (so the result does not depend on
how many times our HTTP layer retries) and clears it on exit, which is "the fault clears and
the Logic App retries". Hosts under fault tests run with ``FAULT_HOST_SETTINGS`` so a slow
answer passes our timeout quickly and retries stay bounded.

What each kind means at the emulator: a status or ``malformed`` answers *without* acting;
``slow`` acts, then answers after our timeout (the answer is lost, the effect happened);
``refused`` takes the whole emulator offline, whatever ``path``/``method`` say.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests

# Short timeout, one retry, and Retry-After up to 1 s waited for in the function itself.
FAULT_HOST_SETTINGS = {"HTTP_TIMEOUT_SECONDS": "1", "HTTP_MAX_RETRIES": "1", "HTTP_MAX_RETRY_AFTER_SECONDS": "1"}
SLOW_SECONDS = 1.6  # past HTTP_TIMEOUT_SECONDS above

# Logic Apps' default retry policy retries these (plus 408); anything else is a final answer.
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class FaultKind:
    id: str
    status: int | None = None
    retry_after: int | None = None
    slow: bool = False
    refused: bool = False
    malformed: bool = False

    def __str__(self) -> str:
        return self.id


FAULTS: tuple[FaultKind, ...] = (
    FaultKind("401", 401),
    FaultKind("403", 403),
    FaultKind("404", 404),
    FaultKind("409", 409),
    FaultKind("429-retry-after", 429, retry_after=30),
    FaultKind("429-no-retry-after", 429),
    FaultKind("500", 500),
    FaultKind("502", 502),
    FaultKind("503", 503),
    FaultKind("refused", refused=True),
    FaultKind("slow", slow=True),
    FaultKind("malformed-json", malformed=True),
)


@contextmanager
def inject(emulator, kind: FaultKind, *, path: str | None = None, method: str | None = None,
           body=None) -> Iterator[None]:
    """Keep ``kind`` active on ``emulator`` (optionally only for ``path``/``method``) inside the block."""
    if kind.refused:
        with emulator.offline():
            yield
        return
    emulator.fail(kind.status, times=10_000, path=path, method=method, retry_after=kind.retry_after,
                  body=body, delay=SLOW_SECONDS if kind.slow else 0.0, malformed=kind.malformed)
    try:
        yield
    finally:
        emulator.clear_faults()


def classify(response: requests.Response, kind: FaultKind) -> str:
    """How an action answered under a fault: "ok" (it coped, e.g. deferred or reported the
    failure in its summary), "retry" (a status the Logic App retries) or "final" (a clear 4xx).

    Errors must be ``{"error": {"code", "message"}}`` and a 429 must carry Retry-After; a 5xx that
    the Logic App would not retry fails the test.
    """
    status = response.status_code
    if status < 400:
        return "ok"
    assert response.content, f"{kind}: {status} with an empty body (an unhandled exception in the host?)"
    body = response.json()
    assert set(body["error"]) >= {"code", "message"} and body["error"]["message"], f"{kind}: {body}"
    if status == 429:
        assert response.headers.get("Retry-After", "").isdigit(), f"{kind}: 429 without Retry-After"
    if status in RETRYABLE:
        return "retry"
    assert status < 500, f"{kind}: {status} is neither retried by the Logic App nor a 4xx"
    return "final"
