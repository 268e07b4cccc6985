"""Who is signed in: one interface for the pages that need a person, whichever sign-in is configured.

``SIGN_IN_MODE`` picks the source of the principal; the decision code (approvals, the user's own answer) only
ever calls ``signed_in``, ``session_of``, ``login_url`` and ``sign_in_ready`` and does not care which:

- ``app`` (the default, what Flex Consumption needs): the app signs people in itself (OpenID Connect with MSAL,
  core/signin.py) and the principal comes from its signed session cookie. ``X-MS-CLIENT-PRINCIPAL`` is never
  read in this mode, whatever ``WEBSITE_AUTH_ENABLED`` says: on Flex Consumption Microsoft did not document that
  App Service Authentication strips client copies of that header (docs/deploy.md, "Sign-in"), so a header there
  is whatever the caller sent.
- ``easyauth`` (plans where App Service Authentication is supported): App Service signs people in in front of the
  app and injects, on every request of a signed-in browser session, ``X-MS-CLIENT-PRINCIPAL``: base64 of a JSON
  object ``{"auth_typ": "aad", "name_typ": ..., "role_typ": ..., "claims": [{"typ": ..., "val": ...}]}``; the
  claim types went through the default claims mapping, so the object id arrives as
  ``http://schemas.microsoft.com/identity/claims/objectidentifier`` rather than ``oid`` (both are read).
  Source: learn.microsoft.com/azure/app-service/configure-authentication-user-identities ("Decode the client
  principal header"); "External requests aren't allowed to set these headers, so they're present only if set by
  App Service." That sentence is the whole trust: the header is believed only when App Service says Easy Auth
  runs in front of the app (``WEBSITE_AUTH_ENABLED=True``, set by the platform; the local host sets it when it
  emulates Easy Auth, and strips client copies as App Service does). Otherwise pages that need a person refuse
  to work (ConfigurationError) rather than trust a value any client can send. Sign-in:
  ``/.auth/login/aad?post_login_redirect_uri=<relative path>`` (configure-authentication-customize-sign-in-out).

Multi-factor freshness ("Yes, it was me"): ``amr`` holds ``mfa`` (v1.0 ID tokens, the Easy Auth mode; RFC 8176
values; v2.0 tokens carry no ``amr``) or ``acrs`` holds the configured Conditional Access authentication context
(the app mode's step-up, core/signin.py); the sign-in time is ``auth_time`` when the token has it, else ``iat``,
which "indicates when the authentication for this token occurred" (learn.microsoft.com/entra/identity-platform/
id-token-claims-reference).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from core.errors import ConfigurationError, Unauthorized

HEADER = "X-MS-CLIENT-PRINCIPAL"
SESSION_COOKIE = "AppServiceAuthSession"
LOGIN_PATH = "/.auth/login/aad"
MODES = ("app", "easyauth")
DEFAULT_MODE = "app"
CLOCK_SKEW_SECONDS = 30  # a sign-in time this far ahead of our clock still counts (Entra's clock and ours)
MAX_HEADER = 16 * 1024
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

# Claim types, short (as in the token) and as App Service's default claims mapping names them.
OID = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
TID = ("tid", "http://schemas.microsoft.com/identity/claims/tenantid")
UPN = ("upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "preferred_username")
EMAIL = ("email", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress")
NAME = ("name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
AMR = ("amr", "http://schemas.microsoft.com/claims/authnmethodsreferences")
IAT = ("iat",)


@dataclass(frozen=True)
class Principal:
    """A signed-in person, as far as the pages need one."""

    object_id: str
    upn: str
    name: str
    email: str = ""
    tenant_id: str = ""
    amr: tuple[str, ...] = ()
    issued_at: int = 0  # when Entra issued the sign-in's token (epoch seconds)
    claims: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    auth_time: int = 0  # when the person authenticated (``auth_time``), when the token says so
    acrs: tuple[str, ...] = ()  # Conditional Access authentication contexts the sign-in satisfied

    @property
    def label(self) -> str:
        """``Alice Example (alice@contoso.com, object id 1234…)``: how audit comments name a person."""
        who = self.upn or self.email or self.object_id
        return f"{self.name} ({who}, object id {self.object_id})" if self.name else \
            f"{who} (object id {self.object_id})"

    def identifiers(self) -> set[str]:
        """Every value an APPROVERS entry or a link may name this person by (lower case)."""
        return {v.lower() for v in (self.object_id, self.upn, self.email) if v}

    def fresh_mfa(self, max_age_seconds: int, now: float, auth_context: str = "") -> bool:
        """A multi-factor sign-in at most ``max_age_seconds`` old: ``amr`` holds ``mfa``, or ``acrs`` holds
        ``auth_context`` (whose Conditional Access policy requires MFA); ``auth_time`` (else ``iat``) is recent."""
        multi_factor = "mfa" in self.amr or bool(auth_context and auth_context.lower() in self.acrs)
        when = self.auth_time or self.issued_at
        return multi_factor and when > 0 and -CLOCK_SKEW_SECONDS <= now - when <= max_age_seconds


def sign_in_mode(env: Mapping[str, str] | None = None) -> str:
    """``app`` or ``easyauth`` (``SIGN_IN_MODE``); anything else is a ConfigurationError, never a guess."""
    env = os.environ if env is None else env
    mode = str(env.get("SIGN_IN_MODE") or DEFAULT_MODE).strip().lower()
    if mode not in MODES:
        raise ConfigurationError("setting SIGN_IN_MODE must be app or easyauth")
    return mode


def easy_auth_enabled(env: Mapping[str, str] | None = None) -> bool:
    """App Service sets WEBSITE_AUTH_ENABLED=True when App Service Authentication is on for the app."""
    env = os.environ if env is None else env
    return str(env.get("WEBSITE_AUTH_ENABLED", "")).strip().lower() == "true"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def decode(value: str) -> Principal:
    """Decode and validate the header's value; Unauthorized (401) when it is garbled or names nobody."""
    if len(value) > MAX_HEADER:
        raise Unauthorized("the sign-in principal header is too large", code="PrincipalMalformed")
    try:
        data = json.loads(base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise Unauthorized("the sign-in principal header is not base64 JSON", code="PrincipalMalformed") from None
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list) or not all(isinstance(c, dict) and isinstance(c.get("typ"), str)
                                               and isinstance(c.get("val"), str) for c in claims):
        raise Unauthorized("the sign-in principal header has no valid claims list", code="PrincipalMalformed")
    if str(data.get("auth_typ", "")).lower() != "aad":
        raise Unauthorized("the sign-in principal was not signed in with Microsoft Entra ID",
                           code="PrincipalNotEntra")
    pairs = tuple((c["typ"], c["val"]) for c in claims)

    def first(types: tuple[str, ...]) -> str:  # in the order of ``types``: upn before preferred_username
        return next((val.strip() for wanted in types for typ, val in pairs if typ == wanted and val.strip()), "")

    object_id = first(OID).lower()
    if not GUID.match(object_id):
        raise Unauthorized("the sign-in principal carries no Entra object id", code="PrincipalMalformed")
    try:
        issued_at = int(first(IAT) or 0)
    except ValueError:
        issued_at = 0
    return Principal(object_id=object_id, upn=first(UPN).lower(), name=first(NAME)[:200], email=first(EMAIL).lower(),
                     tenant_id=first(TID).lower(), amr=tuple(val.lower() for typ, val in pairs if typ in AMR),
                     issued_at=issued_at, claims=pairs)


def _settings(env: Mapping[str, str] | None):
    from core.settings import Settings, get_settings

    return get_settings() if env is None else Settings.from_env(env)


def signed_in(headers: Mapping[str, str], env: Mapping[str, str] | None = None) -> Principal | None:
    """The signed-in person, None when nobody is signed in. ``easyauth``: the header, only behind Easy Auth;
    ``app``: the app's own session cookie (the header is ignored)."""
    if sign_in_mode(env) == "app":
        from core.signin import session_principal

        return session_principal(headers, _settings(env))
    if not easy_auth_enabled(env):
        return None
    value = _header(headers, HEADER)
    if value is None or not value.strip():
        return None
    return decode(value)


def session_of(headers: Mapping[str, str], env: Mapping[str, str] | None = None) -> str:
    """What form tokens are bound to: the sign-in session (its cookie's value, or the app session's id)."""
    if sign_in_mode(env) == "app":
        from core.signin import session_binding

        return session_binding(headers, _settings(env))
    cookies = _header(headers, "Cookie") or ""
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return ""


def login_url(path_and_query: str, env: Mapping[str, str] | None = None, *, fresh_mfa: bool = False) -> str:
    """Where to send a browser that is not signed in (or needs a new multi-factor sign-in); back to the same page
    afterwards (a relative path)."""
    if sign_in_mode(env) == "app":
        from core.signin import login_path

        return login_path(path_and_query, fresh_mfa=fresh_mfa)
    target = path_and_query if path_and_query.startswith("/") and not path_and_query.startswith("//") else "/"
    return f"{LOGIN_PATH}?post_login_redirect_uri={quote(target, safe='')}"


def sign_in_ready(env: Mapping[str, str] | None = None) -> None:
    """Refuse (ConfigurationError) where the configured sign-in cannot work, rather than trust anything else."""
    if sign_in_mode(env) == "app":
        from core.signin import config

        config(_settings(env))
        return
    if not easy_auth_enabled(env):
        raise ConfigurationError("SIGN_IN_MODE=easyauth needs App Service Authentication (Easy Auth) in front of the "
                                 "app: WEBSITE_AUTH_ENABLED is not True (see docs/deploy.md, sign-in)")


__all__ = ["DEFAULT_MODE", "HEADER", "LOGIN_PATH", "MODES", "SESSION_COOKIE", "Principal", "decode",
           "easy_auth_enabled", "login_url", "session_of", "sign_in_mode", "sign_in_ready", "signed_in"]
