"""The in-app sign-in (core/signin.py, core/signin_routes.py) over real HTTP: the local host runs the app with
``SIGN_IN_MODE=app``, MSAL talks to the Entra emulator's https authority, the function identity's token is the
client assertion. Each refusal is tried the way an attacker or a broken network would produce it."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from core.signin import FLOW_COOKIE, SESSION_COOKIE, seal
from localdev.emulators.graph import LOCAL_PASSWORD, MFA_CODE, PEOPLE
from localdev.emulators.tls import certificate_files
from localdev.stack import APPROVAL_SIGNING_KEY, Stack
from tests.fixtures import fresh_incident

pytestmark = pytest.mark.e2e
TRUST = str(certificate_files().bundle_file)
ALICE = PEOPLE[0][0]


@pytest.fixture(scope="module")
def callbacks():
    from tests.orchestration.helpers import CallbackReceiver

    with CallbackReceiver() as receiver:
        yield receiver


def cookie_key() -> bytes:
    import hashlib
    import hmac

    return hmac.new(APPROVAL_SIGNING_KEY.encode(), b"sentinel-playbooks sign-in session v1", hashlib.sha256).digest()


def start(http: requests.Session, host_url: str, next_path: str = "/api/health", **params: str) -> requests.Response:
    return http.get(f"{host_url}/api/auth/login", params={"redirect": next_path, **params}, allow_redirects=False,
                    timeout=30)


def entra_answer(http: requests.Session, authorize_url: str, upn: str, otp: str = "") -> str:
    """Sign in on the Entra page; the callback URL Entra redirects the browser to (not followed)."""
    from localdev.easyauth import hidden_fields

    page = http.get(authorize_url, verify=TRUST, timeout=30)
    assert page.status_code == 200 and 'name="login"' in page.text, page.text[:300]
    answer = http.post(authorize_url, data={**hidden_fields(page.text), "login": upn, "password": LOCAL_PASSWORD,
                                            "otp": otp}, verify=TRUST, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text[:400]
    return answer.headers["Location"]


def signed_in(stack, host_url: str, upn: str = "alice@contoso.com") -> requests.Session:
    http = requests.Session()
    Stack.sign_in(http, host_url, upn, mfa=False)
    return http


def set_cookies(response: requests.Response) -> list[str]:
    return response.raw.headers.getlist("Set-Cookie")


def test_the_sign_in_round_trip_sets_a_tight_session_cookie(clean_stack, host):
    http = requests.Session()
    began = start(http, host.host.url, "/api/health?x=1")
    assert began.status_code == 302
    authorize = urlsplit(began.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    assert authorize.scheme == "https" and authorize.path.endswith("/oauth2/v2.0/authorize")
    assert query["client_id"] == "e45a0000-0000-4000-8000-00000000a991" and query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and query["response_mode"] == "query" and "prompt" not in query
    assert query["redirect_uri"] == f"{host.host.url}/api/auth/callback"
    (flow,) = set_cookies(began)
    assert flow.startswith(f"{FLOW_COOKIE}=") and "HttpOnly" in flow and "SameSite=Lax" in flow
    assert "Path=/api/auth" in flow and "Max-Age=600" in flow and "Secure" not in flow  # plain-http loopback only

    callback = entra_answer(http, began.headers["Location"], "Alice@Contoso.com")
    assert callback.startswith(f"{host.host.url}/api/auth/callback?code=")
    landed = http.get(callback, allow_redirects=False, timeout=30)
    assert landed.status_code == 302 and landed.headers["Location"] == "/api/health?x=1"
    session, cleared = sorted(set_cookies(landed), key=lambda c: not c.startswith(SESSION_COOKIE))
    assert session.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in session and "SameSite=Lax" in session
    assert "Path=/api;" in session and "Max-Age=28800" in session
    assert cleared.startswith(f"{FLOW_COOKIE}=;") and "Max-Age=0" in cleared
    payload = json.loads(base64.urlsafe_b64decode(http.cookies[SESSION_COOKIE].split(".")[0] + "=="))
    assert payload["oid"] == ALICE and payload["upn"] == "alice@contoso.com" and payload["acrs"] == []
    assert payload["exp"] - time.time() > 8 * 3600 - 60
    (redemption,) = clean_stack.entra.sign_in.redemptions
    assert redemption["upn"] == "alice@contoso.com"
    # The code was redeemed with the managed identity's assertion, not a secret: the token request shows it.
    (token_request,) = clean_stack.entra.requests_to("POST", r"/oauth2/v2\.0/token$")
    form = parse_qs(token_request.text)
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    assert "client_secret" not in form and form["code_verifier"][0]


def test_a_forged_expired_or_replayed_state_opens_no_session(clean_stack, host):
    http = requests.Session()
    began = start(http, host.host.url)
    callback = entra_answer(http, began.headers["Location"], "alice@contoso.com")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    # Forged: another state with the real code.
    forged = http.get(f"{host.host.url}/api/auth/callback", params={"code": code, "state": "forged"},
                      allow_redirects=False, timeout=30)
    assert forged.status_code == 401 and "state" in forged.text and SESSION_COOKIE not in http.cookies
    # No flow cookie (the answer arrives in another browser): refused.
    assert requests.get(callback, allow_redirects=False, timeout=30).status_code == 401
    # Expired: a flow cookie past its ten minutes (sealed with the right key, so only the time is wrong).
    stale = requests.Session()
    state = parse_qs(urlsplit(callback).query)["state"][0]
    expired = {"flow": {"state": state}, "next": "/api/health", "mfa": False, "started": 1, "exp": int(time.time()) - 1}
    stale.cookies.set(FLOW_COOKIE, seal(cookie_key(), "flow", expired), path="/api/auth")
    assert stale.get(callback, allow_redirects=False, timeout=30).status_code == 401
    # The real answer still works once (the forged attempts did not burn it)...
    first = http.get(callback, allow_redirects=False, timeout=30)
    assert first.status_code == 302 and SESSION_COOKIE in http.cookies
    # ...and never twice, even with the flow cookie put back.
    replay = requests.Session()
    replay.cookies.set(FLOW_COOKIE, began.cookies[FLOW_COOKIE], path="/api/auth")
    again = replay.get(callback, allow_redirects=False, timeout=30)
    assert again.status_code == 409 and "already used" in again.text and SESSION_COOKIE not in replay.cookies


@pytest.mark.parametrize("tamper, code", [
    ({"nonce": "0" * 64}, "nonce"),
    ({"foreign_key": True}, "signature"),
    ({"aud": "11111111-2222-4333-8444-555555555555"}, "audience"),
    ({"iss": "https://login.microsoftonline.com/ffffffff-0000-4000-8000-000000000000/v2.0"}, "issuer"),
    ({"exp": 1000, "iat": 900, "nbf": 900}, "expired"),
])
def test_an_id_token_that_fails_a_check_opens_no_session(clean_stack, host, tamper, code):
    clean_stack.entra.sign_in.tamper_id_tokens(**tamper)
    http = requests.Session()
    began = start(http, host.host.url)
    answer = http.get(entra_answer(http, began.headers["Location"], "alice@contoso.com"), allow_redirects=False,
                      timeout=30)
    assert answer.status_code == 401 and code in answer.text.lower(), answer.text[:500]
    assert SESSION_COOKIE not in http.cookies


def test_a_tampered_foreign_or_expired_session_cookie_is_nobody(clean_stack, host, callbacks):
    url = callbacks.new_url()
    incident = fresh_incident()
    clean_stack.arm.seed_from_trigger(incident)
    assert host.post("orchestration/approvals", {"callbackUrl": url, "incident": incident}).status_code == 201
    from tests.orchestration.helpers import link_for, links_in

    bob_block = link_for(links_in(clean_stack.outbox.to("bob@contoso.com")[0]["body"]), "Block")
    mallory = signed_in(clean_stack, host.host.url, "mallory@contoso.com")
    assert mallory.get(bob_block, timeout=30).status_code == 403  # signed in, not an approver
    body, mac = mallory.cookies[SESSION_COOKIE].split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    bob = PEOPLE[1][0]
    forged_body = base64.urlsafe_b64encode(json.dumps({**payload, "oid": bob}).encode()).rstrip(b"=").decode()
    now = int(time.time())
    for value in (f"{forged_body}.{mac}",  # bob's object id, mallory's signature
                  seal(b"k" * 32, "session", {**payload, "oid": bob}),  # signed with another key
                  seal(cookie_key(), "session", {**payload, "oid": bob, "exp": now - 1}),  # expired
                  seal(cookie_key(), "flow", {**payload, "oid": bob}),  # a value sealed for another purpose
                  "garbage", "a.b.c"):
        forger = requests.Session()
        forger.cookies.set(SESSION_COOKIE, value, path="/api")
        page = forger.get(bob_block, allow_redirects=False, timeout=30)
        assert page.status_code == 302 and page.headers["Location"].startswith("/api/auth/login?redirect="), value
        assert forger.post(bob_block, data={"confirm": "Block"}, headers={"Origin": host.host.url},
                           timeout=30).status_code == 401
    assert callbacks.bodies(url) == []


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/api/x", "/\\evil.example", "/api//evil",
                                    "/api/\tx", "/somewhere-else", "javascript:alert(1)", ""])
def test_sign_in_and_sign_out_only_return_to_the_apps_own_paths(host, target):
    began = requests.get(f"{host.host.url}/api/auth/login?redirect={quote(target, safe='')}", allow_redirects=False,
                         timeout=30)
    assert began.status_code == 400 and "Location" not in began.headers and FLOW_COOKIE not in began.text
    out = requests.get(f"{host.host.url}/api/auth/logout?redirect={quote(target, safe='')}", allow_redirects=False,
                       timeout=30)
    assert out.status_code == 200 and "Location" not in out.headers and "Signed out" in out.text


def test_sign_out_clears_the_session(clean_stack, host):
    http = signed_in(clean_stack, host.host.url)
    out = http.get(f"{host.host.url}/api/auth/logout", params={"redirect": "/api/health"}, allow_redirects=False,
                   timeout=30)
    assert out.status_code == 302 and out.headers["Location"] == "/api/health"
    assert any(c.startswith(f"{SESSION_COOKIE}=;") and "Max-Age=0" in c for c in set_cookies(out))
    assert SESSION_COOKIE not in http.cookies


def test_the_easy_auth_header_is_never_trusted_in_app_mode(clean_stack, host_with, callbacks):
    """The Flex Consumption risk: the platform says authentication is on, nothing strips client copies."""
    from tests.orchestration.helpers import review_link
    from tests.orchestration.test_units import principal_header

    host = host_with(WEBSITE_AUTH_ENABLED="True")
    incident = fresh_incident()
    clean_stack.arm.seed_from_trigger(incident)
    url = callbacks.new_url()
    assert host.post("orchestration/approvals", {"callbackUrl": url, "incident": incident}).status_code == 201
    review = review_link(json.dumps(clean_stack.teams.cards[0]))
    forged = principal_header([("oid", ALICE), ("upn", "alice@contoso.com"), ("amr", "mfa")])
    page = requests.get(review, headers={"X-MS-CLIENT-PRINCIPAL": forged}, allow_redirects=False, timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith("/api/auth/login?")
    posted = requests.post(review, data={"confirm": "Ignore"}, headers={"X-MS-CLIENT-PRINCIPAL": forged,
                                                                        "Origin": host.host.url}, timeout=30)
    assert posted.status_code == 401
    assert callbacks.bodies(url) == []


def test_the_code_is_redeemed_only_with_the_user_assigned_identity(clean_stack, host_with):
    """No client secret anywhere: a system-assigned identity is no federated credential (AADSTS70021)."""
    host = host_with(AZURE_CLIENT_ID="")
    http = requests.Session()
    began = start(http, host.host.url)
    answer = http.get(entra_answer(http, began.headers["Location"], "alice@contoso.com"), allow_redirects=False,
                      timeout=30)
    assert answer.status_code == 401 and "AADSTS70021" in answer.text and SESSION_COOKIE not in http.cookies


def test_a_fresh_multi_factor_sign_in_needs_the_authentication_context(clean_stack, host, host_with):
    sign_in = clean_stack.entra.sign_in
    # Asked for: prompt=login and the claims request for the context, even with a single sign-on session.
    http = signed_in(clean_stack, host.host.url, "adele.vance@contoso.com")
    began = start(http, host.host.url, mfa="1")
    query = {k: v[0] for k, v in parse_qs(urlsplit(began.headers["Location"]).query).items()}
    assert query["prompt"] == "login"
    assert json.loads(query["claims"])["id_token"]["acrs"] == {"essential": True, "value": "c1"}
    # The policy demands the authenticator: a password alone does not get through Entra.
    page = http.get(began.headers["Location"], verify=TRUST, timeout=30)
    from localdev.easyauth import hidden_fields

    refused = http.post(began.headers["Location"], data={**hidden_fields(page.text), "login": "adele.vance@contoso.com",
                                                         "password": LOCAL_PASSWORD}, verify=TRUST, timeout=30)
    assert "AADSTS50076" in refused.text
    # With it, the session carries acrs c1 and a fresh auth_time.
    landed = http.get(entra_answer(http, began.headers["Location"], "adele.vance@contoso.com", MFA_CODE),
                      allow_redirects=False, timeout=30)
    assert landed.status_code == 302
    payload = json.loads(base64.urlsafe_b64decode(http.cookies[SESSION_COOKIE].split(".")[0] + "=="))
    assert payload["acrs"] == ["c1"] and abs(payload["auth_time"] - time.time()) < 60
    # A tenant where the context does not exist: the token has no acrs, and the app refuses the step-up.
    context = sign_in.contexts.pop("c1")
    try:
        other = requests.Session()
        began = start(other, host.host.url, mfa="1")
        answer = other.get(entra_answer(other, began.headers["Location"], "adele.vance@contoso.com", MFA_CODE),
                           allow_redirects=False, timeout=30)
        assert answer.status_code == 403 and "multi-factor" in answer.text and SESSION_COOKIE not in other.cookies
    finally:
        sign_in.contexts["c1"] = context
    # And where none is configured, the app says so instead of pretending.
    unconfigured = host_with(SIGN_IN_MFA_AUTH_CONTEXT="")
    assert start(requests.Session(), unconfigured.host.url, mfa="1").status_code == 500


def test_easy_auth_mode_hands_sign_in_to_app_service(clean_stack, host_with):
    host = host_with(**clean_stack.easyauth_env())
    began = requests.get(f"{host.host.url}/api/auth/login", params={"redirect": "/api/health"}, allow_redirects=False,
                         timeout=30)
    assert began.status_code == 302 and began.headers["Location"] == "/.auth/login/aad?post_login_redirect_uri=" \
                                                                       "%2Fapi%2Fhealth"
    assert requests.get(f"{host.host.url}/api/auth/callback", timeout=30).status_code == 404
    http = requests.Session()
    Stack.sign_in(http, host.host.url, "alice@contoso.com", mode="easyauth")
    assert "AppServiceAuthSession" in http.cookies and SESSION_COOKIE not in http.cookies
