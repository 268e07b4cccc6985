"""The Microsoft Graph emulator over real HTTP: users, Identity Protection, sendMail, errors."""

from __future__ import annotations

import pytest
import requests

from localdev.emulators.entra import GRAPH_AUDIENCE, MDE_AUDIENCE, EntraEmulator
from localdev.emulators.graph import ADELE, GraphEmulator

V1 = "/v1.0"


@pytest.fixture(scope="module")
def entra():
    with EntraEmulator() as server:
        yield server


@pytest.fixture(scope="module")
def server(entra):
    with GraphEmulator(authority=entra, mailboxes=("soc@contoso.com",)) as emulator:
        yield emulator


@pytest.fixture
def graph(server):
    server.reset()
    return server


@pytest.fixture
def http(entra):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {entra.issue(GRAPH_AUDIENCE)}"
    return session


def test_token_audience_is_checked(graph, entra):
    response = requests.get(f"{graph.url}{V1}/users/{ADELE}", timeout=5,
                            headers={"Authorization": f"Bearer {entra.issue(MDE_AUDIENCE)}"})
    assert response.status_code == 401


def test_user_by_id_or_upn_with_select(graph, http):
    by_id = http.get(f"{graph.url}{V1}/users/{ADELE}", params={"$select": "id,accountEnabled"}, timeout=5).json()
    assert by_id == {"@odata.context": by_id["@odata.context"], "id": ADELE, "accountEnabled": True}
    by_upn = http.get(f"{graph.url}{V1}/users/Adele.Vance%40contoso.com", timeout=5).json()
    assert by_upn["id"] == ADELE and by_upn["userPrincipalName"] == "adele.vance@contoso.com"


def test_unknown_user_is_request_resource_not_found(graph, http):
    response = http.get(f"{graph.url}{V1}/users/nobody@contoso.com", timeout=5)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "Request_ResourceNotFound" and "does not exist" in error["message"]
    assert {"date", "request-id", "client-request-id"} <= set(error["innerError"])


def test_patch_account_enabled_and_its_errors(graph, http):
    assert http.patch(f"{graph.url}{V1}/users/{ADELE}", json={"accountEnabled": False}, timeout=5).status_code == 204
    assert graph.user(ADELE)["accountEnabled"] is False
    unknown = http.patch(f"{graph.url}{V1}/users/{ADELE}", json={"isCompromised": True}, timeout=5)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "Request_BadRequest"
    graph.add_user("c0ffee00-0000-4000-8000-00000000ad01", "admin@contoso.com", privileged=True)
    denied = http.patch(f"{graph.url}{V1}/users/admin@contoso.com", json={"accountEnabled": False}, timeout=5)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    assert graph.user("admin@contoso.com")["accountEnabled"] is True


def test_revoke_sessions_answers_true_and_moves_valid_from(graph, http):
    before = graph.user(ADELE)["signInSessionsValidFromDateTime"]
    response = http.post(f"{graph.url}{V1}/users/{ADELE}/revokeSignInSessions", timeout=5)
    assert response.status_code == 200 and response.json()["value"] is True
    assert graph.user(ADELE)["signInSessionsValidFromDateTime"] > before


def test_confirm_compromised_then_risky_user(graph, http):
    assert http.get(f"{graph.url}{V1}/identityProtection/riskyUsers/{ADELE}", timeout=5).status_code == 404
    response = http.post(f"{graph.url}{V1}/identityProtection/riskyUsers/confirmCompromised",
                         json={"userIds": [ADELE]}, timeout=5)
    assert response.status_code == 204
    risky = http.get(f"{graph.url}{V1}/identityProtection/riskyUsers/{ADELE}", timeout=5).json()
    assert (risky["riskState"], risky["riskLevel"]) == ("confirmedCompromised", "high")
    bad = http.post(f"{graph.url}{V1}/identityProtection/riskyUsers/confirmCompromised", json={"userIds": []},
                    timeout=5)
    assert bad.status_code == 400


def test_without_p2_identity_protection_is_refused(graph, http):
    graph.licensed = False
    response = http.post(f"{graph.url}{V1}/identityProtection/riskyUsers/confirmCompromised",
                         json={"userIds": [ADELE]}, timeout=5)
    assert response.status_code == 403 and "not licensed" in response.json()["error"]["message"]
    assert http.post(f"{graph.url}{V1}/users/{ADELE}/revokeSignInSessions", timeout=5).status_code == 200
    # Graph words the same refusal more than one way: the emulator takes each form in turn.
    other = http.get(f"{graph.url}{V1}/identityProtection/riskyUsers/{ADELE}", timeout=5)
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
    assert "doesn't have premium license" in other.json()["error"]["message"]
    graph.reset()
    assert graph.licensed is True


def test_send_mail_shares_the_endpoint(graph, http):
    message = {"message": {"subject": "s", "body": {"contentType": "Text", "content": "c"},
                           "toRecipients": [{"emailAddress": {"address": "a@contoso.com"}}]}}
    assert http.post(f"{graph.url}{V1}/users/soc@contoso.com/sendMail", json=message, timeout=5).status_code == 202
    assert graph.outbox.to("a@contoso.com")[0]["subject"] == "s"


def test_faults_use_the_graph_error_shape(graph, http):
    graph.fail(429, retry_after=3)
    throttled = http.get(f"{graph.url}{V1}/users/{ADELE}", timeout=5)
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "TooManyRequests"
