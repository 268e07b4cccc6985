"""Entra ID user actions through the Microsoft Graph SDK (msgraph-sdk), behind a small synchronous facade.

msgraph-sdk is asynchronous (httpx) and costs about a second to import, so nothing here is imported at
cold start: the SDK is loaded when an Entra action first runs. One ``EntraClient`` serves one invocation:
it owns an event loop and an httpx client bound to that loop, and closes both when the ``with`` block
ends (an httpx async client cannot move between event loops, and the Functions worker runs a sync
function in a thread with none).

How it is wired:
- the request adapter's base URL is ``{GRAPH_ENDPOINT}/v1.0``, so tests and the demo point the SDK at the
  loopback emulator; the SDK sends a token only to that host (allowed hosts) and only over https or to
  loopback;
- tokens come from the pack's ``TokenProvider`` (managed identity; audience Graph whatever the endpoint);
- retries: the SDK's retry middleware, widened to 500/502 and bounded like ``core.http``: up to
  ``HTTP_MAX_RETRIES`` retries, and a ``Retry-After`` longer than ``HTTP_MAX_RETRY_AFTER_SECONDS`` is not
  slept here but answered to the Logic App as 429 with that Retry-After.
Graph's answers become the pack's errors: 404 -> ``NotFound`` (``None`` from the reads), 403 "not licensed" ->
``LicenceRequired``, other 403 -> ``GraphDenied`` (carrying Graph's code), 429 -> ``Throttled``,
5xx / connect timeouts / a success whose body is broken JSON -> ``DownstreamError``, a read timeout (the
request went out, its answer did not come back) -> ``AnswerLost``, so callers check the user's state first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from core.credentials import GRAPH_SCOPE, TokenProvider
from core.errors import AnswerLost, BadRequest, DownstreamError, Forbidden, NotFound, Throttled
from core.http import broken_json

log = logging.getLogger(__name__)
T = TypeVar("T")
USER_FIELDS = ["id", "userPrincipalName", "displayName", "accountEnabled", "signInSessionsValidFromDateTime"]
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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


def _build(tokens: TokenProvider, endpoint: str, timeout: float, retries: int, max_retry_after: float):
    """The GraphServiceClient (and its httpx client, to close) for one event loop."""
    import httpx
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from kiota_http.kiota_client_factory import KiotaClientFactory
    from kiota_http.middleware import BaseMiddleware, RetryHandler
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import GraphRequestAdapter, GraphServiceClient
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
            bearer = await asyncio.to_thread(tokens.bearer, GRAPH_SCOPE)
            return bearer.removeprefix("Bearer ")

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

    middleware = [AnswerCheck(), *(BoundedRetry() if isinstance(m, RetryHandler) else m
                                   for m in KiotaClientFactory.get_default_middleware(None))]
    http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, verify=_tls_context())
    http = GraphClientFactory.create_with_custom_middleware(middleware=middleware, client=http)
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(PackTokens()), client=http)
    adapter.base_url = f"{endpoint.rstrip('/')}/v1.0"
    return GraphServiceClient(request_adapter=adapter), http


class EntraClient:
    """``with EntraClient(tokens, endpoint) as graph:`` then the synchronous methods below."""

    def __init__(self, tokens: TokenProvider, endpoint: str, *, timeout: float = 10.0, retries: int = 3,
                 max_retry_after: float = 10.0) -> None:
        self.tokens = tokens
        self.endpoint = endpoint.rstrip("/")
        self.timeout, self.retries, self.max_retry_after = timeout, retries, max_retry_after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._http: Any = None

    def __repr__(self) -> str:
        return f"EntraClient(endpoint={self.endpoint!r})"

    def __enter__(self) -> EntraClient:
        self._loop = asyncio.new_event_loop()
        self._client, self._http = _build(self.tokens, self.endpoint, self.timeout, self.retries,
                                          self.max_retry_after)
        return self

    def __exit__(self, *exc: object) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run_until_complete(self._http.aclose())
        finally:
            loop.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _run(self, awaitable: Awaitable[T], what: str) -> T:
        """Run one SDK call; translate Graph's and httpx's failures into the pack's errors."""
        import httpx
        from kiota_abstractions.api_error import APIError

        assert self._loop is not None, "use EntraClient in a with block"
        try:
            return self._loop.run_until_complete(awaitable)
        except APIError as exc:
            raise self._translate(exc, what) from None
        except MalformedAnswer as exc:
            raise DownstreamError(f"Microsoft Graph answered {what} with HTTP {exc.args[0]} and a body that is not the "
                                  "JSON it announced", code="GraphMalformedAnswer") from None
        except httpx.ReadTimeout:  # the request went out: Graph may have carried it out (callers check the state)
            raise AnswerLost(f"Microsoft Graph did not answer in time ({what})", code="GraphTimeout") from None
        except httpx.TimeoutException:
            raise DownstreamError(f"Microsoft Graph did not answer in time ({what})", code="GraphTimeout") from None
        except httpx.TransportError:
            raise DownstreamError(f"Microsoft Graph could not be reached ({what})", code="GraphUnreachable") from None

    @staticmethod
    def _translate(exc: Any, what: str) -> Exception:
        status = exc.response_status_code or 0
        error = getattr(exc, "error", None)
        code = str(getattr(error, "code", "") or f"HTTP {status}")[:100]
        message = str(getattr(error, "message", "") or "")[:300]
        headers = {str(k).lower(): v for k, v in (exc.response_headers or {}).items()}
        if status == 404:
            return NotFound(f"Microsoft Graph does not know the object of {what} ({code})")
        if status == 403 and "not licensed" in message.lower():
            return LicenceRequired(f"Identity Protection refused {what}: the tenant has no Microsoft Entra ID P2 "
                                   f"licence ({code}: {message})")
        if status == 403:
            return GraphDenied(f"Microsoft Graph refused {what} ({code}: {message})", code=code or "GraphDenied")
        if status == 401:
            return DownstreamError(f"Microsoft Graph rejected the function's access token ({code})",
                                   code="GraphUnauthorized")
        if status == 429:
            return Throttled(f"Microsoft Graph throttled {what} ({code})", retry_after=_seconds(headers))
        if status >= 500:
            return DownstreamError(f"Microsoft Graph failed on {what} with HTTP {status} ({code})",
                                   retry_after=_seconds(headers))
        return BadRequest(f"Microsoft Graph rejected {what} ({code}: {message})", code="GraphBadRequest")

    # -- users --------------------------------------------------------------------------------
    def get_user(self, id_or_upn: str) -> EntraUser | None:
        """The user by object id or UPN; None when Graph does not know it."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=USER_FIELDS)
        try:
            user = self._run(self._client.users.by_user_id(id_or_upn).get(
                request_configuration=RequestConfiguration(query_parameters=query)), f"reading user {id_or_upn}")
        except NotFound:
            return None
        if user is None or not user.id:
            return None
        valid_from = user.sign_in_sessions_valid_from_date_time
        return EntraUser(user.id, user.user_principal_name or "", user.display_name, user.account_enabled,
                         valid_from.isoformat() if valid_from else None)

    def disable(self, user_id: str) -> None:
        from msgraph.generated.models.user import User

        self._run(self._client.users.by_user_id(user_id).patch(User(account_enabled=False)),
                  f"disabling user {user_id}")

    def revoke_sessions(self, user_id: str) -> bool:
        result = self._run(self._client.users.by_user_id(user_id).revoke_sign_in_sessions.post(),
                           f"revoking the sessions of user {user_id}")
        return bool(result and result.value)

    # -- Identity Protection ------------------------------------------------------------------
    def risk_state(self, user_id: str) -> str | None:
        """The user's riskState (e.g. atRisk, confirmedCompromised); None without a risk record."""
        try:
            risky = self._run(self._client.identity_protection.risky_users.by_risky_user_id(user_id).get(),
                              f"reading the risk state of user {user_id}")
        except NotFound:
            return None
        state = getattr(risky, "risk_state", None)
        return str(getattr(state, "value", state)) if state is not None else None

    def confirm_compromised(self, user_ids: list[str]) -> None:
        from msgraph.generated.identity_protection.risky_users.confirm_compromised.confirm_compromised_post_request_body import (  # noqa: E501
            ConfirmCompromisedPostRequestBody,
        )

        body = ConfirmCompromisedPostRequestBody(user_ids=list(user_ids))
        self._run(self._client.identity_protection.risky_users.confirm_compromised.post(body),
                  "confirming users compromised")


def _seconds(headers: dict[str, Any]) -> int:
    try:
        return max(1, int(float(headers.get("retry-after", ""))))
    except ValueError:
        return 30


__all__ = ["EntraClient", "EntraUser", "GraphDenied", "LicenceRequired"]
