"""The Entra emulator's sign-in (localdev/emulators/entra_signin.py): the authorization code flow over https, the
token endpoint and its documented refusals, authentication contexts and single sign-on (docs/emulators.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from localdev.easyauth import hidden_fields
from localdev.emulators.entra import SYSTEM_ASSIGNED_PRINCIPAL_ID, USER_ASSIGNED_CLIENT_ID, USER_ASSIGNED_PRINCIPAL_ID
from localdev.emulators.graph import LOCAL_PASSWORD, MFA_CODE, PEOPLE
from localdev.emulators.tls import certificate_files

TRUST = str(certificate_files().bundle_file)
CLIENT = "c11e0000-0000-4000-8000-0000000000c1"
REDIRECT = "http://127.0.0.1:5555/api/auth/callback"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def entra():
    from localdev.emulators.entra import EntraEmulator
    from localdev.emulators.graph import GraphEmulator

    with EntraEmulator() as emulator, GraphEmulator(authority=emulator) as graph:
        emulator.sign_in.directory = graph
        emulator.sign_in.register_app(CLIENT, "http://127.0.0.1/api/auth/callback",
                                      federated=((emulator.sign_in.issuer_v2, USER_ASSIGNED_PRINCIPAL_ID),),
                                      implicit_id_tokens=False, optional_claims=("auth_time", "upn"))
        emulator.sign_in.define_context("c1")
        yield emulator


@pytest.fixture
def sign_in(entra):
    entra.sign_in.reset()
    return entra.sign_in


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_url(sign_in, challenge: str, **extra: str) -> str:
    params = {"client_id": CLIENT, "response_type": "code", "redirect_uri": REDIRECT, "scope": "openid profile email",
              "state": "s1", "nonce": "n1", "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return f"{sign_in.https_authority}/oauth2/v2.0/authorize?{urlencode(params)}"


def code_from(http: requests.Session, url: str, upn: str = "alice@contoso.com", otp: str = "") -> str:
    page = http.get(url, verify=TRUST, allow_redirects=False, timeout=10)
    if page.status_code == 302:  # single sign-on: straight back
        location = page.headers["Location"]
    else:
        answer = http.post(url, data={**hidden_fields(page.text), "login": upn, "password": LOCAL_PASSWORD,
                                      "otp": otp}, verify=TRUST, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text[:300]
        location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


def assertion(entra, client_id: str = USER_ASSIGNED_CLIENT_ID) -> str:
    query = {"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange"}
    if client_id:
        query["client_id"] = client_id
    answer = requests.get(entra.endpoint, params=query, headers={"X-IDENTITY-HEADER": entra.identity_header},
                          timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def redeem(entra, the_code: str, verifier: str, **changes: str) -> requests.Response:
    form = {"client_id": CLIENT, "grant_type": "authorization_code", "code": the_code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "scope": "openid profile email", "client_assertion_type": ASSERTION,
            "client_assertion": assertion(entra), **changes}
    form = {k: v for k, v in form.items() if v is not None}
    return requests.post(f"{entra.sign_in.https_authority}/oauth2/v2.0/token", data=form, verify=TRUST, timeout=10)


def aadsts(response: requests.Response) -> tuple[int, str, int]:
    body = response.json()
    return response.status_code, body["error"], body["error_codes"][0]


def test_discovery_keys_and_the_managed_identity_assertion(entra):
    config = requests.get(f"{entra.sign_in.https_authority}/v2.0/.well-known/openid-configuration", verify=TRUST,
                          timeout=10).json()
    assert config["issuer"] == f"{entra.sign_in.https_authority}/v2.0"
    assert config["token_endpoint"].startswith("https://") and config["authorization_endpoint"].endswith("/authorize")
    (key,) = requests.get(config["jwks_uri"], verify=TRUST, timeout=10).json()["keys"]
    token = assertion(entra)
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="api://AzureADTokenExchange")
    assert claims["sub"] == USER_ASSIGNED_PRINCIPAL_ID and claims["iss"] == config["issuer"]
    assert jwt.decode(assertion(entra, ""), options={"verify_signature": False})["sub"] == SYSTEM_ASSIGNED_PRINCIPAL_ID
    unknown = requests.get(entra.endpoint, params={"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange",
                                                   "client_id": "00000000-0000-4000-8000-00000000dead"},
                           headers={"X-IDENTITY-HEADER": entra.identity_header}, timeout=10)
    assert unknown.status_code == 400
    # Plain http still serves the hybrid flow of the Easy Auth emulation; https is what MSAL is given.
    assert requests.get(f"{entra.sign_in.authority}/discovery/v2.0/keys", timeout=10).status_code == 200


def test_a_code_is_redeemed_once_with_pkce_and_gives_a_v2_id_token(entra, sign_in):
    verifier, challenge = pkce()
    code = code_from(requests.Session(), authorize_url(sign_in, challenge))
    answer = redeem(entra, code, verifier)
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(answer.json()["id_token"], options={"verify_signature": False})
    assert claims["ver"] == "2.0" and claims["iss"] == sign_in.issuer_v2 and claims["aud"] == CLIENT
    assert claims["oid"] == PEOPLE[0][0] and claims["nonce"] == "n1" and claims["upn"] == "alice@contoso.com"
    assert "amr" not in claims and "auth_time" in claims and "acrs" not in claims  # v2.0: no amr
    assert claims["email"] == "alice@contoso.com"  # the email scope
    assert aadsts(redeem(entra, code, verifier)) == (400, "invalid_grant", 54005)


@pytest.mark.parametrize("changes, expected", [
    ({"code_verifier": "x" * 43}, (400, "invalid_grant", 501481)),
    ({"code_verifier": None}, (400, "invalid_grant", 501481)),
    ({"redirect_uri": "http://127.0.0.1:5555/api/other"}, (400, "invalid_grant", 500112)),
    ({"client_assertion": None}, (400, "invalid_request", 900144)),
    ({"client_assertion": None, "client_secret": "guess"}, (401, "invalid_client", 7000215)),
    ({"client_id": "00000000-0000-4000-8000-0000000000ff"}, (400, "unauthorized_client", 700016)),
    ({"grant_type": "client_credentials"}, (400, "unsupported_grant_type", 70003)),
    ({"code": "not-a-code"}, (400, "invalid_grant", 9002313)),
])
def test_the_token_endpoint_refuses_as_entra_does(entra, sign_in, changes, expected):
    verifier, challenge = pkce()
    code = code_from(requests.Session(), authorize_url(sign_in, challenge))
    assert aadsts(redeem(entra, code, verifier, **changes)) == expected


def test_the_client_assertion_must_be_a_trusted_managed_identity_token(entra, sign_in):
    from cryptography.hazmat.primitives.asymmetric import rsa

    verifier, challenge = pkce()
    http = requests.Session()
    good = jwt.decode(assertion(entra), options={"verify_signature": False})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (assertion(entra, ""), (400, "invalid_request", 70021)),  # system-assigned: no federated credential
        (jwt.encode(good, other_key, algorithm="RS256", headers={"kid": sign_in.kid}), (401, "invalid_client", 700027)),
        (sign_in.sign({**good, "aud": "api://other"}), (401, "invalid_client", 700212)),
        (sign_in.sign({**good, "exp": good["iat"] - 10}), (401, "invalid_client", 700024)),
        (sign_in.sign({**good, "sub": PEOPLE[0][0]}), (400, "invalid_request", 70021)),
    ]
    for token, expected in cases:
        code = code_from(http, authorize_url(sign_in, challenge))
        assert aadsts(redeem(entra, code, verifier, client_assertion=token)) == expected


def test_an_expired_code_is_refused(entra, sign_in):
    verifier, challenge = pkce()
    code = code_from(requests.Session(), authorize_url(sign_in, challenge))
    sign_in.code_seconds = -1
    assert aadsts(redeem(entra, code, verifier)) == (400, "invalid_grant", 70008)


def test_the_authorize_request_is_checked(entra, sign_in):
    _, challenge = pkce()
    for extra, text in (({"redirect_uri": "https://evil.example/api/auth/callback"}, "AADSTS50011"),
                        ({"code_challenge": "short"}, "AADSTS501491"),
                        ({"response_type": "code id_token"}, "AADSTS700054"),  # no implicit ID tokens for this app
                        ({"claims": "{not json"}, "AADSTS90100")):
        page = requests.get(authorize_url(sign_in, challenge, **extra), verify=TRUST, timeout=10)
        assert page.status_code == 400 and text in page.text


def test_single_sign_on_prompt_login_and_authentication_contexts(entra, sign_in):
    verifier, challenge = pkce()
    http = requests.Session()
    first = redeem(entra, code_from(http, authorize_url(sign_in, challenge)), verifier).json()
    assert "ESTSAUTH" in http.cookies
    # Single sign-on: no prompt, the same authentication (auth_time) as before.
    silent = http.get(authorize_url(sign_in, challenge), verify=TRUST, allow_redirects=False, timeout=10)
    assert silent.status_code == 302
    again = redeem(entra, parse_qs(urlsplit(silent.headers["Location"]).query)["code"][0], verifier).json()
    auth_time = jwt.decode(first["id_token"], options={"verify_signature": False})["auth_time"]
    assert jwt.decode(again["id_token"], options={"verify_signature": False})["auth_time"] == auth_time
    # prompt=login negates single sign-on; so does a context whose policy wants a sign-in every time.
    for extra in ({"prompt": "login"}, {"claims": json.dumps({"id_token": {"acrs": {"essential": True,
                                                                                     "value": "c1"}}})}):
        page = http.get(authorize_url(sign_in, challenge, **extra), verify=TRUST, allow_redirects=False, timeout=10)
        assert page.status_code == 200 and 'name="login"' in page.text
    # The context needs the authenticator (AADSTS50076 without it); with it the token carries acrs.
    claims = json.dumps({"id_token": {"acrs": {"essential": True, "value": "c1"}}})
    url = authorize_url(sign_in, challenge, claims=claims, prompt="login")
    page = http.get(url, verify=TRUST, timeout=10)
    refused = http.post(url, data={**hidden_fields(page.text), "login": "alice@contoso.com",
                                   "password": LOCAL_PASSWORD}, verify=TRUST, timeout=10)
    assert "AADSTS50076" in refused.text
    stepped = redeem(entra, code_from(http, url, otp=MFA_CODE), verifier).json()
    assert jwt.decode(stepped["id_token"], options={"verify_signature": False})["acrs"] == ["c1"]
    assert sign_in.signins[-1] == {"upn": "alice@contoso.com", "amr": ["pwd", "mfa"]}
    # Signing out at Entra ends single sign-on.
    out = http.get(f"{sign_in.https_authority}/oauth2/v2.0/logout", verify=TRUST, timeout=10)
    assert out.status_code == 200 and "ESTSAUTH" not in http.cookies
    assert 'name="login"' in http.get(authorize_url(sign_in, challenge), verify=TRUST, timeout=10).text


def test_a_disabled_account_gets_no_code_even_from_single_sign_on(entra, sign_in):
    _, challenge = pkce()
    http = requests.Session()
    code_from(http, authorize_url(sign_in, challenge), "bob@contoso.com")
    directory = sign_in.directory
    directory.set_enabled(PEOPLE[1][0], False)
    try:
        page = http.get(authorize_url(sign_in, challenge), verify=TRUST, allow_redirects=False, timeout=10)
        assert page.status_code == 200 and "AADSTS50057" in page.text
    finally:
        directory.set_enabled(PEOPLE[1][0], True)
