"""The in-app sign-in (``SIGN_IN_MODE=app``): OpenID Connect authorization code flow with PKCE through MSAL,
the ID token verified against Entra's keys, and a signed session cookie.

Why in the app: the pack runs on Flex Consumption, where Microsoft's plan page said for a long time "EasyAuth
isn't currently supported. Unauthenticated callers currently aren't blocked when EasyAuth is enabled" (docs/
deploy.md, "Sign-in", has the finding and its sources). A person deciding an approval must never depend on a
platform header whose stripping is not documented for the plan, so the app signs people in itself and never
reads ``X-MS-CLIENT-PRINCIPAL`` in this mode (core/principal.py).

The flow (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow):
1. ``GET /api/auth/login?redirect=/api/...`` builds the authorize request with MSAL
   (``initiate_auth_code_flow``: ``state``, ``nonce``, PKCE S256) and keeps MSAL's flow in a short-lived signed
   cookie (``SentinelPlaybooksSignIn``: HttpOnly, SameSite=Lax, path ``/api/auth``, 10 minutes); the browser goes
   to Entra. ``redirect`` must be one of the app's own paths (``/api/...``): nothing else is ever followed.
2. Entra sends the browser back to ``GET /api/auth/callback?code=&state=`` (``response_mode=query``: a top-level
   GET carries the SameSite=Lax flow cookie, a cross-site form_post would not, and that cookie is what binds the
   answer to the browser that started the sign-in). MSAL warns that form_post is recommended (RFC 9700 4.3.1, a
   code left in the browser history): the same section's other countermeasure, replay prevention, is what the
   code has here (single use at Entra and here, and useless without the PKCE verifier in the HttpOnly cookie).
   The state must match the flow cookie's and be unused (a row in the state store), then MSAL redeems the code
   with the PKCE verifier and a **client assertion instead of a secret**: the function app's managed identity token for
   ``api://AzureADTokenExchange`` (the app registration trusts that identity as a federated credential,
   infra/app/auth.bicep). MSAL no longer validates ID tokens ("validation is the application's responsibility",
   msal 1.38 ``decode_id_token``), so the app does: RS256 with a key from the authority's JWKS, issuer from its
   discovery document, audience = the client id, expiry, and the nonce MSAL sent (its SHA-256).
3. A session cookie (``SentinelPlaybooksSession``) carries the person (object id, UPN, name, mail, tenant), the
   sign-in's ``auth_time`` and ``acrs`` and an expiry, HMAC-SHA256-signed with a key derived from
   ``APPROVAL_SIGNING_KEY`` (purpose-separated, so no link or form token is ever a valid cookie); HttpOnly,
   SameSite=Lax, ``Secure`` whenever the pack's base URL is https (only the plain-http loopback host goes without).
   ``GET /api/auth/logout`` clears it.

Fresh multi-factor sign-in ("Yes, it was me"): v2.0 ID tokens carry no ``amr`` (docs/deploy.md cites the ID token
reference and MicrosoftDocs/azure-docs issue 85021), so the step-up is the one Microsoft documents for apps that
sign users in with MSAL: a Conditional Access **authentication context** (``SIGN_IN_MFA_AUTH_CONTEXT``, e.g. ``c1``)
whose policy requires MFA with sign-in frequency "every time", requested with the ``claims`` parameter
(``{"id_token": {"acrs": {"essential": true, "value": "c1"}}}``) and ``prompt=login``; the ID token then carries
``acrs: ["c1"]``, and ``auth_time`` (an optional claim of the registration) must be after the step-up started.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from core.errors import ConfigurationError, DownstreamError, PackError
from core.principal import GUID, Principal

log = logging.getLogger(__name__)

SESSION_COOKIE = "SentinelPlaybooksSession"
FLOW_COOKIE = "SentinelPlaybooksSignIn"
LOGIN_PATH = "/api/auth/login"
CALLBACK_PATH = "/api/auth/callback"
LOGOUT_PATH = "/api/auth/logout"
FLOW_SECONDS = 600
SKEW_SECONDS = 120
MAX_COOKIE = 3800
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
STATE_TABLE = "signin"
METADATA_SECONDS = 3600
# response_mode=query is a choice (module docstring): MSAL's warning about it would only repeat in every log.
warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended", category=UserWarning)
_OWN_PATH = re.compile(r"^/api/[\x21-\x7e]*$")  # printable ASCII only: no spaces, tabs or newlines browsers drop


class SignInRefused(PackError):
    """A sign-in that did not complete (forged, replayed or expired state, a token that fails a check)."""

    status = 401
    code = "SignInFailed"

    def __init__(self, message: str, *, status: int = 401, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


@dataclass(frozen=True)
class Config:
    client_id: str
    authority: str  # https://login.microsoftonline.com/<tenant id> (or the local Entra emulator)
    key: bytes  # cookie signing key, derived from APPROVAL_SIGNING_KEY
    session_seconds: int
    mfa_context: str  # Conditional Access authentication context id for a fresh MFA sign-in ("" = none)


def config(settings) -> Config:
    """The in-app sign-in's settings, or a ConfigurationError naming each missing one."""
    settings.require("SIGN_IN_CLIENT_ID", "SIGN_IN_AUTHORITY", "APPROVAL_SIGNING_KEY")
    secret = str(settings["APPROVAL_SIGNING_KEY"])
    if len(secret) < 32:
        raise ConfigurationError("setting APPROVAL_SIGNING_KEY must be at least 32 characters")
    key = hmac.new(secret.encode(), b"sentinel-playbooks sign-in session v1", hashlib.sha256).digest()
    return Config(client_id=str(settings["SIGN_IN_CLIENT_ID"]),
                  authority=str(settings["SIGN_IN_AUTHORITY"]).rstrip("/"), key=key,
                  session_seconds=60 * int(settings["SIGN_IN_SESSION_MINUTES"]),
                  mfa_context=str(settings["SIGN_IN_MFA_AUTH_CONTEXT"] or "").strip().lower())


# -- signed cookies ------------------------------------------------------------------------------
def seal(key: bytes, purpose: str, payload: Mapping[str, Any]) -> str:
    """``base64url(json).base64url(HMAC-SHA256(key, purpose \\n json))``: readable by the browser, not forgeable."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, f"{purpose}\n{body}".encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unseal(key: bytes, purpose: str, value: str, now: float | None = None) -> dict[str, Any] | None:
    """The payload of a sealed value, None when it is missing, too large, tampered with or past its ``exp``."""
    if not value or len(value) > MAX_COOKIE or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    expected = _b64(hmac.new(key, f"{purpose}\n{body}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        return None
    return payload if payload["exp"] > (time.time() if now is None else now) else None


def cookie_of(headers: Mapping[str, str], name: str) -> str:
    raw = next((v for k, v in headers.items() if k.lower() == "cookie"), "") or ""
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def set_cookie(name: str, value: str, *, path: str, max_age: int, secure: bool) -> str:
    return (f"{name}={value}; Path={path}; Max-Age={max(max_age, 0)}; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else ""))


# -- the session ---------------------------------------------------------------------------------
def session_payload(headers: Mapping[str, str], settings) -> dict[str, Any] | None:
    value = cookie_of(headers, SESSION_COOKIE)
    if not value:
        return None
    payload = unseal(config(settings).key, "session", value)
    if payload is None:
        log.info("sign-in session cookie refused (tampered, foreign key or expired)")
    return payload


def session_principal(headers: Mapping[str, str], settings) -> Principal | None:
    """The person of a valid session cookie, None without one (or with a tampered or expired one)."""
    payload = session_payload(headers, settings)
    if payload is None or not GUID.match(str(payload.get("oid", ""))):
        return None
    return Principal(object_id=str(payload["oid"]).lower(), upn=str(payload.get("upn", "")).lower(),
                     name=str(payload.get("name", ""))[:200], email=str(payload.get("email", "")).lower(),
                     tenant_id=str(payload.get("tid", "")).lower(), issued_at=int(payload.get("iat") or 0),
                     auth_time=int(payload.get("auth_time") or 0),
                     acrs=tuple(str(a).lower() for a in payload.get("acrs") or ()))


def session_binding(headers: Mapping[str, str], settings) -> str:
    """The session's random id: anti-CSRF form tokens are bound to it ("" without a valid session)."""
    payload = session_payload(headers, settings)
    return str(payload.get("sid", "")) if payload else ""


def own_path(value: str) -> str | None:
    """``value`` when it is one of the app's own paths (``/api/...``, printable ASCII, no backslash); else None."""
    if not value or not _OWN_PATH.match(value) or "\\" in value or value.startswith("/api//"):
        return None
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc and parts.path.startswith("/api/") else None


def login_path(next_path: str, *, fresh_mfa: bool = False) -> str:
    target = own_path(next_path) or "/api/health"
    return f"{LOGIN_PATH}?redirect={quote(target, safe='')}" + ("&mfa=1" if fresh_mfa else "")


# -- Entra through MSAL ------------------------------------------------------------------------------
class Entra:
    """One per authority and client id: MSAL's application, the discovery document and the signing keys."""

    def __init__(self, cfg: Config, http) -> None:
        self.cfg = cfg
        self.http = http
        self._msal = None
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] = {}
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0

    @property
    def msal(self):
        with self._lock:
            if self._msal is None:
                import msal

                from core.credentials import get_token_provider

                def assertion() -> str:
                    # The function app's managed identity token, audience api://AzureADTokenExchange.
                    return get_token_provider().bearer(EXCHANGE_SCOPE).removeprefix("Bearer ")

                class NoCache(msal.TokenCache):
                    """Keeps nothing: the pack reads the ID token once and calls no API as the user, so no user
                    token (refresh tokens included) stays in a worker's memory."""

                    def add(self, event, **kwargs) -> None:
                        return None

                cache = NoCache()
                self._msal = msal.ConfidentialClientApplication(
                    self.cfg.client_id, authority=self.cfg.authority, client_credential={"client_assertion": assertion},
                    http_client=self.http, token_cache=cache, instance_discovery=False)
            return self._msal

    def start(self, redirect_uri: str, *, fresh_mfa: bool) -> dict[str, Any]:
        claims = None
        if fresh_mfa:
            claims = json.dumps({"id_token": {"acrs": {"essential": True, "value": self.cfg.mfa_context},
                                              "auth_time": {"essential": True}}})
        # No scope of our own: MSAL asks for openid profile offline_access; mail and UPN come as optional claims of
        # the registration, so nobody is asked to consent to more than signing in.
        return self.msal.initiate_auth_code_flow([], redirect_uri=redirect_uri, claims_challenge=claims,
                                                 prompt="login" if fresh_mfa else None, response_mode="query")

    def finish(self, flow: dict[str, Any], response: dict[str, str]) -> dict[str, Any]:
        """Redeem the code (MSAL, client assertion) and verify the ID token; its claims."""
        import requests

        try:
            result = self.msal.acquire_token_by_auth_code_flow(flow, response)
        except ValueError:
            raise SignInRefused("the sign-in answer does not belong to this sign-in (state)", code="StateMismatch") \
                from None
        except RuntimeError as exc:  # MSAL's own nonce check
            log.warning("sign-in refused by MSAL: %s", str(exc)[:80])
            raise SignInRefused("the ID token does not belong to this sign-in (nonce)", code="NonceMismatch") from None
        except requests.RequestException as exc:
            raise DownstreamError(f"Entra ID did not answer ({type(exc).__name__})", code="SignInUnavailable") \
                from None
        if "error" in result:
            codes = ",".join(str(c) for c in result.get("error_codes") or ())
            log.warning("sign-in: the token endpoint refused: %s (AADSTS %s)", result.get("error"), codes or "-")
            raise SignInRefused(f"Microsoft Entra ID refused the sign-in ({result.get('error')}"
                                + (f", AADSTS{codes}" if codes else "") + ")", code="TokenRefused")
        id_token = result.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("Microsoft Entra ID answered without an ID token", code="NoIdToken")
        return self.verify(id_token, nonce=hashlib.sha256(str(flow.get("nonce", "")).encode()).hexdigest())

    # -- the ID token ---------------------------------------------------------------------------
    def verify(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise SignInRefused("the ID token is malformed", code="TokenMalformed") from None
        if header.get("alg") != "RS256":
            raise SignInRefused("the ID token is not signed with RS256", code="TokenAlgorithm")
        key = self._signing_key(str(header.get("kid", "")))
        metadata = self.metadata()
        try:
            claims = jwt.decode(id_token, key, algorithms=["RS256"], audience=self.cfg.client_id,
                                issuer=metadata["issuer"], leeway=SKEW_SECONDS,
                                options={"require": ["exp", "iat", "nbf", "aud", "iss", "sub", "oid", "tid", "nonce"]})
        except jwt.InvalidAudienceError:
            raise SignInRefused("the ID token is for another application (audience)", code="TokenAudience") from None
        except jwt.InvalidIssuerError:
            raise SignInRefused("the ID token comes from another issuer", code="TokenIssuer") from None
        except jwt.ExpiredSignatureError:
            raise SignInRefused("the ID token has expired", code="TokenExpired") from None
        except jwt.InvalidSignatureError:
            raise SignInRefused("the ID token's signature is not Entra's", code="TokenSignature") from None
        except jwt.PyJWTError as exc:
            raise SignInRefused(f"the ID token is not valid ({type(exc).__name__})", code="TokenInvalid") from None
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInRefused("the ID token does not belong to this sign-in (nonce)", code="NonceMismatch")
        if not GUID.match(str(claims.get("oid", ""))):
            raise SignInRefused("the ID token names no Entra object id", code="TokenNoObjectId")
        return claims

    def metadata(self) -> dict[str, Any]:
        """The authority's OpenID configuration (issuer, jwks_uri), kept for an hour."""
        with self._lock:
            fresh = self._metadata and time.time() - self._fetched < METADATA_SECONDS
        if not fresh:
            document = self._get(f"{self.cfg.authority}/v2.0/.well-known/openid-configuration")
            if not isinstance(document.get("issuer"), str) or not isinstance(document.get("jwks_uri"), str):
                raise DownstreamError("the authority's OpenID configuration names no issuer or keys",
                                      code="SignInUnavailable")
            with self._lock:
                self._metadata, self._fetched, self._keys = document, time.time(), {}
        return self._metadata

    def _signing_key(self, kid: str):
        """The key ``kid`` from the JWKS; an unknown kid fetches the keys once more (Entra rolls its keys)."""
        import jwt

        for attempt in range(2):
            with self._lock:
                key = self._keys.get(kid)
            if key is not None:
                return key
            if attempt == 0:
                jwks = self._get(self.metadata()["jwks_uri"])
                keys = {}
                for jwk in jwks.get("keys") or []:
                    try:
                        keys[str(jwk.get("kid", ""))] = jwt.PyJWK(jwk, algorithm="RS256").key
                    except jwt.PyJWTError:
                        continue
                with self._lock:
                    self._keys = keys
        raise SignInRefused("the ID token is signed with a key the authority does not publish", code="TokenSignature")

    def _get(self, url: str) -> dict[str, Any]:
        import requests

        try:
            response = self.http.get(url)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise DownstreamError(f"Entra ID's sign-in metadata could not be read ({type(exc).__name__})",
                                  code="SignInUnavailable") from None
        if not isinstance(document, dict):
            raise DownstreamError("Entra ID's sign-in metadata is not a JSON object", code="SignInUnavailable")
        return document


_entra: dict[tuple[str, str], Entra] = {}
_entra_lock = threading.Lock()


def entra(cfg: Config, settings) -> Entra:
    """The process's Entra client for this authority and client id (MSAL's application is built once)."""
    with _entra_lock:
        found = _entra.get((cfg.authority, cfg.client_id))
        if found is None:
            from core.http import session_from_settings

            found = _entra[(cfg.authority, cfg.client_id)] = Entra(cfg, session_from_settings(settings))
        return found


# -- the three steps -----------------------------------------------------------------------------
def begin(settings, base_url: str, next_path: str, *, fresh_mfa: bool) -> tuple[str, str]:
    """The authorize URL to send the browser to, and the flow cookie's value."""
    cfg = config(settings)
    if fresh_mfa and not cfg.mfa_context:
        raise ConfigurationError("a fresh multi-factor sign-in needs SIGN_IN_MFA_AUTH_CONTEXT (a Conditional Access "
                                 "authentication context whose policy requires MFA every time; docs/deploy.md)")
    flow = entra(cfg, settings).start(base_url.rstrip("/") + CALLBACK_PATH, fresh_mfa=fresh_mfa)
    now = int(time.time())
    kept = {k: flow[k] for k in ("state", "redirect_uri", "scope", "code_verifier", "nonce", "claims_challenge")
            if k in flow}
    cookie = seal(cfg.key, "flow", {"flow": kept, "next": next_path, "mfa": fresh_mfa, "started": now,
                                    "exp": now + FLOW_SECONDS})
    return flow["auth_uri"], cookie


def complete(settings, headers: Mapping[str, str], response: dict[str, str], *, state_store,
             now: float | None = None) -> tuple[str, str]:
    """Check the callback against the flow cookie, redeem and verify; the session cookie's value and where to go."""
    cfg = config(settings)
    flow_cookie = unseal(cfg.key, "flow", cookie_of(headers, FLOW_COOKIE), now)
    if flow_cookie is None:
        raise SignInRefused("this sign-in did not start in this browser or took longer than 10 minutes; open the "
                            "link again", code="StateMissing")
    flow = flow_cookie.get("flow") or {}
    state = response.get("state", "")
    if not state or not hmac.compare_digest(state.encode(), str(flow.get("state", "")).encode()):
        raise SignInRefused("the sign-in answer does not belong to this sign-in (state)", code="StateMismatch")
    if response.get("error"):
        raise SignInRefused(f"Microsoft Entra ID did not sign you in ({str(response['error'])[:40]})",
                            code="SignInError")
    if not state_store.insert_if_absent(STATE_TABLE, {"PartitionKey": "state", "RowKey": _digest(state),
                                                      "usedAt": int(time.time())}):
        raise SignInRefused("this sign-in answer was already used; open the link again", status=409,
                            code="StateReplayed")
    claims = entra(cfg, settings).finish(dict(flow), response)
    acrs = tuple(str(a).lower() for a in claims.get("acrs") or () if isinstance(a, str))
    auth_time = int(claims.get("auth_time") or 0)
    if flow_cookie.get("mfa"):
        if cfg.mfa_context not in acrs:
            raise SignInRefused("the sign-in did not include the multi-factor check this answer needs (no "
                                f"authentication context {cfg.mfa_context})", status=403, code="NoFreshMfa")
        if auth_time < int(flow_cookie.get("started", 0)) - SKEW_SECONDS:
            raise SignInRefused("Microsoft Entra ID reused an earlier sign-in instead of a new one", status=403,
                                code="NoFreshMfa")
    issued = int(time.time() if now is None else now)
    session = {"sid": secrets.token_urlsafe(24), "oid": claims["oid"].lower(),
               "upn": str(claims.get("upn", "")), "name": str(claims.get("name", ""))[:200],
               "email": str(claims.get("email", "")), "tid": str(claims.get("tid", "")), "acrs": list(acrs),
               "auth_time": auth_time, "iat": int(claims.get("iat") or 0), "exp": issued + cfg.session_seconds}
    log.info("signed in: object id %s%s", session["oid"], " with a fresh multi-factor sign-in" if acrs else "")
    return seal(cfg.key, "session", session), str(flow_cookie.get("next") or "/api/health")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:48]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


__all__ = ["CALLBACK_PATH", "FLOW_COOKIE", "LOGIN_PATH", "LOGOUT_PATH", "SESSION_COOKIE", "Config", "Entra",
           "SignInRefused", "begin", "complete", "config", "cookie_of", "login_path", "own_path", "seal",
           "session_binding", "session_principal", "set_cookie", "unseal"]
