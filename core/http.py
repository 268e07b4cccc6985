"""The one outbound HTTP setup: a requests Session with timeouts and bounded retries.

Retries happen on 429 and 5xx, honouring ``Retry-After`` up to ``HTTP_MAX_RETRY_AFTER_SECONDS``.
A longer wait is not slept inside a function (it would burn the function's time budget):
the response is handed back and the action answers 429/503 with that ``Retry-After`` so the
Logic App's retry policy waits instead. Request headers (API keys, bearer tokens) are never
logged or put in error messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

from core.errors import DownstreamError, PackError, Throttled

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class BoundedRetry(Retry):
    """urllib3 Retry that gives up (returning the response) when Retry-After is too long."""

    max_retry_after: float = 10.0

    def new(self, **kw):  # keep the bound on the copies urllib3 makes at each attempt
        new = super().new(**kw)
        new.max_retry_after = self.max_retry_after
        return new

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > self.max_retry_after:
                raise MaxRetryError(_pool, url, reason=None)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class TimeoutSession(requests.Session):
    """A Session whose requests all carry a timeout unless the caller sets one."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


def build_session(
    *,
    timeout: float = 10.0,
    retries: int = 3,
    max_retry_after: float = 10.0,
    retry_statuses: Iterable[int] = RETRY_STATUSES,
    backoff: float = 0.5,
) -> requests.Session:
    """Build the session every API client uses.

    Every method is retried: the pack's writes are idempotent by design (PUT with a
    caller-chosen id, conditional inserts), so a retried POST or PUT never duplicates.
    """
    retry = BoundedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_max=max_retry_after,
        status_forcelist=sorted(retry_statuses),
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.max_retry_after = max_retry_after
    session = TimeoutSession(timeout)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=8, pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "sentinel-playbooks/1.0"
    return session


def session_from_settings(settings, retry_statuses: Iterable[int] = RETRY_STATUSES) -> requests.Session:
    return build_session(
        timeout=float(settings["HTTP_TIMEOUT_SECONDS"]),
        retries=int(settings["HTTP_MAX_RETRIES"]),
        max_retry_after=float(settings["HTTP_MAX_RETRY_AFTER_SECONDS"]),
        retry_statuses=retry_statuses,
    )


def retry_after_seconds(response: requests.Response, default: int = 30) -> int:
    """The Retry-After of a response in whole seconds (HTTP-date forms fall back to default)."""
    value = response.headers.get("Retry-After", "")
    try:
        return max(1, int(float(value)))
    except ValueError:
        return default


def error_code_of(response: requests.Response) -> str:
    """The service's own error code, from the common ``{"error": {"code": ...}}`` shape."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", ""))[:100]
    return ""


def error_message_of(response: requests.Response) -> str:
    """The service's own error message (``{"error": {"message": ...}}``), shortened for run history."""
    try:
        return str(response.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return ""


def json_object(response: requests.Response, service: str) -> dict:
    """The JSON object a service answered with; anything else is a DownstreamError (the Logic App retries)."""
    try:
        data = response.json()
    except ValueError:
        raise DownstreamError(f"{service} answered with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise DownstreamError(f"{service} answered with an unexpected body")
    return data


def call(session: requests.Session, method: str, url: str, *, service: str, passthrough: tuple[int, ...] = (),
         **kwargs) -> requests.Response:
    """Send a request and turn transport failures and retry-worthy answers into PackErrors.

    Returns the response for any status the caller should interpret itself (2xx and 4xx
    other than 429, and any status in ``passthrough``); raises Throttled for 429 and
    DownstreamError for 5xx, timeouts and connection failures, each with a Retry-After for
    the Logic App.
    """
    try:
        response = session.request(method, url, **kwargs)
    except requests.Timeout:
        raise DownstreamError(f"{service} did not answer in time", code=f"{service}Timeout") from None
    except requests.ConnectionError as exc:
        # Read timeouts that exhausted the retries arrive wrapped in a ConnectionError.
        if isinstance(getattr(exc.args[0] if exc.args else None, "reason", None), ReadTimeoutError):
            raise DownstreamError(f"{service} did not answer in time", code=f"{service}Timeout") from None
        raise DownstreamError(f"{service} could not be reached", code=f"{service}Unreachable") from None
    except requests.RequestException as exc:
        raise DownstreamError(f"{service} request failed: {type(exc).__name__}") from None
    if response.status_code in passthrough:
        return response
    if response.status_code == 429:
        raise Throttled(
            f"{service} throttled the request ({error_code_of(response) or 'HTTP 429'})",
            retry_after=retry_after_seconds(response),
        )
    if response.status_code >= 500:
        raise DownstreamError(
            f"{service} failed with HTTP {response.status_code} {error_code_of(response)}".rstrip(),
            retry_after=retry_after_seconds(response) if "Retry-After" in response.headers else 30,
        )
    return response


__all__ = ["BoundedRetry", "PackError", "build_session", "call", "error_code_of", "retry_after_seconds",
           "session_from_settings"]
