"""Entra ID user actions through the Microsoft Graph SDK (msgraph-sdk), behind a small synchronous facade.

msgraph-sdk is asynchronous (httpx), so nothing here is imported at cold start: the SDK is loaded when an
Entra action first runs. What the pack uses of it is the request adapter (``GraphRequestAdapter`` with
msgraph-core's middleware: retries, redirects, telemetry headers, and its authentication), not the fluent
``GraphServiceClient`` and its models: the first ``User`` deserialisation imports about 1,700 modules
(2.9 s on this machine before the first answer), while the pack reads five fields. Requests are built as
``RequestInformation`` and their answers read through kiota's ``NativeResponseHandler`` as raw JSON.

One client serves the process (``shared_client``), with one connection pool (``HTTP_POOL_SIZE`` kept-alive
connections) and one TLS context. Each call runs its coroutine on a short-lived event loop *in the calling
thread* (the SDK's middleware is asynchronous), and the innermost transport sends through one synchronous httpx
transport that every thread shares (``_SyncTransport``). An earlier design ran every Graph request of the process
on one event-loop thread: under 200 concurrent triggers that one thread competed for the GIL with every request
thread, and a 100 ms PATCH took 2-6 s (the coroutine's own time, measured), long enough for duplicate triggers to
use up the Logic App's retries. Now each request's work is done by the thread that waits for it, as for every
other client of the pack (requests, azure-data-tables).

How it is wired:
- the request adapter's base URL is ``{GRAPH_ENDPOINT}/v1.0``, so tests and the demo point the SDK at the
  loopback emulator; the SDK sends a token only to that host (allowed hosts) and only over https or to
  loopback;
- tokens come from the pack's ``TokenProvider`` (managed identity; audience Graph whatever the endpoint);
- retries: the SDK's retry middleware, widened to 500/502 and bounded like ``core.http``: up to
  ``HTTP_MAX_RETRIES`` retries, and a ``Retry-After`` longer than ``HTTP_MAX_RETRY_AFTER_SECONDS`` is not
  slept here but answered to the Logic App as 429 with that Retry-After.
Graph's answers become the pack's errors: 404 -> ``NotFound`` (``None`` from the reads), 403 saying the tenant
has no Entra ID P2 / premium licence (every form Graph uses, ``LICENCE_ERRORS``) -> ``LicenceRequired``, other
403 -> ``GraphDenied`` (carrying Graph's code), 429 -> ``Throttled``, 5xx / connect timeouts / a success whose
body is broken JSON -> ``DownstreamError``, a read timeout (the request went out, its answer did not come
back) -> ``AnswerLost``, so callers check the user's state first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from core.credentials import GRAPH_SCOPE, TokenProvider
from core.errors import AnswerLost, BadRequest, DownstreamError, Forbidden, NotFound, Throttled
from core.http import broken_json

log = logging.getLogger(__name__)
T = TypeVar("T")
USER_FIELDS = ["id", "userPrincipalName", "displayName", "accountEnabled", "signInSessionsValidFromDateTime"]
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# How Graph says "this tenant has no Entra ID P2 (premium) licence" (403): "Your tenant is not licensed for this
# feature." (Identity Protection API reference) and Authentication_RequestFromNonPremiumTenantOrB2CTenant, "Neither
# tenant is B2C or tenant doesn't have premium license" (microsoftgraph/microsoft-graph-docs issues #11986, #14118,
# #14120). Any of these codes, or a message holding any of these phrases, means the feature is unavailable.
LICENCE_ERRORS = {
    "codes": frozenset({"authentication_requestfromnonpremiumtenantorb2ctenant"}),
    "phrases": ("not licensed", "premium license", "premium licence", "p2 license", "p2 licence"),
}
_tls: Any = None  # one TLS context per process: loading the CA bundle costs ~20 ms per client


def _tls_context() -> Any:
    global _tls
    if _tls is None:
        import ssl

        import certifi

        _tls = ssl.create_default_context(cafile=certifi.where())
    return _tls


class MalformedAnswer(Exception):
    """A success answer with a broken JSON body (raised inside the SDK's pipeline, translated by ``_run``)."""


class LicenceRequired(Forbidden):
    """Identity Protection answered that the tenant has no Entra ID P2 licence."""

    code = "LicenceRequired"


class GraphDenied(Forbidden):
    """Graph refused this change (e.g. Authorization_RequestDenied on a privileged account)."""

    code = "GraphDenied"


@dataclass(frozen=True)
class EntraUser:
    id: str
    user_principal_name: str
    display_name: str | None
    account_enabled: bool | None
    sessions_valid_from: str | None = None

    @property
    def label(self) -> str:
        return self.user_principal_name or self.id


def _build(tokens: TokenProvider, endpoint: str, timeout: float, retries: int, max_retry_after: float,
           pool_size: int):
    """The Graph request adapter and its httpx client (to close); usable from any thread, one call per loop."""
    import httpx
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from kiota_http.kiota_client_factory import KiotaClientFactory
    from kiota_http.middleware import BaseMiddleware, RetryHandler
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import GraphRequestAdapter
    from msgraph_core import GraphClientFactory

    host = urlsplit(endpoint).hostname or ""

    class PackTokens(AccessTokenProvider):
        """Bearer tokens from the pack's TokenProvider, only for the Graph host."""

        def __init__(self) -> None:
            self._hosts = AllowedHostsValidator([host])

        async def get_authorization_token(self, uri: str, additional_authentication_context: dict | None = None
                                          ) -> str:
            if not self._hosts.is_url_host_valid(uri):
                return ""
            # Called on the call's own loop in the calling thread: blocking here holds up no other request.
            return tokens.bearer(GRAPH_SCOPE).removeprefix("Bearer ")

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return self._hosts

    class BoundedRetry(RetryHandler):
        """The SDK's retry, also on 500/502, never sleeping longer than the pack allows."""

        def __init__(self) -> None:
            super().__init__(RetryHandlerOption(delay=0, max_retries=retries))
            self.retry_on_status_codes = set(RETRY_STATUSES)
            self.backoff_max = int(max(1, max_retry_after))

        def get_delay_time(self, retry_count: int, response: Any = None, delay: float = 0) -> float:
            retry_after = self._get_retry_after(response)
            if retry_after is not None and retry_after > max_retry_after:
                return RetryHandlerOption.MAX_DELAY  # hand the wait back to the Logic App
            return super().get_delay_time(retry_count, response, delay)

    class AnswerCheck(BaseMiddleware):
        """Outermost: a success answer whose body says JSON and is not is no Graph answer (a proxy's, a cut one).
        Refused here, or the SDK's parser crashes on it, or a write that answers 204 is taken as done on its word."""

        async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
            response = await super().send(request, transport)
            if 200 <= response.status_code < 300 and broken_json(
                    response.status_code, response.headers.get("content-type", ""), await response.aread()):
                raise MalformedAnswer(response.status_code)
            return response

    class SyncTransport(httpx.AsyncBaseTransport):
        """The SDK's innermost transport: one synchronous httpx client (its connection pool is thread-safe and not
        bound to an event loop; it applies the environment's proxy settings) shared by every thread. Each call's
        loop serves that call only, so the blocking send holds up nothing else."""

        def __init__(self) -> None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(1, pool_size))
            self.client = httpx.Client(verify=_tls_context(), limits=limits, follow_redirects=False)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = self.client.send(request, stream=True)
            try:
                content = response.read()
            finally:
                response.close()
            return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

        async def aclose(self) -> None:
            self.client.close()

    middleware = [AnswerCheck(), *(BoundedRetry() if isinstance(m, RetryHandler) else m
                                   for m in KiotaClientFactory.get_default_middleware(None))]
    # trust_env off: the environment's proxies would mount asynchronous transports; the synchronous client applies them.
    http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, transport=SyncTransport(),
                             trust_env=False)
    http = GraphClientFactory.create_with_custom_middleware(middleware=middleware, client=http)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(PackTokens()), client=http)
    adapter.base_url = f"{endpoint.rstrip('/')}/v1.0"
    return adapter, http


@dataclass(frozen=True)
class GraphAnswer:
    status: int
    headers: dict[str, str]
    body: Any  # the JSON answer (None when empty)


class EntraClient:
    """``with EntraClient(tokens, endpoint) as graph:`` then the synchronous methods below, from any thread."""

    def __init__(self, tokens: TokenProvider, endpoint: str, *, timeout: float = 10.0, retries: int = 3,
                 max_retry_after: float = 10.0, pool_size: int = 64) -> None:
        self.tokens = tokens
        self.endpoint = endpoint.rstrip("/")
        self.timeout, self.retries, self.max_retry_after, self.pool_size = timeout, retries, max_retry_after, pool_size
        self._adapter: Any = None
        self._http: Any = None
        self._start = threading.Lock()

    def __repr__(self) -> str:
        return f"EntraClient(endpoint={self.endpoint!r})"

    def start(self) -> EntraClient:
        """Build the adapter and its connection pool (once)."""
        if self._adapter is None:
            with self._start:
                if self._adapter is None:
                    self._adapter, self._http = _build(self.tokens, self.endpoint, self.timeout, self.retries,
                                                       self.max_retry_after, self.pool_size)
        return self

    def close(self) -> None:
        with self._start:
            http, self._http, self._adapter = self._http, None, None
        if http is not None:
            _run_here(http.aclose())

    def __enter__(self) -> EntraClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _run(self, awaitable: Awaitable[T], what: str) -> T:
        """Run one coroutine on its own loop in this thread; translate httpx's failures into the pack's errors."""
        import httpx

        assert self._adapter is not None, "start the EntraClient (or use it in a with block)"
        try:
            return _run_here(awaitable)
        except MalformedAnswer as exc:
            raise DownstreamError(f"Microsoft Graph answered {what} with HTTP {exc.args[0]} and a body that is not the "
                                  "JSON it announced", code="GraphMalformedAnswer") from None
        except httpx.ReadTimeout:  # the request went out: Graph may have carried it out (callers check the state)
            raise AnswerLost(f"Microsoft Graph did not answer in time ({what})", code="GraphTimeout") from None
        except httpx.TimeoutException:
            raise DownstreamError(f"Microsoft Graph did not answer in time ({what})", code="GraphTimeout") from None
        except httpx.TransportError:
            raise DownstreamError(f"Microsoft Graph could not be reached ({what})", code="GraphUnreachable") from None

    async def _send(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
                    ) -> GraphAnswer:
        """One request through the SDK's adapter and middleware; the raw answer (NativeResponseHandler)."""
        from kiota_abstractions.method import Method
        from kiota_abstractions.native_response_handler import NativeResponseHandler
        from kiota_abstractions.request_information import RequestInformation
        from kiota_http.middleware.options import ResponseHandlerOption

        info = RequestInformation()
        info.http_method = Method[method]
        info.url = f"{self.endpoint}/v1.0{path}" + (f"?{urlencode(query, safe='$,')}" if query else "")
        info.headers.try_add("Accept", "application/json")
        if body is not None:
            info.set_stream_content(json.dumps(body).encode(), "application/json")
        info.add_request_options([ResponseHandlerOption(NativeResponseHandler())])
        response = await self._adapter.send_primitive_async(info, "bytes", None)
        content = await response.aread()
        try:
            data = json.loads(content) if content.strip() else None
        except ValueError:
            data = None
        return GraphAnswer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, data)

    def _call(self, method: str, path: str, what: str, *, query: dict[str, str] | None = None, body: Any = None,
              missing_ok: bool = False) -> Any:
        """Send and check: the JSON answer of a success, None for a 404 when ``missing_ok``, else a PackError."""
        answer = self._run(self._send(method, path, query, body), what)
        if 200 <= answer.status < 300:
            return answer.body
        if answer.status == 404 and missing_ok:
            return None
        raise self._translate(answer, what)

    @staticmethod
    def _translate(answer: GraphAnswer, what: str) -> Exception:
        status = answer.status
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or f"HTTP {status}")[:100]
        message = str(error.get("message") or "")[:300]
        if status == 404:
            return NotFound(f"Microsoft Graph does not know the object of {what} ({code})")
        if status == 403 and licence_refusal(code, message):
            return LicenceRequired(f"Identity Protection refused {what}: the tenant has no Microsoft Entra ID P2 "
                                   f"licence ({code}: {message})")
        if status == 403:
            return GraphDenied(f"Microsoft Graph refused {what} ({code}: {message})", code=code or "GraphDenied")
        if status == 401:
            return DownstreamError(f"Microsoft Graph rejected the function's access token ({code})",
                                   code="GraphUnauthorized")
        if status == 429:
            return Throttled(f"Microsoft Graph throttled {what} ({code})", retry_after=_seconds(answer.headers))
        if status >= 500:
            return DownstreamError(f"Microsoft Graph failed on {what} with HTTP {status} ({code})",
                                   retry_after=_seconds(answer.headers))
        return BadRequest(f"Microsoft Graph rejected {what} ({code}: {message})", code="GraphBadRequest")

    # -- users --------------------------------------------------------------------------------
    def get_user(self, id_or_upn: str) -> EntraUser | None:
        """The user by object id or UPN; None when Graph does not know it."""
        user = self._call("GET", f"/users/{quote(id_or_upn, safe='@')}", f"reading user {id_or_upn}",
                          query={"$select": ",".join(USER_FIELDS)}, missing_ok=True)
        if not isinstance(user, dict) or not user.get("id"):
            return None
        enabled = user.get("accountEnabled")
        return EntraUser(str(user["id"]), str(user.get("userPrincipalName") or ""), user.get("displayName"),
                         enabled if isinstance(enabled, bool) else None,
                         user.get("signInSessionsValidFromDateTime") or None)

    def disable(self, user_id: str) -> None:
        self.set_enabled(user_id, False)

    def set_enabled(self, user_id: str, enabled: bool) -> None:
        """``PATCH /users/{id} {"accountEnabled": ...}`` (User.EnableDisableAccount.All), 204."""
        verb = "enabling" if enabled else "disabling"
        self._call("PATCH", f"/users/{quote(user_id)}", f"{verb} user {user_id}", body={"accountEnabled": enabled})

    def revoke_sessions(self, user_id: str) -> bool:
        result = self._call("POST", f"/users/{quote(user_id)}/revokeSignInSessions",
                            f"revoking the sessions of user {user_id}")
        return bool(isinstance(result, dict) and result.get("value"))

    # -- Identity Protection ------------------------------------------------------------------
    def risk_state(self, user_id: str) -> str | None:
        """The user's riskState (e.g. atRisk, confirmedCompromised); None without a risk record."""
        risky = self._call("GET", f"/identityProtection/riskyUsers/{quote(user_id)}",
                           f"reading the risk state of user {user_id}", missing_ok=True)
        state = risky.get("riskState") if isinstance(risky, dict) else None
        return str(state) if state else None

    def confirm_compromised(self, user_ids: list[str]) -> None:
        self._call("POST", "/identityProtection/riskyUsers/confirmCompromised", "confirming users compromised",
                   body={"userIds": list(user_ids)})


def licence_refusal(code: str, message: str) -> bool:
    """Whether a 403's code or message says the tenant lacks the Entra ID P2 / premium licence."""
    text = message.lower()
    return code.lower() in LICENCE_ERRORS["codes"] or any(p in text for p in LICENCE_ERRORS["phrases"])


_shared: dict[tuple, EntraClient] = {}
_shared_lock = threading.Lock()


def shared_client(tokens: TokenProvider, settings: Any) -> EntraClient:
    """The process's Graph client for these settings, started on first use and kept (one pool per process)."""
    key = (id(tokens), str(settings["GRAPH_ENDPOINT"]), float(settings["HTTP_TIMEOUT_SECONDS"]),
           int(settings["HTTP_MAX_RETRIES"]), float(settings["HTTP_MAX_RETRY_AFTER_SECONDS"]),
           int(settings["HTTP_POOL_SIZE"]))
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = EntraClient(tokens, key[1], timeout=key[2], retries=key[3],
                                                max_retry_after=key[4], pool_size=key[5])
    return client.start()


def _run_here(awaitable: Awaitable[T]) -> T:
    """``awaitable`` to completion on a new event loop in this thread (the pack's functions are synchronous and run
    in worker threads); from a thread whose loop is running, in a helper thread instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(awaitable)  # type: ignore[arg-type]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="graph-call") as helper:
        return helper.submit(asyncio.run, awaitable).result()  # type: ignore[arg-type]


def _seconds(headers: dict[str, Any]) -> int:
    try:
        return max(1, int(float(headers.get("retry-after", ""))))
    except ValueError:
        return 30


__all__ = ["EntraClient", "EntraUser", "GraphDenied", "LicenceRequired", "licence_refusal", "shared_client"]
