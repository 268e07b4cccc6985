"""App Service Authentication ("Easy Auth" v2) in front of the local host, as App Service runs it.

What is modelled (sources: learn.microsoft.com/azure/app-service/overview-authentication-authorization,
configure-authentication-customize-sign-in-out, configure-authentication-user-identities,
configure-authentication-provider-aad):
- ``unauthenticatedClientAction: AllowAnonymous``: requests without a session reach the app unchanged, so
  Logic App calls with function keys keep working; the app itself sends people to sign in;
- ``GET /.auth/login/aad?post_login_redirect_uri=/path``: redirects to the Entra authorize endpoint
  (``response_type=code id_token``, ``response_mode=form_post``, a nonce, ``scope=openid profile email``); the
  Entra page posts the ID token to ``/.auth/login/aad/callback``, which validates it (RS256 against the
  tenant's JWKS, issuer, audience = the app registration's client id, expiry, nonce), opens a session
  (cookie ``AppServiceAuthSession``, HttpOnly; 8 h like ``login.cookieExpiration``) and redirects to
  ``post_login_redirect_uri``, which must be a relative path (external URLs only when allowed, as
  ``allowedExternalRedirectUrls`` says; none are allowed here);
- on every later request of that session: ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON ``auth_typ``, ``name_typ``,
  ``role_typ``, ``claims[]`` after the default claim-type mapping), ``X-MS-CLIENT-PRINCIPAL-ID`` / ``-NAME`` /
  ``-IDP`` and ``X-MS-TOKEN-AAD-ID-TOKEN`` are injected, and **any client-supplied copy of those headers is
  stripped** first ("External requests aren't allowed to set these headers");
- ``GET /.auth/me`` (the session's claims, 401 without one) and ``GET /.auth/logout``.
The function app sees ``WEBSITE_AUTH_ENABLED=True``, as App Service sets it when authentication is on.
Locally the cookie is not ``Secure`` (plain-http loopback); App Service's is.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

log = logging.getLogger(__name__)

SESSION_COOKIE = "AppServiceAuthSession"
NONCE_COOKIE = "Nonce"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 600
INJECTED_PREFIXES = ("x-ms-client-principal", "x-ms-token-")
# The default inbound claim-type mapping App Service applies before it writes the principal header.
CLAIM_TYPES = {
    "oid": "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "tid": "http://schemas.microsoft.com/identity/claims/tenantid",
    "upn": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "sub": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
    "amr": "http://schemas.microsoft.com/claims/authnmethodsreferences",
    "unique_name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
}
NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Session:
    claims: dict[str, Any]
    id_token: str
    expires: float


def principal_header(claims: dict[str, Any]) -> str:
    """The X-MS-CLIENT-PRINCIPAL value App Service would write for these ID token claims."""
    pairs: list[dict[str, str]] = []
    for name, value in claims.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append({"typ": CLAIM_TYPES.get(name, name), "val": str(item)})
    document = {"auth_typ": "aad", "claims": pairs, "name_typ": NAME_TYPE, "role_typ": ROLE_TYPE}
    return base64.b64encode(json.dumps(document).encode()).decode()


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    raw = next((v for k, v in headers.items() if k.lower() == "cookie"), "")
    return {name.strip(): value for name, _, value in (part.partition("=") for part in raw.split(";")) if name.strip()}


class EasyAuth:
    """The emulation, one per host: sessions in memory, keys from the authority's JWKS."""

    def __init__(self, authority: str, client_id: str, issuer: str | None = None) -> None:
        self.authority = authority.rstrip("/")  # https://login.microsoftonline.com/{tenant} (here: the emulator)
        self.client_id = client_id
        self.issuer = issuer
        self._sessions: dict[str, _Session] = {}
        self._logins: dict[str, tuple[str, str, float]] = {}  # state -> (nonce, redirect, started)
        self._lock = threading.Lock()
        self._jwks: Any = None

    # -- inbound requests -----------------------------------------------------------------------
    def inbound(self, headers: dict[str, str]) -> dict[str, str]:
        """The headers the app sees: client copies of the injected headers dropped, the session's added."""
        clean = {k: v for k, v in headers.items() if not k.lower().startswith(INJECTED_PREFIXES)}
        session = self._session(_cookies(headers).get(SESSION_COOKIE, ""))
        if session is not None:
            claims = session.claims
            clean.update({"X-MS-CLIENT-PRINCIPAL": principal_header(claims),
                          "X-MS-CLIENT-PRINCIPAL-ID": str(claims.get("oid", "")),
                          "X-MS-CLIENT-PRINCIPAL-NAME": str(claims.get("upn") or claims.get("email") or ""),
                          "X-MS-CLIENT-PRINCIPAL-IDP": "aad", "X-MS-TOKEN-AAD-ID-TOKEN": session.id_token})
        return clean

    def _session(self, cookie: str) -> _Session | None:
        if not cookie:
            return None
        with self._lock:
            session = self._sessions.get(cookie)
            if session is not None and session.expires < time.time():
                del self._sessions[cookie]
                return None
            return session

    # -- /.auth/* -------------------------------------------------------------------------------
    def serve(self, method: str, path: str, query: str, body: bytes, headers: dict[str, str], origin: str) -> Answer:
        params = dict(parse_qsl(query, keep_blank_values=True))
        route = path.rstrip("/").lower()
        if route == "/.auth/login/aad" and method in ("GET", "HEAD"):
            return self._login(params, origin)
        if route == "/.auth/login/aad/callback" and method == "POST":
            return self._callback(dict(parse_qsl(body.decode("utf-8", "replace"))), headers)
        if route == "/.auth/me" and method == "GET":
            return self._me(headers)
        if route == "/.auth/logout" and method in ("GET", "POST"):
            return self._logout(params, headers)
        return Answer(404, {"Content-Type": "text/plain"}, b"Not found")

    def _login(self, params: dict[str, str], origin: str) -> Answer:
        redirect = params.get("post_login_redirect_uri") or "/"
        if not redirect.startswith("/") or redirect.startswith("//") or "\\" in redirect:
            return Answer(403, {"Content-Type": "text/plain"},
                          b"post_login_redirect_uri must be a relative path (no allowedExternalRedirectUrls)")
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        with self._lock:
            self._logins[state] = (nonce, redirect, time.time())
        target = f"{self.authority}/oauth2/v2.0/authorize?" + urlencode({
            "client_id": self.client_id, "redirect_uri": f"{origin}/.auth/login/aad/callback",
            "response_type": "code id_token", "response_mode": "form_post", "scope": "openid profile email",
            "nonce": nonce, "state": state})
        return Answer(302, {"Location": target,
                            "Set-Cookie": f"{NONCE_COOKIE}={state}; Path=/.auth; HttpOnly; SameSite=Lax; "
                                          f"Max-Age={LOGIN_SECONDS}"})

    def _callback(self, form: dict[str, str], headers: dict[str, str]) -> Answer:
        state = form.get("state", "")
        with self._lock:
            login = self._logins.pop(state, None)
        if login is None or _cookies(headers).get(NONCE_COOKIE) != state or time.time() - login[2] > LOGIN_SECONDS:
            return Answer(401, {"Content-Type": "text/plain"}, b"sign-in state is missing, reused or expired")
        nonce, redirect, _ = login
        try:
            claims = self._validate(form.get("id_token", ""), nonce)
        except Exception as exc:  # any validation failure: no session
            log.warning("easy auth: ID token refused: %s", type(exc).__name__)
            return Answer(401, {"Content-Type": "text/plain"}, b"the ID token is not valid")
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = _Session(claims, form["id_token"], time.time() + SESSION_SECONDS)
        return Answer(302, {"Location": redirect,
                            "Set-Cookie": f"{SESSION_COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Lax; "
                                          f"Max-Age={SESSION_SECONDS}"})

    def _validate(self, token: str, nonce: str) -> dict[str, Any]:
        import jwt

        if self._jwks is None:
            self._jwks = jwt.PyJWKClient(f"{self.authority}/discovery/v2.0/keys", cache_keys=True)
        key = self._jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=self.client_id,
                            issuer=self.issuer, options={"require": ["exp", "iat", "aud", "iss", "oid"],
                                                         "verify_iss": self.issuer is not None})
        if claims.get("nonce") != nonce:
            raise ValueError("nonce mismatch")
        return claims

    def _me(self, headers: dict[str, str]) -> Answer:
        session = self._session(_cookies(headers).get(SESSION_COOKIE, ""))
        if session is None:
            return Answer(401, {"Content-Type": "text/plain"}, b"")
        claims = session.claims
        pairs = [{"typ": CLAIM_TYPES.get(k, k), "val": str(i)} for k, v in claims.items()
                 for i in (v if isinstance(v, list) else [v])]
        body = [{"id_token": session.id_token, "provider_name": "aad", "user_id": claims.get("upn", ""),
                 "user_claims": pairs, "expires_on": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.expires))}]
        return Answer(200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(body).encode())

    def _logout(self, params: dict[str, str], headers: dict[str, str]) -> Answer:
        cookie = _cookies(headers).get(SESSION_COOKIE, "")
        with self._lock:
            self._sessions.pop(cookie, None)
        target = params.get("post_logout_redirect_uri") or "/"
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        return Answer(302, {"Location": target,
                            "Set-Cookie": f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"})


# -- signing in from Python, the way a browser does ------------------------------------------------------------
def sign_in(http, host_url: str, upn: str, password: str, *, mfa_code: str | None = None,
            next_path: str = "/") -> Any:
    """Walk ``/.auth/login/aad`` -> the Entra sign-in page -> the form_post back, with a requests Session;
    returns the last response (the page ``next_path`` after sign-in). The session keeps the cookie."""
    import re

    start = http.get(f"{host_url}/.auth/login/aad", params={"post_login_redirect_uri": next_path},
                     allow_redirects=True, timeout=30)
    start.raise_for_status()
    authorize = start.url
    form = {"login": upn, "password": password, "otp": mfa_code or ""}
    form.update(dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', start.text)))
    posted = http.post(authorize, data=_unescape(form), timeout=30)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', posted.text))
    action = re.search(r'<form id="f" method="post" action="([^"]+)"', posted.text)
    if action is None or "id_token" not in fields:
        why = re.search(r'class="error">([^<]+)<', posted.text) or re.search(r"<p>([^<]+)</p>", posted.text)
        raise PermissionError(f"sign-in as {upn} failed: {why[1] if why else posted.status_code}")
    return http.post(_unescape({"a": action[1]})["a"], data=_unescape(fields), allow_redirects=True, timeout=30)


def sign_in_app(http, host_url: str, upn: str, password: str, *, mfa_code: str | None = None,
                fresh_mfa: bool = False, next_path: str = "/api/health") -> Any:
    """Walk the app's own sign-in (``SIGN_IN_MODE=app``) as a browser does: ``/api/auth/login`` -> the Entra
    sign-in page (https; the session trusts the loopback authority) -> back to ``/api/auth/callback`` -> the page
    ``next_path``. ``fresh_mfa`` asks for a new multi-factor sign-in (the step-up "Yes, it was me" needs). Returns
    the last response; the requests Session keeps the cookies (the app's session, Entra's single sign-on)."""
    import html
    import re

    from localdev.emulators.tls import certificate_files

    # Per request: a REQUESTS_CA_BUNDLE in the environment would win over a Session's own ``verify``.
    verify = str(certificate_files().bundle_file)
    params = {"redirect": next_path, **({"mfa": "1"} if fresh_mfa else {})}
    start = http.get(f"{host_url}/api/auth/login", params=params, allow_redirects=True, timeout=30, verify=verify)
    if "/oauth2/v2.0/authorize" not in start.url:
        return start  # single sign-on answered without a prompt, or the app refused (its page says why)
    form = {**hidden_fields(start.text), "login": upn, "password": password, "otp": mfa_code or ""}
    landed = http.post(start.url, data=form, allow_redirects=True, timeout=30, verify=verify)
    if "/oauth2/v2.0/authorize" in landed.url:
        why = re.search(r'class="error">([^<]+)<', landed.text) or re.search(r"<p>([^<]+)</p>", landed.text)
        raise PermissionError(f"sign-in as {upn} failed: {html.unescape(why[1]) if why else landed.status_code}")
    return landed


def hidden_fields(page_html: str) -> dict[str, str]:
    """The hidden inputs of a page's form (the anti-CSRF token), unescaped."""
    import re

    return _unescape(dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page_html)))


def press(http, link: str, name: str, value: str) -> Any:
    """What a browser does on one of the pack's pages: open it and press the button ``name=value`` (a same-origin
    form POST carrying the page's hidden fields and the browser's Origin header)."""
    from urllib.parse import urlsplit

    page = http.get(link, timeout=30)
    if page.status_code != 200:
        return page
    parts = urlsplit(link)
    return http.post(link, data={**hidden_fields(page.text), name: value},
                     headers={"Origin": f"{parts.scheme}://{parts.netloc}"}, timeout=30)


def _unescape(values: dict[str, str]) -> dict[str, str]:
    import html

    return {k: html.unescape(v) for k, v in values.items()}


__all__ = ["EasyAuth", "hidden_fields", "press", "principal_header", "sign_in", "sign_in_app"]
