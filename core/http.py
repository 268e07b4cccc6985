"""The one outbound HTTP setup: a requests Session with timeouts and bounded retries.

Retries happen on 429 and 5xx, honouring ``Retry-After`` up to ``HTTP_MAX_RETRY_AFTER_SECONDS``.
A longer wait is not slept inside a function (it would burn the function's time budget):
the response is handed back and the action answers 429/503 with that ``Retry-After`` so the
Logic App's retry policy waits instead. Request headers (API keys, bearer tokens) are never
logged or put in error messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

from core.errors import AnswerLost, DownstreamError, PackError, Throttled

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = Retry.DEFAULT_ALLOWED_METHODS  # sent again after a lost answer: GET, PUT, DELETE, HEAD, ...
# Hosts whose pools one session keeps (ARM, Defender, VirusTotal, ServiceNow, Teams, Slack, ...): requests'
# default of 10 is near the pack's count, and an evicted pool drops its open connections.
POOL_HOSTS = 16


class RedactUrls(logging.Filter):
    """urllib3 logs the request's path and query when it retries (a WARNING) and at DEBUG; a webhook URL or
    a Logic App callback URL carries its credential right there. Keep the host, drop the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        return True


def _redacted(value: object) -> object:
    if isinstance(value, str) and (value.startswith("/") or "://" in value):
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.netloc}/[redacted]" if parts.netloc else "/[redacted]"
    return value


for _name in ("urllib3.connectionpool", "urllib3.util.retry"):  # a filter applies to its own logger's records
    logging.getLogger(_name).addFilter(RedactUrls())


class BoundedRetry(Retry):
    """urllib3 Retry that gives up (returning the response) when Retry-After is too long, and never sends a
    non-idempotent request again after its answer was lost (read timeout, connection dropped mid-answer):
    the service may have acted on it. Answers that say "not done" (429, 5xx) and connect errors are retried
    for every method."""

    max_retry_after: float = 10.0

    def new(self, **kw):  # keep the bound on the copies urllib3 makes at each attempt
        new = super().new(**kw)
        new.max_retry_after = self.max_retry_after
        return new

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if error is not None and self._is_read_error(error) and (method or "").upper() not in IDEMPOTENT:
            raise error
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
    pool_size: int = 64,
) -> requests.Session:
    """Build the session every API client uses.

    One session serves the whole process (core/context.py), so its connection pools are shared by every
    invocation and every thread an action fans out to (core/concurrency.py): ``pool_size`` connections are
    kept per host (``HTTP_POOL_SIZE``); with fewer, concurrent calls past it open connections that urllib3
    then discards ("Connection pool is full"), paying a TLS handshake each time.

    Every method is retried on 429/5xx answers and connection failures (the request was not carried
    out); after a lost answer only idempotent methods are (see ``BoundedRetry``): a POST whose answer
    timed out surfaces as ``AnswerLost`` and its caller decides, from the service's state or its own
    ledger, whether to send it again.
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
    adapter = HTTPAdapter(max_retries=retry, pool_connections=POOL_HOSTS, pool_maxsize=max(1, pool_size))
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
        pool_size=int(settings["HTTP_POOL_SIZE"]),
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
    except requests.ConnectTimeout:  # nothing was sent
        raise DownstreamError(f"{service} could not be reached in time", code=f"{service}Unreachable") from None
    except requests.Timeout:
        raise AnswerLost(f"{service} did not answer in time", code=f"{service}Timeout") from None
    except requests.ConnectionError as exc:
        # Read timeouts that exhausted the retries arrive wrapped in a ConnectionError.
        if isinstance(getattr(exc.args[0] if exc.args else None, "reason", None), ReadTimeoutError):
            raise AnswerLost(f"{service} did not answer in time", code=f"{service}Timeout") from None
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


def reject_broken_json(response: requests.Response, service: str) -> None:
    """For callers that ignore a success body (webhooks, sendMail): a 2xx whose body is not the JSON it
    announced is not the service's answer, so it proves nothing; DownstreamError, the Logic App retries."""
    if broken_json(response.status_code, response.headers.get("Content-Type", ""), response.content):
        raise DownstreamError(f"{service} answered HTTP {response.status_code} with a body that is not the JSON it "
                              "announced: not the service's answer", code=f"{service}MalformedAnswer")


def broken_json(status: int, content_type: str, body: bytes) -> bool:
    """A success answer whose body says it is JSON and is not: not the service's answer (a proxy's, a truncated
    one), so its status proves nothing. For callers that otherwise ignore the body (webhooks, sendMail)."""
    if not 200 <= status < 300 or "json" not in content_type.lower() or not body.strip():
        return False
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


__all__ = ["BoundedRetry", "PackError", "broken_json", "build_session", "call", "error_code_of",
           "reject_broken_json", "retry_after_seconds", "session_from_settings"]
