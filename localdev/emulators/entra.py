"""Entra ID on loopback: the managed-identity token endpoint and the OpenID Connect sign-in of people
(``SignIn``, localdev/emulators/entra_signin.py, answering over plain http and, for MSAL, https).

Managed identity (App Service / Functions flavour, api-version 2019-08-01):

azure-identity's ManagedIdentityCredential calls ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01
&resource=<audience>[&client_id=...]`` with header ``X-IDENTITY-HEADER: {IDENTITY_HEADER}``.
The emulator issues opaque tokens and is also the authority the other emulators ask to
validate a bearer token for their audience (401 when it is missing, unknown, expired or for
another API), so a token for ARM does not open Graph. A token for ``api://AzureADTokenExchange`` is a signed JWT
naming the identity (``sub`` = its principal id): the client assertion a federated identity credential accepts
(learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity). The app
runs as a user-assigned identity (``client_id``); without ``client_id`` the token names the system-assigned one,
which no federated credential can trust ("Only user-assigned managed identities can be used").

Applications are told apart: every token remembers the application it was issued to (its client id: the
``client_id`` of a user-assigned managed identity, else the app's system-assigned identity) and the
application permissions (app roles) that application held when it was issued, as a real token's ``appid`` and
``roles`` claims do. ``caller(req)`` gives them to an emulator that models per-application behaviour (Defender
lists only the indicators the caller created unless it holds Ti.ReadWrite.All). The identity the function app
runs as (``MANAGED_IDENTITY``: the user-assigned one) holds ``DEPLOYED_ROLES``, what
infra/hooks/postprovision.sh grants; the system-assigned identity holds nothing; ``grant`` and
``issue(..., app_id=...)`` give other applications (a SOC portal app, a TI connector) their own.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra_signin import EXCHANGE_AUDIENCE, TENANT, SignIn

ARM_AUDIENCE = "https://management.azure.com"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"
# The function app's identities: the user-assigned one it runs as (AZURE_CLIENT_ID) and a system-assigned one.
USER_ASSIGNED_CLIENT_ID = "1d000000-0000-4000-8000-0000000000c1"
USER_ASSIGNED_PRINCIPAL_ID = "1d000000-0000-4000-8000-0000000000a1"
SYSTEM_ASSIGNED_PRINCIPAL_ID = "5a000000-0000-4000-8000-0000000000a1"
SYSTEM_ASSIGNED_CLIENT_ID = "5a000000-0000-4000-8000-0000000000c1"
# The identity the function app runs as (infra: user-assigned, AZURE_CLIENT_ID); infra grants it the app roles.
MANAGED_IDENTITY = USER_ASSIGNED_CLIENT_ID
# The application permissions infra grants the managed identity (infra/hooks/postprovision.sh GRAPH_ROLES and
# MDE_ROLES; tests/response/test_permissions.py keeps the two lists equal).
DEPLOYED_ROLES = frozenset({
    "User.Read.All", "User.EnableDisableAccount.All", "User.RevokeSessions.All", "IdentityRiskyUser.ReadWrite.All",
    "GroupMember.Read.All", "Domain.Read.All",
    "Machine.Read.All", "Machine.Isolate", "Ti.ReadWrite.All",
})


@dataclass(frozen=True)
class Caller:
    """Who presented a valid token: the application's client id and its app roles."""

    app_id: str
    roles: frozenset[str]


@dataclass(frozen=True)
class _Issued:
    audience: str
    expires: float
    app_id: str
    roles: frozenset[str]


def _audience(resource: str) -> str:
    return resource.removesuffix("/.default").rstrip("/")


class EntraEmulator(Emulator):
    name = "entra"

    def __init__(self, identity_header: str | None = None, lifetime: int = 3600,
                 roles: dict[str, Iterable[str]] | None = None, **kw) -> None:
        super().__init__(**kw)
        self.identity_header = identity_header or secrets.token_hex(16)
        self.lifetime = lifetime
        self.app_roles: dict[str, frozenset[str]] = {MANAGED_IDENTITY: DEPLOYED_ROLES}
        for app_id, granted in (roles or {}).items():
            self.grant(app_id, *granted)
        self._tokens: dict[str, _Issued] = {}
        self._tokens_lock = threading.Lock()
        self.user_assigned = {USER_ASSIGNED_CLIENT_ID: USER_ASSIGNED_PRINCIPAL_ID}  # client id -> principal id
        self.route("GET", r"/msi/token", self._token)
        self.sign_in = SignIn(self)

    def start(self) -> EntraEmulator:
        super().start()
        self.sign_in.tls.start()
        return self

    def stop(self) -> None:
        self.sign_in.tls.stop()
        super().stop()

    def reset(self) -> None:
        super().reset()
        self.sign_in.reset()

    @property
    def endpoint(self) -> str:
        return self.url + "/msi/token"

    def env(self) -> dict[str, str]:
        """The variables that make azure-identity use this endpoint."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.identity_header}

    def revoke_all(self) -> None:
        """Invalidate every issued token (``reset`` keeps them: hosts cache tokens across tests)."""
        with self._tokens_lock:
            self._tokens.clear()

    def grant(self, app_id: str, *roles: str) -> None:
        """The application permissions ``app_id`` holds (replacing earlier ones); tokens issued later carry them."""
        with self._tokens_lock:
            self.app_roles[app_id] = frozenset(roles)

    def issue(self, audience: str, app_id: str = MANAGED_IDENTITY, roles: Iterable[str] | None = None) -> str:
        """A token for ``audience`` issued to ``app_id``, with ``roles`` (default: what the app was granted)."""
        token = "emu-" + secrets.token_urlsafe(24)
        with self._tokens_lock:
            held = frozenset(roles) if roles is not None else self.app_roles.get(app_id, frozenset())
            self._tokens[token] = _Issued(_audience(audience), time.time() + self.lifetime, app_id, held)
        return token

    def _token(self, req: Request) -> Response:
        if req.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return Response(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"})
        if req.query.get("api-version") != "2019-08-01":
            return Response(400, {"statusCode": 400, "message": "unsupported api-version"})
        resource = req.query.get("resource")
        if not resource:
            return Response(400, {"statusCode": 400, "message": "resource is required"})
        client_id = req.query.get("client_id", "")
        if _audience(resource) == EXCHANGE_AUDIENCE:
            if client_id and client_id not in self.user_assigned:
                return Response(400, {"statusCode": 400, "message": "Unable to load the proper Managed Identity."})
            principal = self.user_assigned[client_id] if client_id else SYSTEM_ASSIGNED_PRINCIPAL_ID
            token = self.sign_in.exchange_token(principal, client_id, self.lifetime)
        else:
            token = self.issue(resource, client_id or SYSTEM_ASSIGNED_CLIENT_ID)
        app_id = client_id or SYSTEM_ASSIGNED_CLIENT_ID
        return Response(200, {
            "access_token": token,
            "expires_on": str(int(time.time()) + self.lifetime),
            "resource": _audience(resource),
            "token_type": "Bearer",
            "client_id": app_id,
        })

    def check(self, req: Request, audience: str) -> Response | None:
        """None when the request carries a valid bearer token for ``audience``; else the 401."""
        header = req.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            message = "Authentication failed. The 'Authorization' header is missing."
            return Response(401, {"error": {"code": "AuthenticationFailed", "message": message}})
        with self._tokens_lock:
            entry = self._tokens.get(header[7:])
        if entry is None or entry.expires < time.time():
            return Response(401, {"error": {"code": "InvalidAuthenticationToken",
                                             "message": "The access token is invalid or expired."}})
        if entry.audience != _audience(audience):
            return Response(401, {"error": {"code": "InvalidAuthenticationTokenAudience",
                                             "message": "The access token has an invalid audience."}})
        return None

    def caller(self, req: Request) -> Caller | None:
        """The application and roles of the request's token (None without a known token: ``check`` first)."""
        header = req.headers.get("Authorization", "")
        with self._tokens_lock:
            entry = self._tokens.get(header[7:]) if header.startswith("Bearer ") else None
        return Caller(entry.app_id, entry.roles) if entry is not None else None

__all__ = ["ARM_AUDIENCE", "GRAPH_AUDIENCE", "MDE_AUDIENCE", "TENANT", "EntraEmulator", "SignIn"]
