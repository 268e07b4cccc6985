"""Who is signed in: the principal App Service Authentication ("Easy Auth") hands the app.

App Service Authentication signs people in with Entra ID in front of the app and injects, on every request
of a signed-in browser session, ``X-MS-CLIENT-PRINCIPAL``: base64 of a JSON object
``{"auth_typ": "aad", "name_typ": ..., "role_typ": ..., "claims": [{"typ": ..., "val": ...}]}``; the claim
types went through the default claims mapping, so the object id arrives as
``http://schemas.microsoft.com/identity/claims/objectidentifier`` rather than ``oid`` (both are read).
Source: learn.microsoft.com/azure/app-service/configure-authentication-user-identities ("Decode the
client principal header"); "External requests aren't allowed to set these headers, so they're present only
if set by App Service." ``amr`` is in v1.0 ID tokens only (the v1.0 sample of learn.microsoft.com/entra/
identity-platform/id-tokens carries it, the v2.0 one does not), and ``iat`` "indicates when the authentication
for this token occurred" (same page).

That last sentence is the whole trust: the header is believed only when App Service says Easy Auth runs
in front of the app (``WEBSITE_AUTH_ENABLED=True``, an environment variable the platform sets; the local
host sets it when it emulates Easy Auth, and strips client copies as App Service does). Otherwise the
header is ignored and pages that need a person refuse to work (ConfigurationError), rather than trusting a
value any client can send.

Sign-in: ``/.auth/login/aad?post_login_redirect_uri=<relative path>`` (learn.microsoft.com/azure/
app-service/configure-authentication-customize-sign-in-out). MFA freshness reads the ``amr`` claim (values
per RFC 8176; Entra emits it in v1.0 tokens, so the Easy Auth issuer is the v1 one, see docs/deploy.md) and
the token's ``iat``.
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

from core.errors import Unauthorized

HEADER = "X-MS-CLIENT-PRINCIPAL"
SESSION_COOKIE = "AppServiceAuthSession"
LOGIN_PATH = "/.auth/login/aad"
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

    @property
    def label(self) -> str:
        """``Alice Example (alice@contoso.com, object id 1234…)``: how audit comments name a person."""
        who = self.upn or self.email or self.object_id
        return f"{self.name} ({who}, object id {self.object_id})" if self.name else \
            f"{who} (object id {self.object_id})"

    def identifiers(self) -> set[str]:
        """Every value an APPROVERS entry or a link may name this person by (lower case)."""
        return {v.lower() for v in (self.object_id, self.upn, self.email) if v}

    def fresh_mfa(self, max_age_seconds: int, now: float) -> bool:
        """A multi-factor sign-in at most ``max_age_seconds`` old (``amr`` holds ``mfa``; ``iat`` is recent)."""
        return "mfa" in self.amr and self.issued_at > 0 and 0 <= now - self.issued_at <= max_age_seconds


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


def signed_in(headers: Mapping[str, str], env: Mapping[str, str] | None = None) -> Principal | None:
    """The signed-in person, None when nobody is signed in; the header counts only behind Easy Auth."""
    if not easy_auth_enabled(env):
        return None
    value = _header(headers, HEADER)
    if value is None or not value.strip():
        return None
    return decode(value)


def session_of(headers: Mapping[str, str]) -> str:
    """The sign-in session cookie's value ("" without one): form tokens are bound to it."""
    cookies = _header(headers, "Cookie") or ""
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return ""


def login_url(path_and_query: str) -> str:
    """Where to send a browser that is not signed in; back to the same page afterwards (a relative path)."""
    target = path_and_query if path_and_query.startswith("/") and not path_and_query.startswith("//") else "/"
    return f"{LOGIN_PATH}?post_login_redirect_uri={quote(target, safe='')}"


__all__ = ["HEADER", "LOGIN_PATH", "SESSION_COOKIE", "Principal", "decode", "easy_auth_enabled", "login_url",
           "session_of", "signed_in"]
