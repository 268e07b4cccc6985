"""Managed-identity token endpoint (App Service / Functions flavour, api-version 2019-08-01).

azure-identity's ManagedIdentityCredential calls ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01
&resource=<audience>[&client_id=...]`` with header ``X-IDENTITY-HEADER: {IDENTITY_HEADER}``.
The emulator issues opaque tokens and is also the authority the other emulators ask to
validate a bearer token for their audience (401 when it is missing, unknown, expired or for
another API), so a token for ARM does not open Graph.
"""

from __future__ import annotations

import secrets
import threading
import time

from localdev.emulators.base import Emulator, Request, Response

ARM_AUDIENCE = "https://management.azure.com"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"


def _audience(resource: str) -> str:
    return resource.removesuffix("/.default").rstrip("/")


class EntraEmulator(Emulator):
    name = "entra"

    def __init__(self, identity_header: str | None = None, lifetime: int = 3600, **kw) -> None:
        super().__init__(**kw)
        self.identity_header = identity_header or secrets.token_hex(16)
        self.lifetime = lifetime
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()
        self.route("GET", r"/msi/token", self._token)

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

    def issue(self, audience: str) -> str:
        token = "emu-" + secrets.token_urlsafe(24)
        with self._tokens_lock:
            self._tokens[token] = (_audience(audience), time.time() + self.lifetime)
        return token

    def _token(self, req: Request) -> Response:
        if req.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return Response(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"})
        if req.query.get("api-version") != "2019-08-01":
            return Response(400, {"statusCode": 400, "message": "unsupported api-version"})
        resource = req.query.get("resource")
        if not resource:
            return Response(400, {"statusCode": 400, "message": "resource is required"})
        token = self.issue(resource)
        return Response(200, {
            "access_token": token,
            "expires_on": str(int(time.time()) + self.lifetime),
            "resource": _audience(resource),
            "token_type": "Bearer",
            "client_id": req.query.get("client_id", "00000000-0000-0000-0000-000000000000"),
        })

    def check(self, req: Request, audience: str) -> Response | None:
        """None when the request carries a valid bearer token for ``audience``; else the 401."""
        header = req.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            message = "Authentication failed. The 'Authorization' header is missing."
            return Response(401, {"error": {"code": "AuthenticationFailed", "message": message}})
        with self._tokens_lock:
            entry = self._tokens.get(header[7:])
        if entry is None or entry[1] < time.time():
            return Response(401, {"error": {"code": "InvalidAuthenticationToken",
                                             "message": "The access token is invalid or expired."}})
        if entry[0] != _audience(audience):
            return Response(401, {"error": {"code": "InvalidAuthenticationTokenAudience",
                                             "message": "The access token has an invalid audience."}})
        return None
