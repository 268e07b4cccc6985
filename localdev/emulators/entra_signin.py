"""Entra ID sign-in on loopback: the OpenID Connect endpoints people sign in through (installed on the Entra
emulator, ``localdev/emulators/entra.py``). Every modelled behaviour and its source: docs/emulators.md, Entra ID.

Two flows, as Microsoft's identity platform offers them (learn.microsoft.com/entra/identity-platform/
v2-oauth2-auth-code-flow, v2-protocols-oidc):

- **authorization code + PKCE** (what the app's own sign-in uses, through MSAL): ``GET /{tenant}/oauth2/v2.0/
  authorize?response_type=code&code_challenge=...&code_challenge_method=S256`` shows the sign-in; after it the
  browser is redirected to ``redirect_uri?code=&state=`` (``response_mode=query``, the default for a code; also
  ``form_post``). ``POST /{tenant}/oauth2/v2.0/token`` redeems the code once, within 10 minutes, only with the
  same ``redirect_uri``, the PKCE ``code_verifier`` and a client credential; this app registration has no secret,
  its credential is a **managed identity token as client assertion** (a federated identity credential: issuer,
  subject and audience ``api://AzureADTokenExchange`` must match, learn.microsoft.com/entra/workload-id/
  workload-identity-federation-config-app-trust-managed-identity). The answer carries a **v2.0 ID token**: no
  ``amr`` (v1.0 tokens only), ``auth_time``/``upn``/``email`` only as optional claims of the registration, and
  ``acrs`` when the request's ``claims`` parameter asked for a Conditional Access authentication context that the
  sign-in satisfied.
- **hybrid** ``response_type=code id_token`` with ``response_mode=form_post`` (what App Service Authentication
  uses; the local host's emulation of it, localdev/easyauth.py): the ID token is posted straight back, in the
  v1.0 shape that carries ``amr``.

Conditional Access, as far as sign-in freshness needs it: an **authentication context** (``c1``..``c99``) whose
policy requires multi-factor authentication and, with sign-in frequency "every time", a new interactive sign-in
(learn.microsoft.com/entra/identity-platform/developer-guide-conditional-access-authentication-context; Graph
``signInFrequencySessionControl``: ``everyTime`` applies to authentication contexts). Single sign-on: a sign-in
leaves a session cookie at the emulator (``ESTSAUTH``, https only); a later authorize request is answered from it
without a prompt unless ``prompt=login`` ("forces the user to enter their credentials on that request, negating
single-sign on") or a requested context needs a new sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from localdev.emulators.base import Request, Response
from localdev.emulators.tls import TlsFront

TENANT = "c0ffee00-1234-4abc-8def-0123456789ab"  # the aadTenantId of the sample incidents
ID_TOKEN_SECONDS = 3600
CODE_SECONDS = 600  # "Authorization codes are short lived. Typically, they expire after about 10 minutes."
SSO_SECONDS = 24 * 3600
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SSO_COOKIE = "ESTSAUTH"
AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "response_type", "response_mode", "scope", "nonce", "state",
                    "prompt", "login_hint", "code_challenge", "code_challenge_method", "claims")
ERROR_STATUS = {"invalid_client": 401}


@dataclass
class App:
    """An app registration, as far as sign-in needs it."""

    client_id: str
    redirect_uris: tuple[str, ...]
    federated: tuple[tuple[str, str], ...] = ()  # federated identity credentials: (issuer, subject), exchange audience
    implicit_id_tokens: bool = True  # web.implicitGrantSettings.enableIdTokenIssuance
    optional_claims: tuple[str, ...] = ()  # optionalClaims.idToken names: auth_time, upn, email


@dataclass(frozen=True)
class AuthContext:
    """A Conditional Access authentication context and what its policy demands."""

    mfa: bool = True
    every_time: bool = True  # session control: sign-in frequency "every time"


@dataclass
class SsoSession:
    user_id: str
    auth_time: int
    mfa: bool
    contexts: frozenset[str]
    expires: float


@dataclass
class Grant:
    """An authorization code and what it was issued for."""

    client_id: str
    redirect_uri: str
    user_id: str
    scope: str
    nonce: str
    auth_time: int
    acrs: tuple[str, ...]
    sid: str
    code_challenge: str = ""
    code_challenge_method: str = ""
    claims_auth_time: bool = False
    issued: float = field(default_factory=time.time)
    used: bool = False


@dataclass
class Tamper:
    """A test control: the next ID tokens of the token endpoint are changed (claims) or signed with another key."""

    claims: dict[str, Any]
    foreign_key: bool
    times: int


class SignInError(Exception):
    """An OAuth error answer of the token endpoint (JSON), or of the authorize endpoint (an error page)."""

    def __init__(self, error: str, code: int, text: str) -> None:
        super().__init__(f"AADSTS{code}: {text}")
        self.error, self.code, self.text = error, code, text

    def response(self) -> Response:
        now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        trace, correlation = _guid(), _guid()
        body = {"error": self.error, "error_description": f"AADSTS{self.code}: {self.text}\r\nTrace ID: {trace}\r\n"
                                                          f"Correlation ID: {correlation}\r\nTimestamp: {now}",
                "error_codes": [self.code], "timestamp": now, "trace_id": trace, "correlation_id": correlation,
                "error_uri": f"https://login.microsoftonline.com/error?code={self.code}"}
        return Response(ERROR_STATUS.get(self.error, 400), body)


class SignIn:
    """The sign-in endpoints, installed on an EntraEmulator (``emulator.sign_in``)."""

    def __init__(self, emulator, tenant: str = TENANT) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.emulator = emulator
        self.tenant = tenant
        self.directory: Any = None  # set by the stack: the Graph emulator (users, passwords, MFA codes)
        self.apps: dict[str, App] = {}
        self.contexts: dict[str, AuthContext] = {}  # Conditional Access authentication contexts of the tenant
        self.signins: list[dict] = []  # what was signed in (upn, amr), for assertions
        self.redemptions: list[dict] = []  # codes redeemed: client, user, acrs
        self.tls = TlsFront(emulator)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        self._grants: dict[str, Grant] = {}
        self._sessions: dict[str, SsoSession] = {}
        self._tampers: list[Tamper] = []
        self.code_seconds = CODE_SECONDS
        self._lock = threading.Lock()
        base = rf"/{re.escape(tenant)}"
        emulator.route("GET", base + r"/discovery/v2\.0/keys", self._keys)
        emulator.route("GET", base + r"/v2\.0/\.well-known/openid-configuration", self._configuration)
        emulator.route("GET", base + r"/oauth2/v2\.0/authorize", self._authorize)
        emulator.route("POST", base + r"/oauth2/v2\.0/authorize", self._submit)
        emulator.route("POST", base + r"/oauth2/v2\.0/token", self._token)
        emulator.route("GET", base + r"/oauth2/v2\.0/logout", self._logout)

    # -- addresses ------------------------------------------------------------------------------
    @property
    def authority(self) -> str:
        """Plain-http authority (the Easy Auth emulation's hybrid flow)."""
        return f"{self.emulator.url}/{self.tenant}"

    @property
    def https_authority(self) -> str:
        """The https authority MSAL accepts: ``https://127.0.0.1:<port>/<tenant>``."""
        return f"{self.tls.url}/{self.tenant}"

    @property
    def issuer(self) -> str:
        """Issuer of the v1.0 ID tokens of the hybrid flow."""
        return f"https://sts.windows.net/{self.tenant}/"

    @property
    def issuer_v2(self) -> str:
        """Issuer of v2.0 tokens: ``{authority}/v2.0`` (https://login.microsoftonline.com/{tenant}/v2.0 in Entra)."""
        return f"{self.https_authority}/v2.0"

    @property
    def ca_bundle(self) -> str:
        """A CA bundle (certifi's plus the loopback authority) that trusts the https authority."""
        return str(self.tls.files.bundle_file)

    def register_app(self, client_id: str, *redirect_uris: str, federated: tuple[tuple[str, str], ...] = (),
                     implicit_id_tokens: bool = True, optional_claims: tuple[str, ...] = ()) -> None:
        self.apps[client_id] = App(client_id, tuple(redirect_uris), tuple(federated), implicit_id_tokens,
                                   tuple(optional_claims))

    def define_context(self, context_id: str, *, mfa: bool = True, every_time: bool = True) -> None:
        """Publish a Conditional Access authentication context (``c1``) with its policy."""
        self.contexts[context_id.lower()] = AuthContext(mfa, every_time)

    def tamper_id_tokens(self, *, times: int = 1, foreign_key: bool = False, **claims: Any) -> None:
        """Test control, like ``fail``: the next ``times`` v2.0 ID tokens carry ``claims`` (``nonce="x"``,
        ``aud=...``, ``iss=...``, ``exp=...``) or are signed with a key the JWKS does not publish (same ``kid``)."""
        with self._lock:
            self._tampers.append(Tamper(dict(claims), foreign_key, times))

    def reset(self) -> None:
        with self._lock:
            self._grants.clear()
            self._sessions.clear()
            self._tampers.clear()
        self.code_seconds = CODE_SECONDS
        self.signins.clear()
        self.redemptions.clear()

    # -- tokens of managed identities for the exchange audience ------------------------------------
    def exchange_token(self, principal_id: str, client_id: str, lifetime: int) -> str:
        """A managed identity token for ``api://AzureADTokenExchange``: a JWT naming the identity (``sub``)."""
        import jwt

        now = int(time.time())
        claims = {"aud": EXCHANGE_AUDIENCE, "iss": self.issuer_v2, "iat": now, "nbf": now, "exp": now + lifetime,
                  "sub": principal_id, "oid": principal_id, "azp": client_id, "tid": self.tenant, "ver": "2.0",
                  "idtyp": "app"}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    # -- endpoints ------------------------------------------------------------------------------
    def _keys(self, req: Request) -> Response:
        numbers = self._key.public_key().public_numbers()

        def b64(value: int) -> str:
            return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return Response(200, {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "alg": "RS256",
                                        "n": b64(numbers.n), "e": b64(numbers.e)}]})

    def _configuration(self, req: Request) -> Response:
        base = self.https_authority
        return Response(200, {
            "issuer": self.issuer_v2, "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token", "jwks_uri": f"{base}/discovery/v2.0/keys",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout", "response_modes_supported": ["query", "fragment",
                                                                                               "form_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"], "tenant_region_scope": "EU",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                                 "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "cloud_instance_name": "microsoftonline.com", "request_uri_parameter_supported": False})

    def _authorize(self, req: Request) -> Response:
        params = {k: req.query.get(k, "") for k in AUTHORIZE_PARAMS}
        try:
            self._check_request(params)
        except SignInError as error:
            return _page(400, "Sign in", f"<p>{html.escape(str(error))}</p>")
        session = self._sso(req)
        if session is not None and params["prompt"] != "login" and self._silent(session, params):
            return self._respond(params, session)
        return _page(200, "Sign in to your account", _form(params))

    def _submit(self, req: Request) -> Response:
        form = dict(parse_qsl(req.text))
        params = {k: form.get(k, "") for k in AUTHORIZE_PARAMS}
        try:
            self._check_request(params)
        except SignInError as error:
            return _page(400, "Sign in", f"<p>{html.escape(str(error))}</p>")
        user = self.directory.authenticate(form.get("login", ""), form.get("password", "")) if self.directory else None
        if user is None:
            return _retry(params, "AADSTS50126: Error validating credentials due to invalid username or password.")
        if not user.get("accountEnabled", True):
            return _retry(params, "AADSTS50057: The user account is disabled.")
        mfa = bool(form.get("otp")) and self.directory.verify_otp(user["id"], form["otp"])
        wanted = self._requested_contexts(params)
        if not mfa and any(self.contexts[c].mfa for c in wanted):
            return _retry(params, "AADSTS50076: Due to a configuration change made by your administrator, or because "
                                  "you moved to a new location, you must use multi-factor authentication to access "
                                  "this resource.")
        session = SsoSession(user["id"], int(time.time()), mfa, frozenset(wanted), time.time() + SSO_SECONDS)
        sid = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[sid] = session
        self.signins.append({"upn": user["userPrincipalName"], "amr": ["pwd"] + (["mfa"] if mfa else [])})
        answer = self._respond(params, session)
        answer.headers["Set-Cookie"] = (f"{SSO_COOKIE}={sid}; Path=/{self.tenant}/; Secure; HttpOnly; SameSite=None; "
                                        f"Max-Age={SSO_SECONDS}")
        return answer

    def _logout(self, req: Request) -> Response:
        sid = _cookies(req).get(SSO_COOKIE, "")
        with self._lock:
            self._sessions.pop(sid, None)
        target = req.query.get("post_logout_redirect_uri", "")
        headers = {"Set-Cookie": f"{SSO_COOKIE}=; Path=/{self.tenant}/; Secure; HttpOnly; SameSite=None; Max-Age=0"}
        if target:
            return Response(302, "", {**headers, "Location": target})
        page = _page(200, "You signed out of your account", "<p>It's a good idea to close all browser windows.</p>")
        page.headers.update(headers)
        return page

    # -- the authorize request ------------------------------------------------------------------
    def _check_request(self, params: dict[str, str]) -> None:
        app = self.apps.get(params["client_id"])
        if app is None:
            raise SignInError("unauthorized_client", 700016, f"Application with identifier '{params['client_id']}' was "
                                                             f"not found in the directory '{self.tenant}'.")
        if not _registered(app, params["redirect_uri"]):
            raise SignInError("invalid_request", 50011, f"The redirect URI '{params['redirect_uri']}' specified in the "
                                                        "request does not match the redirect URIs configured for the "
                                                        f"application '{app.client_id}'.")
        types = set(params["response_type"].split())
        if "code" not in types and "id_token" not in types:
            raise SignInError("unsupported_response_type", 70005, "The app returned an unsupported response type.")
        if "id_token" in types and not app.implicit_id_tokens:
            raise SignInError("unsupported_response_type", 700054, "Response_type 'id_token' isn't enabled for the "
                                                                   "application.")
        challenge = params["code_challenge"]
        if challenge and not 43 <= len(challenge) <= 128:
            raise SignInError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
        if params["code_challenge_method"] not in ("", "S256", "plain"):
            raise SignInError("invalid_request", 501491, "Invalid Code_Challenge_Method parameter.")
        if params["claims"]:
            try:
                claims = json.loads(params["claims"])
            except ValueError:
                claims = None
            if not isinstance(claims, dict):
                raise SignInError("invalid_request", 90100, "The parameter 'claims' is empty or not valid.")

    def _requested_contexts(self, params: dict[str, str]) -> tuple[str, ...]:
        """The authentication contexts the ``claims`` parameter asks for that the tenant defines."""
        acrs = _claims_request(params).get("acrs") or {}
        values = acrs.get("values") or ([acrs["value"]] if acrs.get("value") else [])
        return tuple(v.lower() for v in values if isinstance(v, str) and v.lower() in self.contexts)

    def _silent(self, session: SsoSession, params: dict[str, str]) -> bool:
        """Single sign-on answers without a prompt unless a requested context needs a new sign-in."""
        for context_id in self._requested_contexts(params):
            context = self.contexts[context_id]
            if context.every_time or context_id not in session.contexts or (context.mfa and not session.mfa):
                return False
        return True

    def _sso(self, req: Request) -> SsoSession | None:
        sid = _cookies(req).get(SSO_COOKIE, "")
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires < time.time():
                del self._sessions[sid]
                return None
            return session

    def _respond(self, params: dict[str, str], session: SsoSession) -> Response:
        user = self.directory.user(session.user_id)
        if user is None or not user.get("accountEnabled", True):
            return _retry(params, "AADSTS50057: The user account is disabled.")
        types = set(params["response_type"].split())
        amr = ["pwd"] + (["mfa"] if session.mfa else [])
        fields: list[tuple[str, str]] = []
        if "code" in types:
            code = secrets.token_urlsafe(48)
            satisfied = tuple(c for c in self._requested_contexts(params) if c in session.contexts)
            grant = Grant(params["client_id"], params["redirect_uri"], user["id"], params["scope"], params["nonce"],
                          session.auth_time, satisfied, _sid(session), params["code_challenge"],
                          params["code_challenge_method"] or ("plain" if params["code_challenge"] else ""),
                          "auth_time" in _claims_request(params))
            with self._lock:
                self._grants[code] = grant
            fields.append(("code", code))
        if "id_token" in types:  # the hybrid flow of App Service Authentication: a v1.0 token straight back
            fields.append(("id_token", self.id_token(user, params["client_id"], params["nonce"], amr)))
        fields.append(("state", params["state"]))
        mode = params["response_mode"] or ("fragment" if "id_token" in types else "query")
        if mode == "form_post":
            hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields)
            action = html.escape(params["redirect_uri"])
            # The browser posts the answer to the app (the script submits; a person can press the button too).
            return _page(200, "Signing you in", f'<form id="f" method="post" action="{action}">{hidden}'
                                                '<button type="submit">Continue</button></form>'
                                                "<script>document.getElementById('f').submit()</script>")
        separator = "#" if mode == "fragment" else ("&" if "?" in params["redirect_uri"] else "?")
        return Response(302, "", {"Location": params["redirect_uri"] + separator + urlencode(fields)})

    # -- the token endpoint ---------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        form = dict(parse_qsl(req.text, keep_blank_values=True))
        try:
            return Response(200, self._redeem(form))
        except SignInError as error:
            return error.response()

    def _redeem(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != "authorization_code":
            raise SignInError("unsupported_grant_type", 70003, "The app returned an unsupported grant type.")
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            raise SignInError("unauthorized_client", 700016, f"Application with identifier '{form.get('client_id')}' "
                                                             f"was not found in the directory '{self.tenant}'.")
        self._authenticate_client(app, form)
        for name in ("code", "redirect_uri"):
            if not form.get(name):
                raise SignInError("invalid_request", 900144, f"The request body must contain the following parameter: "
                                                             f"'{name}'.")
        with self._lock:
            grant = self._grants.get(form["code"])
            if grant is None or grant.client_id != app.client_id:
                raise SignInError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
            if grant.used:
                raise SignInError("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                                                          "retry with a new valid code or use an existing refresh "
                                                          "token.")
            if time.time() - grant.issued > self.code_seconds:
                raise SignInError("invalid_grant", 70008, "The provided authorization code or refresh token has "
                                                          "expired due to inactivity.")
            if form["redirect_uri"] != grant.redirect_uri:
                raise SignInError("invalid_grant", 500112, f"The reply address '{form['redirect_uri']}' does not match "
                                                           "the reply address provided when requesting the "
                                                           "authorization code.")
            if grant.code_challenge and not _pkce_ok(grant, form.get("code_verifier", "")):
                raise SignInError("invalid_grant", 501481, "The Code_Verifier does not match the code_challenge "
                                                           "supplied in the authorization request.")
            grant.used = True
        user = self.directory.user(grant.user_id)
        if user is None or not user.get("accountEnabled", True):
            raise SignInError("invalid_grant", 50057, "The user account is disabled.")
        self.redemptions.append({"client_id": app.client_id, "upn": user["userPrincipalName"],
                                 "acrs": list(grant.acrs)})
        scopes = set(grant.scope.split())
        granted = " ".join(sorted(scopes - {"openid", "offline_access"})) or "openid"
        answer: dict[str, Any] = {"token_type": "Bearer", "scope": granted, "expires_in": 3599, "ext_expires_in": 3599,
                                  "access_token": self.emulator.issue("https://graph.microsoft.com"),
                                  "client_info": _b64(json.dumps({"uid": user["id"], "utid": self.tenant}).encode())}
        if "openid" in scopes:
            answer["id_token"] = self.id_token_v2(user, app, grant)
        if "offline_access" in scopes:
            answer["refresh_token"] = "emu-rt-" + secrets.token_urlsafe(32)
        return answer

    def _authenticate_client(self, app: App, form: dict[str, str]) -> None:
        """The client credential: here only a federated one, a managed identity token as ``client_assertion``."""
        import jwt

        assertion = form.get("client_assertion", "")
        if form.get("client_secret"):
            raise SignInError("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent "
                                                         "in the request is the client secret value, not the client "
                                                         "secret ID.")
        if not assertion:
            raise SignInError("invalid_request", 900144, "The request body must contain the following parameter: "
                                                         "'client_assertion' or 'client_secret'.")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise SignInError("invalid_request", 900144, "The request body must contain the following parameter: "
                                                         "'client_assertion_type'.")
        try:
            claims = jwt.decode(assertion, self._key.public_key(), algorithms=["RS256"], audience=EXCHANGE_AUDIENCE,
                                options={"require": ["exp", "iss", "sub", "aud"]})
        except jwt.InvalidSignatureError:
            raise SignInError("invalid_client", 700027, "Client assertion failed signature validation.") from None
        except jwt.ExpiredSignatureError:
            raise SignInError("invalid_client", 700024, "Client assertion is not within its valid time range.") \
                from None
        except jwt.InvalidAudienceError:
            raise SignInError("invalid_client", 700212, "No matching federated identity record found for presented "
                                                        f"assertion audience '{_claim(assertion, 'aud')}'.") from None
        except jwt.PyJWTError:
            raise SignInError("invalid_client", 50027, "JWT token is invalid or malformed.") from None
        if (claims["iss"], claims["sub"]) not in app.federated:
            raise SignInError("invalid_request", 70021, "No matching federated identity record found for presented "
                                                        f"assertion. Assertion Issuer: '{claims['iss']}'. Assertion "
                                                        f"Subject: '{claims['sub']}'. Assertion Audience: "
                                                        f"'{EXCHANGE_AUDIENCE}'.")

    # -- ID tokens ------------------------------------------------------------------------------
    def id_token(self, user: dict, client_id: str, nonce: str, amr: list[str], issued: float | None = None) -> str:
        """A v1.0 ID token (the hybrid flow of App Service Authentication): ``amr``, ``upn``, issuer sts.windows.net."""
        now = int(time.time() if issued is None else issued)
        claims = {"aud": client_id, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + ID_TOKEN_SECONDS,
                  "amr": amr, "name": user.get("displayName", ""), "oid": user["id"], "sub": user["id"],
                  "tid": self.tenant, "upn": user["userPrincipalName"], "unique_name": user["userPrincipalName"],
                  "email": user.get("mail") or user["userPrincipalName"], "nonce": nonce, "ver": "1.0"}
        return self.sign(claims)

    def id_token_v2(self, user: dict, app: App, grant: Grant) -> str:
        """A v2.0 ID token from the token endpoint: no ``amr``; optional claims as the registration lists them."""
        now = int(time.time())
        scopes = set(grant.scope.split())
        claims: dict[str, Any] = {
            "aud": app.client_id, "iss": self.issuer_v2, "iat": now, "nbf": now, "exp": now + ID_TOKEN_SECONDS,
            "name": user.get("displayName", ""), "oid": user["id"], "preferred_username": user["userPrincipalName"],
            "sub": _b64(hashlib.sha256(f"{app.client_id}:{user['id']}".encode()).digest())[:43], "tid": self.tenant,
            "ver": "2.0", "sid": grant.sid, "uti": secrets.token_urlsafe(16), "rh": "0.emulator."}
        if grant.nonce:
            claims["nonce"] = grant.nonce
        if "email" in scopes or "email" in app.optional_claims:
            claims["email"] = user.get("mail") or user["userPrincipalName"]
        if "upn" in app.optional_claims:
            claims["upn"] = user["userPrincipalName"]
        if "auth_time" in app.optional_claims or grant.claims_auth_time:
            claims["auth_time"] = grant.auth_time
        if grant.acrs:
            claims["acrs"] = list(grant.acrs)
        with self._lock:
            tamper = next((t for t in self._tampers if t.times > 0), None)
            if tamper is not None:
                tamper.times -= 1
        if tamper is None:
            return self.sign(claims)
        claims.update(tamper.claims)
        if not tamper.foreign_key:
            return self.sign(claims)
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(claims, other, algorithm="RS256", headers={"kid": self.kid})

    def sign(self, claims: dict[str, Any]) -> str:
        import jwt

        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})


# -- helpers ---------------------------------------------------------------------------------------
def _registered(app: App, redirect_uri: str) -> bool:
    """Exact match, except that the port of http://127.0.0.1 and localhost redirect URIs is ignored."""
    wanted = urlsplit(redirect_uri)
    for registered in app.redirect_uris:
        have = urlsplit(registered)
        loopback = have.scheme == "http" and have.hostname in ("127.0.0.1", "localhost")
        if (have.scheme, have.hostname, have.path) == (wanted.scheme, wanted.hostname, wanted.path) and (
                loopback or have.port == wanted.port):
            return True
    return False


def _claims_request(params: dict[str, str]) -> dict[str, Any]:
    """The ``id_token`` part of the OpenID Connect ``claims`` request parameter."""
    try:
        claims = json.loads(params.get("claims") or "{}")
    except ValueError:
        return {}
    id_token = claims.get("id_token") if isinstance(claims, dict) else None
    return id_token if isinstance(id_token, dict) else {}


def _pkce_ok(grant: Grant, verifier: str) -> bool:
    if not verifier:
        return False
    if grant.code_challenge_method == "S256":
        return secrets.compare_digest(_b64(hashlib.sha256(verifier.encode()).digest()), grant.code_challenge)
    return secrets.compare_digest(verifier, grant.code_challenge)


def _sid(session: SsoSession) -> str:
    return hashlib.sha256(f"{session.user_id}:{session.auth_time}".encode()).hexdigest()[:36]


def _claim(token: str, name: str) -> str:
    import jwt

    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get(name, ""))
    except jwt.PyJWTError:
        return ""


def _cookies(req: Request) -> dict[str, str]:
    raw = req.headers.get("Cookie", "") or ""
    return {k.strip(): v for k, _, v in (p.partition("=") for p in raw.split(";")) if k.strip()}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _guid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _form(params: dict[str, str]) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in params.items() if v)
    return (f'<form method="post">{hidden}<label>Email, phone or Skype <input name="login" type="email" '
            'autocomplete="username" required></label><label>Password <input name="password" type="password" '
            'required></label><label>Authenticator code (multi-factor) <input name="otp" inputmode="numeric">'
            '</label><button type="submit" id="signin">Sign in</button></form>')


def _retry(params: dict[str, str], error: str) -> Response:
    return _page(200, "Sign in to your account", f'<p class="error">{html.escape(error)}</p>' + _form(params))


def _page(status: int, title: str, body: str) -> Response:
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            '<style>body{font-family:sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem}'
            'label,input,button{display:block;width:100%;'
            'margin:.4rem 0}input,button{min-height:40px}.error{color:#c50f1f}</style></head><body>'
            f'<h1>{html.escape(title)}</h1>{body}</body></html>')
    return Response(status, text, {"Content-Type": "text/html; charset=utf-8"})


__all__ = ["ASSERTION_TYPE", "EXCHANGE_AUDIENCE", "TENANT", "App", "AuthContext", "SignIn", "SignInError"]
