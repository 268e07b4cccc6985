"""Entra ID on loopback: the managed-identity token endpoint and the OpenID Connect sign-in of people.

Managed identity (App Service / Functions flavour, api-version 2019-08-01):

azure-identity's ManagedIdentityCredential calls ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01
&resource=<audience>[&client_id=...]`` with header ``X-IDENTITY-HEADER: {IDENTITY_HEADER}``.
The emulator issues opaque tokens and is also the authority the other emulators ask to
validate a bearer token for their audience (401 when it is missing, unknown, expired or for
another API), so a token for ARM does not open Graph.

Applications are told apart: every token remembers the application it was issued to (its client id: the
``client_id`` of a user-assigned managed identity, else the function app's system-assigned identity,
``MANAGED_IDENTITY``) and the application permissions (app roles) that application held when it was issued,
as a real token's ``appid`` and ``roles`` claims do. ``caller(req)`` gives them to an emulator that models
per-application behaviour (Defender lists only the indicators the caller created unless it holds
Ti.ReadWrite.All). The managed identity holds ``DEPLOYED_ROLES``, what infra/hooks/postprovision.sh grants;
``grant`` and ``issue(..., app_id=...)`` give other applications (a SOC portal app, a TI connector) their own.
"""

from __future__ import annotations

import html
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from localdev.emulators.base import Emulator, Request, Response

ARM_AUDIENCE = "https://management.azure.com"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"
MANAGED_IDENTITY = "3f0c7a3e-5b1d-4c2a-9e7f-1a2b3c4d5e6f"  # client id of the function app's managed identity
# The application permissions infra grants the managed identity (infra/hooks/postprovision.sh GRAPH_ROLES and
# MDE_ROLES; tests/response/test_permissions.py keeps the two lists equal).
DEPLOYED_ROLES = frozenset({
    "User.Read.All", "User.EnableDisableAccount.All", "User.RevokeSessions.All", "IdentityRiskyUser.ReadWrite.All",
    "GroupMember.Read.All",
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
        self.route("GET", r"/msi/token", self._token)
        self.sign_in = SignIn(self)

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
        app_id = req.query.get("client_id") or MANAGED_IDENTITY
        token = self.issue(resource, app_id)
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

# -- sign-in (OpenID Connect, the part App Service Authentication uses) --------------------------------------
# Modelled on the Microsoft identity platform (learn.microsoft.com/entra/identity-platform/v2-protocols-oidc):
# GET {authority}/{tenant}/oauth2/v2.0/authorize?client_id&redirect_uri&response_type=code id_token
#     &response_mode=form_post&scope=openid ...&nonce&state shows the sign-in page; a good user name and password
#     answer an HTML form that POSTs ``id_token`` and ``state`` to the redirect URI (form_post). Bad credentials:
#     AADSTS50126; a disabled account: AADSTS50057; an unregistered redirect URI: AADSTS50011 (for
#     http://127.0.0.1 and localhost the port is ignored, as the "Redirect URI restrictions" page says of
#     localhost); an unknown client: AADSTS700016.
# Keys: GET {authority}/{tenant}/discovery/v2.0/keys (JWKS, RS256). The ID token is the v1.0 shape (issuer
#     https://sts.windows.net/{tenant}/), the version that carries ``amr`` (pwd, mfa; RFC 8176 values): Entra
#     emits amr in v1.0 tokens only (MicrosoftDocs/azure-docs issue 85021), hence the v1 issuer for Easy Auth.
# The directory is the Graph emulator's users (``directory.authenticate``); MFA is a one-time code field.
TENANT = "c0ffee00-1234-4abc-8def-0123456789ab"  # the aadTenantId of the sample incidents
ID_TOKEN_SECONDS = 3600


class SignIn:
    """The sign-in endpoints, installed on an EntraEmulator."""

    def __init__(self, emulator: EntraEmulator, tenant: str = TENANT) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.emulator = emulator
        self.tenant = tenant
        self.directory: Any = None  # set by the stack: the Graph emulator (users, passwords, MFA codes)
        self.apps: dict[str, tuple[str, ...]] = {}  # client id -> registered redirect URIs
        self.signins: list[dict] = []  # what was signed in (upn, amr), for assertions
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        base = rf"/{re.escape(tenant)}"
        emulator.route("GET", base + r"/discovery/v2\.0/keys", self._keys)
        emulator.route("GET", base + r"/v2\.0/\.well-known/openid-configuration", self._configuration)
        emulator.route("GET", base + r"/oauth2/v2\.0/authorize", self._authorize)
        emulator.route("POST", base + r"/oauth2/v2\.0/authorize", self._submit)

    @property
    def authority(self) -> str:
        return f"{self.emulator.url}/{self.tenant}"

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant}/"

    def register_app(self, client_id: str, *redirect_uris: str) -> None:
        self.apps[client_id] = tuple(redirect_uris)

    # -- endpoints ------------------------------------------------------------------------------
    def _keys(self, req: Request) -> Response:
        import base64

        numbers = self._key.public_key().public_numbers()

        def b64(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return Response(200, {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "alg": "RS256",
                                        "n": b64(numbers.n), "e": b64(numbers.e)}]})

    def _configuration(self, req: Request) -> Response:
        return Response(200, {"issuer": self.issuer,
                              "authorization_endpoint": f"{self.authority}/oauth2/v2.0/authorize",
                              "jwks_uri": f"{self.authority}/discovery/v2.0/keys",
                              "response_modes_supported": ["query", "fragment", "form_post"],
                              "id_token_signing_alg_values_supported": ["RS256"]})

    def _registered(self, client_id: str, redirect_uri: str) -> str | None:
        """None when the client and redirect URI are registered; else the AADSTS error text."""
        if client_id not in self.apps:
            return (f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory "
                    f"'{self.tenant}'.")
        wanted = urlsplit(redirect_uri)
        for registered in self.apps[client_id]:
            have = urlsplit(registered)
            loopback = have.hostname in ("127.0.0.1", "localhost")
            if (have.scheme, have.hostname, have.path) == (wanted.scheme, wanted.hostname, wanted.path) and (
                    loopback or have.port == wanted.port):
                return None
        return (f"AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not match the "
                f"redirect URIs configured for the application '{client_id}'.")

    def _authorize(self, req: Request) -> Response:
        params = {k: req.query.get(k, "") for k in ("client_id", "redirect_uri", "response_type", "response_mode",
                                                     "scope", "nonce", "state")}
        problem = self._registered(params["client_id"], params["redirect_uri"])
        if problem is None and "id_token" not in params["response_type"].split():
            problem = "AADSTS700054: response_type 'id_token' is not enabled for the application."
        if problem:
            return _page(400, "Sign in", f"<p>{html.escape(problem)}</p>")
        return _page(200, "Sign in to your account", _form(params))

    def _submit(self, req: Request) -> Response:
        form = dict(parse_qsl(req.text))
        params = {k: form.get(k, "") for k in ("client_id", "redirect_uri", "response_type", "response_mode", "scope",
                                                "nonce", "state")}
        problem = self._registered(params["client_id"], params["redirect_uri"])
        if problem:
            return _page(400, "Sign in", f"<p>{html.escape(problem)}</p>")
        user = self.directory.authenticate(form.get("login", ""), form.get("password", "")) if self.directory else None
        if user is None:
            error = ("AADSTS50126: Error validating credentials due to invalid username or password.")
            return _page(200, "Sign in to your account", f'<p class="error">{html.escape(error)}</p>' + _form(params))
        if not user.get("accountEnabled", True):
            error = "AADSTS50057: The user account is disabled."
            return _page(200, "Sign in to your account", f'<p class="error">{html.escape(error)}</p>' + _form(params))
        amr = ["pwd"] + (["mfa"] if form.get("otp") and self.directory.verify_otp(user["id"], form["otp"]) else [])
        token = self.id_token(user, params["client_id"], params["nonce"], amr)
        self.signins.append({"upn": user["userPrincipalName"], "amr": amr})
        fields = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
                         for k, v in (("id_token", token), ("state", params["state"])))
        # response_mode=form_post: the browser posts the token to the app (the script submits; a person can too).
        action = html.escape(params["redirect_uri"])
        return _page(200, "Signing you in", f'<form id="f" method="post" action="{action}">'
                                            f'{fields}<button type="submit">Continue</button></form>'
                                            "<script>document.getElementById('f').submit()</script>")

    def id_token(self, user: dict, client_id: str, nonce: str, amr: list[str], issued: float | None = None) -> str:
        import jwt

        now = int(time.time() if issued is None else issued)
        claims = {"aud": client_id, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + ID_TOKEN_SECONDS,
                  "amr": amr, "name": user.get("displayName", ""), "oid": user["id"], "sub": user["id"],
                  "tid": self.tenant, "upn": user["userPrincipalName"], "unique_name": user["userPrincipalName"],
                  "email": user.get("mail") or user["userPrincipalName"], "nonce": nonce, "ver": "1.0"}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})


def _form(params: dict[str, str]) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in params.items())
    return (f'<form method="post">{hidden}<label>Email, phone or Skype <input name="login" type="email" '
            'autocomplete="username" required></label><label>Password <input name="password" type="password" '
            'required></label><label>Authenticator code (multi-factor) <input name="otp" inputmode="numeric">'
            '</label><button type="submit" id="signin">Sign in</button></form>')


def _page(status: int, title: str, body: str) -> Response:
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            '<style>body{font-family:sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem}'
            'label,input,button{display:block;width:100%;'
            'margin:.4rem 0}input,button{min-height:40px}.error{color:#c50f1f}</style></head><body>'
            f'<h1>{html.escape(title)}</h1>{body}</body></html>')
    return Response(status, text, {"Content-Type": "text/html; charset=utf-8"})
