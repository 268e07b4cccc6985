"""Pure pieces of orchestration: escaping, link signing, the callback-URL guard, durations."""

from __future__ import annotations

import base64
import json

import pytest

from core.errors import BadRequest, ConfigurationError, Unauthorized
from core.pages import Page, deadline_text, same_origin
from core.principal import decode, login_url, signed_in
from core.signing import Signer
from core.webhook import check_callback_url, parse_duration
from orchestration.notify import card_escape, slack_escape

LOGIC = frozenset({"*.logic.azure.com"})
ALICE, BOB = "a11ce000-0000-4000-8000-000000000001", "b0b00000-0000-4000-8000-000000000002"


def test_slack_control_characters_become_entities():
    assert slack_escape("<!channel> <http://evil|click> & co") == "&lt;!channel&gt; &lt;http://evil|click&gt; &amp; co"


def test_card_markdown_stays_text():
    escaped = card_escape("[click](http://evil) <script> **b** - x\n1. y")
    assert "[click](" not in escaped and "**" not in escaped
    assert escaped.startswith("\\[click\\](") and "\n1. y" not in escaped and "\n1\\. y" in escaped
    # Teams reads no HTML in cards: the text is shown as typed, not entity-encoded (tests/orchestration/test_cards.py)
    assert "<script>" in escaped


def test_signatures_bind_every_field():
    signer = Signer("k" * 40)
    sig = signer.sign("v1", "a" * 32, "block", "alice@contoso.com", 100)
    assert signer.valid(sig, "v1", "a" * 32, "block", "alice@contoso.com", 100)
    for fields in (("v1", "b" * 32, "block", "alice@contoso.com", 100), ("v1", "a" * 32, "ignore", "alice@contoso.com",
                   100), ("v1", "a" * 32, "block", "bob@contoso.com", 100), ("v1", "a" * 32, "block",
                   "alice@contoso.com", 101), ("form", "a" * 32, "block", "alice@contoso.com", 100)):
        assert not signer.valid(sig, *fields)
    assert not Signer("j" * 40).valid(sig, "v1", "a" * 32, "block", "alice@contoso.com", 100)
    assert not signer.valid("", "v1") and not signer.valid("x" * 101, "v1")
    assert "k" * 40 not in repr(signer)
    with pytest.raises(ConfigurationError):
        Signer("short")


def test_form_tokens_are_bound_to_subject_person_session_and_time():
    signer = Signer("k" * 40)
    token = signer.form_token("a" * 32, ALICE, "session-1", now=1000)
    assert signer.form_token_valid(token, "a" * 32, ALICE.upper(), "session-1", now=1500)
    for subject, who, session, now in (("b" * 32, ALICE, "session-1", 1500), ("a" * 32, BOB, "session-1", 1500),
                                       ("a" * 32, ALICE, "session-2", 1500),
                                       ("a" * 32, ALICE, "session-1", 1000 + 3601),
                                       ("a" * 32, ALICE, "session-1", 500)):
        assert not signer.form_token_valid(token, subject, who, session, now=now)
    assert not signer.form_token_valid("", "a" * 32, ALICE, "session-1") and not signer.form_token_valid(
        "x.y", "a" * 32, ALICE, "session-1")


def principal_header(claims: list[tuple[str, str]], auth_typ: str = "aad") -> str:
    document = {"auth_typ": auth_typ, "claims": [{"typ": t, "val": v} for t, v in claims],
                "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
                "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_the_principal_header_is_read_as_app_service_writes_it():
    value = principal_header([("http://schemas.microsoft.com/identity/claims/objectidentifier", ALICE.upper()),
                              ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "Alice@Contoso.com"),
                              ("preferred_username", "other@contoso.com"), ("name", "Alice Approver"),
                              ("http://schemas.microsoft.com/claims/authnmethodsreferences", "pwd"),
                              ("http://schemas.microsoft.com/claims/authnmethodsreferences", "mfa"), ("iat", "1000")])
    who = decode(value)
    assert (who.object_id, who.upn, who.name, who.amr, who.issued_at) == (ALICE, "alice@contoso.com",
                                                                          "Alice Approver", ("pwd", "mfa"), 1000)
    assert who.fresh_mfa(600, 1500) and not who.fresh_mfa(600, 1700) and not who.fresh_mfa(600, 900)
    assert "object id " + ALICE in who.label
    # Trusted only in the easyauth mode, behind Easy Auth: ignored without WEBSITE_AUTH_ENABLED=True.
    easy = {"SIGN_IN_MODE": "easyauth"}
    assert signed_in({"X-MS-CLIENT-PRINCIPAL": value}, easy) is None
    assert signed_in({"x-ms-client-principal": value}, {**easy, "WEBSITE_AUTH_ENABLED": "True"}) == who
    assert signed_in({}, {**easy, "WEBSITE_AUTH_ENABLED": "True"}) is None
    # The app's own sign-in (the default) never reads the header, even where the platform says Easy Auth is on
    # (Flex Consumption: nothing documents that client copies are stripped there).
    for env in ({}, {"WEBSITE_AUTH_ENABLED": "True"}, {"SIGN_IN_MODE": "app", "WEBSITE_AUTH_ENABLED": "True"}):
        assert signed_in({"X-MS-CLIENT-PRINCIPAL": value}, env) is None


@pytest.mark.parametrize("value", [
    "not base64 !", base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b"{\"claims\": 5}").decode(),
    principal_header([("upn", "alice@contoso.com")]),  # no object id
    principal_header([("oid", "not-a-guid")]),
    principal_header([("oid", ALICE)], auth_typ="google"),
    "A" * 20000,
])
def test_a_garbled_principal_header_is_401(value):
    with pytest.raises(Unauthorized):
        decode(value)


def test_login_url_keeps_the_way_back_relative():
    easy = {"SIGN_IN_MODE": "easyauth"}
    assert login_url("/api/x?a=1&b=2", easy) == "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fx%3Fa%3D1%26b%3D2"
    assert login_url("//evil.example/x", easy).endswith("=%2F") and login_url("https://evil.example",
                                                                               easy).endswith("=%2F")
    # The app's own sign-in: back to one of the app's /api/ paths only (anything else: a harmless page).
    assert login_url("/api/x?a=1&b=2", {}) == "/api/auth/login?redirect=%2Fapi%2Fx%3Fa%3D1%26b%3D2"
    assert login_url("/api/x", {}, fresh_mfa=True) == "/api/auth/login?redirect=%2Fapi%2Fx&mfa=1"
    for hostile in ("//evil.example/x", "https://evil.example/api/x", "/api//evil.example", "/\\evil.example",
                    "/api/\tx", "/other"):
        assert login_url(hostile, {}) == "/api/auth/login?redirect=%2Fapi%2Fhealth"


def test_a_fresh_multi_factor_sign_in_is_mfa_or_the_authentication_context_and_recent():
    from core.principal import Principal

    stepped_up = Principal(ALICE, "alice@contoso.com", "Alice", auth_time=1000, issued_at=1100, acrs=("c1",))
    assert stepped_up.fresh_mfa(600, 1500, "C1") and not stepped_up.fresh_mfa(600, 1700, "c1")
    assert not stepped_up.fresh_mfa(600, 1500, "c2") and not stepped_up.fresh_mfa(600, 1500, "")
    assert not Principal(ALICE, "a", "A", auth_time=1000, acrs=()).fresh_mfa(600, 1500, "c1")  # a password sign-in
    assert not Principal(ALICE, "a", "A", auth_time=1000, acrs=("c1",)).fresh_mfa(600, 900, "c1")  # from the future


def test_same_origin_form_posts():
    base = "https://func.azurewebsites.net"
    assert same_origin({"Origin": "https://func.azurewebsites.net"}, base)
    assert same_origin({"Referer": "https://func.azurewebsites.net/api/x"}, base)
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {}, {"Referer": "https://evil.example/"},
                    {"Origin": "https://evil.example", "Referer": "https://func.azurewebsites.net/api/x"}):
        assert not same_origin(headers, base)


def test_pages_are_phone_ready_and_escape_everything():
    body = Page(200, "<b>x</b>", "lead & <i>", facts=[("A", "<script>")], sections=[("T", ["<img>"])]).body()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    assert "<script>" not in body.replace("<script>document", "") and "&lt;img&gt;" in body and "&lt;b&gt;" in body


def test_deadlines_in_the_configured_zone_with_utc_beside():
    assert deadline_text(1795000000, "Europe/Berlin") == "Wed 18 Nov 2026, 12:06 CET (11:06 UTC)"
    assert deadline_text(1795000000, "UTC") == "Wed 18 Nov 2026, 11:06 UTC"
    assert deadline_text(1795000000, "Mars/Olympus") == "Wed 18 Nov 2026, 11:06 UTC"  # unknown zone: UTC


@pytest.mark.parametrize("url", [
    "https://prod-12.westeurope.logic.azure.com/workflows/abc/runs/1/actions/x/run?sig=s",
    "https://prod-12.westeurope.logic.azure.com:443/workflows/abc",
])
def test_logic_apps_callbacks_are_accepted(url):
    assert check_callback_url(url, LOGIC, False) == url


@pytest.mark.parametrize("url", [
    "http://prod-12.westeurope.logic.azure.com/x", "https://logic.azure.com.evil.example/x",
    "https://prod-12.westeurope.logic.azure.com:8443/x", "https://a@prod-12.westeurope.logic.azure.com/x",
    "http://127.0.0.1:8080/cb", "https://10.0.0.4/x", None, 5,
    # issue 14.1: parsers that disagree, and what no Logic App URL holds
    "https://evil.example\\.logic.azure.com/x", "https://evil.example%5C.logic.azure.com/x",
    "https://prod-12.westeurope.logic.azure.com%2F.evil.example/x", "https://prød.westeurope.logic.azure.com/x",
    "https://prod-12.westeurope.logic.azure.com/x\ty", "https://prod-12.westeurope.logic.azure.com./x",
    "https://[::1]/x", " https://evil.example\\@prod-12.westeurope.logic.azure.com/x",
    # issue 14.2: malformed, answered 400 rather than 500
    "https://[::1/x", "https://prod-12.westeurope.logic.azure.com:99999/x",
    "https://prod-12.westeurope.logic.azure.com:-1/x",
    "https://prod-12.westeurope.logic.azure.com:abc/x",
])
def test_other_callbacks_are_refused(url):
    with pytest.raises(BadRequest):
        check_callback_url(url, LOGIC, False)


def test_loopback_callbacks_only_in_local_mode():
    assert check_callback_url("http://127.0.0.1:8080/cb", LOGIC, True)
    with pytest.raises(BadRequest):
        check_callback_url("http://192.168.1.1/cb", LOGIC, True)


def test_durations():
    assert parse_duration("PT1H") == 3600 and parse_duration("P1DT2M") == 86520 and parse_duration("PT2S") == 2
    for bad in ("P", "1h", "PT0S", "P31D", 60):
        with pytest.raises(BadRequest):
            parse_duration(bad)


def test_local_mode_is_refused_in_azure_and_sign_in_off_is_reported():
    from core.settings import Settings

    azure = Settings.from_env({"LOCAL_MODE": "true", "WEBSITE_INSTANCE_ID": "abc123"})
    with pytest.raises(ConfigurationError, match="LOCAL_MODE is refused when running in Azure"):
        azure["LOCAL_MODE"]
    assert azure.report()["LOCAL_MODE"].startswith("invalid:")
    off = Settings.from_env({"APPROVAL_REQUIRE_SIGN_IN": "false"})
    assert off["APPROVAL_REQUIRE_SIGN_IN"] is False  # allowed, but loud
    assert off.report()["APPROVAL_REQUIRE_SIGN_IN"].startswith("set (warning: sign-in is OFF")
    local = Settings.from_env({"APPROVAL_REQUIRE_SIGN_IN": "false", "LOCAL_MODE": "true"})
    assert local.report()["APPROVAL_REQUIRE_SIGN_IN"] == "set" and not local.warnings


def test_public_base_url_is_required_outside_local_mode():
    from core.settings import Settings
    from core.webhook import public_base_url

    with pytest.raises(ConfigurationError, match="PUBLIC_BASE_URL is required"):
        public_base_url(Settings.from_env({}), "https://approvals.evil.example")
    assert public_base_url(Settings.from_env({"LOCAL_MODE": "true"}), "http://127.0.0.1:7071") == \
        "http://127.0.0.1:7071"
    assert public_base_url(Settings.from_env({"PUBLIC_BASE_URL": "https://func.example.net/"}),
                           "https://approvals.evil.example") == "https://func.example.net"
