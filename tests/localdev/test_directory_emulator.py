"""The Graph emulator's directory over real HTTP: group membership (checkMemberGroups, transitiveMembers),
riskyUsers/dismiss, and the sign-in directory the Entra emulator reads."""

from __future__ import annotations

import pytest
import requests

from localdev.emulators.entra import GRAPH_AUDIENCE, EntraEmulator
from localdev.emulators.graph import ADELE, LOCAL_PASSWORD, MFA_CODE, PEOPLE, SOC_APPROVERS_GROUP, GraphEmulator

ALICE, BOB, MALLORY, CAROL, DAVE = (p[0] for p in PEOPLE)
NESTED = "5a0c0b1e-0000-4000-8000-0000000000b2"


@pytest.fixture(scope="module")
def servers():
    with EntraEmulator() as entra, GraphEmulator(authority=entra) as graph:
        yield entra, graph


@pytest.fixture
def graph(servers):
    entra, graph = servers
    graph.reset()
    graph.add_group(NESTED, "Incident commanders", [BOB, SOC_APPROVERS_GROUP])  # carol through the nested group
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {entra.issue(GRAPH_AUDIENCE)}"
    return graph, http


def test_check_member_groups_is_transitive_and_bounded(graph):
    server, http = graph
    url = f"{server.url}/v1.0/users/{CAROL}/checkMemberGroups"
    answer = http.post(url, json={"groupIds": [SOC_APPROVERS_GROUP, NESTED, ALICE]}, timeout=5)
    assert answer.status_code == 200 and answer.json()["value"] == [SOC_APPROVERS_GROUP, NESTED]
    assert http.post(f"{server.url}/v1.0/users/{MALLORY}/checkMemberGroups", json={"groupIds": [NESTED]},
                     timeout=5).json()["value"] == []
    assert http.post(url, json={"groupIds": ["not-a-guid"]}, timeout=5).status_code == 400
    too_many = [f"00000000-0000-4000-8000-{i:012d}" for i in range(21)]
    assert http.post(url, json={"groupIds": too_many}, timeout=5).status_code == 400
    assert http.post(f"{server.url}/v1.0/users/nobody@contoso.com/checkMemberGroups", json={"groupIds": [NESTED]},
                     timeout=5).status_code == 404
    assert requests.post(url, json={"groupIds": [NESTED]}, timeout=5).status_code == 401  # no token


def test_transitive_members_are_paged_with_next_links(graph):
    server, http = graph
    url = f"{server.url}/v1.0/groups/{NESTED}/transitiveMembers/microsoft.graph.user"
    first = http.get(url, params={"$select": "id,mail", "$top": "1"}, timeout=5).json()
    assert [u["id"] for u in first["value"]] == [BOB] and set(first["value"][0]) == {"@odata.type", "id", "mail"}
    second = http.get(first["@odata.nextLink"], timeout=5).json()
    assert [u["id"] for u in second["value"]] == [CAROL] and "@odata.nextLink" not in second
    assert http.get(f"{server.url}/v1.0/groups/{ALICE}/transitiveMembers/microsoft.graph.user",
                    timeout=5).status_code == 404  # a user id is no group


def test_dismiss_sets_the_risk_to_dismissed_and_needs_the_licence(graph):
    server, http = graph
    server.set_risk(ADELE, "atRisk", "high")
    url = f"{server.url}/v1.0/identityProtection/riskyUsers/dismiss"
    assert http.post(url, json={"userIds": [ADELE]}, timeout=5).status_code == 204
    risky = server.risky_user(ADELE)
    assert (risky["riskState"], risky["riskLevel"], risky["riskDetail"]) == ("dismissed", "none",
                                                                              "adminDismissedAllRiskForUser")
    assert http.post(url, json={"userIds": ["00000000-0000-4000-8000-000000000000"]}, timeout=5).status_code == 400
    server.licensed = False
    assert http.post(url, json={"userIds": [ADELE]}, timeout=5).status_code == 403


def test_the_sign_in_directory(graph):
    server, _ = graph
    assert server.authenticate("ALICE@contoso.com", LOCAL_PASSWORD)["id"] == ALICE
    assert server.authenticate("dave@fabrikam.com", LOCAL_PASSWORD)["id"] == DAVE  # a guest by mail
    assert server.authenticate("alice@contoso.com", "nope") is None
    assert server.verify_otp(ALICE, MFA_CODE) and not server.verify_otp(ALICE, "000000")
    server.add_user("d15ab1ed-0000-4000-8000-000000000009", "gone@contoso.com", enabled=False,
                    password=LOCAL_PASSWORD)
    assert server.authenticate("gone@contoso.com", LOCAL_PASSWORD)["accountEnabled"] is False  # Entra refuses it
