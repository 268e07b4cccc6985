"""Access tokens through azure-identity: managed identity in Azure, never a secret in code.

Which credential is used follows azure-identity's own variables:
- ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` (App Service / Functions managed identity, and the
  local managed-identity emulator): ``ManagedIdentityCredential`` (``AZURE_CLIENT_ID`` selects a
  user-assigned identity);
- ``AZURE_CLIENT_SECRET`` with ``AZURE_TENANT_ID``/``AZURE_CLIENT_ID``: ``EnvironmentCredential``;
- otherwise ``DefaultAzureCredential`` (developer sign-in).
azure-identity is imported on first use, not at cold start.
"""

from __future__ import annotations

import logging
import os
import threading

from core.errors import DownstreamError

log = logging.getLogger(__name__)

# Token audiences stay the public ones even when an endpoint setting points elsewhere.
ARM_SCOPE = "https://management.azure.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default"


def _token_request_bounds() -> dict:
    """The pack's HTTP bounds, applied to token requests too.

    azure-identity's own defaults (up to 10 retries, 300 s timeouts, any Retry-After slept in full:
    three 429s with Retry-After 30 held an action for 90 s) would let a slow or throttling identity
    endpoint use up the function's and the Logic App's time; with these, the action answers
    TokenUnavailable (502 + Retry-After) within about the same time as any other outbound call.
    """
    from azure.core.pipeline.policies import RetryPolicy

    from core.settings import get_settings

    settings = get_settings()
    retries, timeout = int(settings["HTTP_MAX_RETRIES"]), float(settings["HTTP_TIMEOUT_SECONDS"])
    longest_wait = float(settings["HTTP_MAX_RETRY_AFTER_SECONDS"])

    class BoundedRetryPolicy(RetryPolicy):
        """Gives the answer back instead of sleeping through a Retry-After longer than the bound."""

        def is_retry(self, settings, response) -> bool:  # type: ignore[override]
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > longest_wait:
                return False
            return super().is_retry(settings, response)

    return {"retry_policy_class": BoundedRetryPolicy, "retry_total": retries, "retry_connect": retries,
            "retry_read": retries, "retry_status": retries, "retry_backoff_factor": 0.5,
            "retry_backoff_max": longest_wait, "connection_timeout": timeout, "read_timeout": timeout}


def _build_credential():
    from azure import identity

    if os.environ.get("IDENTITY_ENDPOINT"):
        return identity.ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None,
                                                  **_token_request_bounds())
    if os.environ.get("AZURE_CLIENT_SECRET"):
        return identity.EnvironmentCredential(**_token_request_bounds())
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)


class TokenProvider:
    """Bearer tokens per scope. azure-identity caches tokens until shortly before they expire.

    Requests for one scope go one at a time: when eight threads of a fanned-out action (or eight
    concurrent invocations) start with an empty cache, the first fetches the token and the others find
    it cached, instead of eight token requests. A cached token is answered in microseconds, so the
    per-scope lock costs nothing once warm.
    """

    def __init__(self, credential=None) -> None:
        self._credential = credential
        self._lock = threading.Lock()
        self._scope_locks: dict[str, threading.Lock] = {}

    @property
    def credential(self):
        if self._credential is None:
            with self._lock:
                if self._credential is None:
                    self._credential = _build_credential()
        return self._credential

    def bearer(self, scope: str) -> str:
        from azure.core.exceptions import AzureError

        credential = self.credential
        with self._lock:
            scope_lock = self._scope_locks.setdefault(scope, threading.Lock())
        try:
            with scope_lock:
                token = credential.get_token(scope)
        except AzureError as exc:
            # The exception text can include the identity endpoint's answer, never a secret we hold,
            # but keep the message short and generic for the run history.
            log.warning("token request for %s failed: %s", scope, type(exc).__name__)
            raise DownstreamError(
                f"could not get an access token for {scope.removesuffix('/.default')}",
                code="TokenUnavailable",
            ) from None
        return "Bearer " + token.token


_provider: TokenProvider | None = None


def get_token_provider() -> TokenProvider:
    global _provider
    if _provider is None:
        _provider = TokenProvider()
    return _provider
