"""The Sentinel connector stand-in: "Alert - Get incident" over real HTTP against the ARM and Entra emulators, and
the bodies its triggers hand over."""

from __future__ import annotations

import pytest
import requests

from localdev.emulators.entra import EntraEmulator
from localdev.emulators.sentinel_arm import SentinelArmEmulator
from localdev.sentinel_connector import PLAYBOOK_IDENTITY, SentinelConnector
from tests.fixtures import INCIDENT_4711, sample

try:
    from tests.sentinel_spec import SPEC_AVAILABLE, validate_request
except ImportError:  # pragma: no cover - the spec module is part of the tree
    SPEC_AVAILABLE, validate_request = False, None


@pytest.fixture(scope="module")
def world():
    with EntraEmulator() as entra, SentinelArmEmulator(authority=entra, validator=validate_request if SPEC_AVAILABLE
                                                        else None) as arm, SentinelConnector(arm, entra) as connector:
        yield entra, arm, connector


@pytest.fixture
def connector(world):
    _, arm, connector = world
    arm.reset()
    connector.reset()
    return connector


def get_incident_path(alert: dict, alert_id: str | None = None, workspace: str | None = None) -> str:
    """The path of the templates' "Alert - Get incident" for an alert trigger body."""
    return (f"/Incidents/subscriptions/{alert['WorkspaceSubscriptionId']}/resourceGroups/"
            f"{alert['WorkspaceResourceGroup']}/workspaces/{workspace or alert['WorkspaceId']}/alerts/"
            f"{alert_id or alert['SystemAlertId']}")


def test_alert_get_incident_answers_the_incident_that_holds_the_alert(connector):
    alert = sample("alert-trigger.json")
    connector.arm.seed_from_trigger(sample("incident-trigger.json"))  # another incident, another alert
    connector.track(INCIDENT_4711)
    incident_id = connector.incident_for_alert(alert)
    answer = requests.get(connector.url + get_incident_path(alert), timeout=10)
    assert answer.status_code == 200
    incident = answer.json()
    assert incident["id"] == incident_id and incident["type"] == "Microsoft.SecurityInsights/Incidents"
    assert incident["properties"]["title"] == alert["AlertDisplayName"] and incident["properties"]["incidentNumber"]
    assert incident["etag"]
    # Read through ARM as the playbook's identity: the alerts of the incidents in the alert's workspace, then it.
    calls = [r for r in connector.arm.received if r.method in ("GET", "POST")]
    assert [(r.method, r.path.lower()) for r in calls] == [
        ("POST", INCIDENT_4711.lower() + "/alerts"), ("POST", incident_id.lower() + "/alerts"),
        ("GET", incident_id.lower())]
    token = calls[-1].headers["Authorization"].removeprefix("Bearer ")
    assert token and connector.entra.caller(calls[-1]).app_id == PLAYBOOK_IDENTITY


def test_an_alert_no_incident_holds_and_an_unknown_workspace_are_not_found(connector):
    alert = sample("alert-trigger.json")
    connector.track(connector.arm.seed_from_trigger(sample("incident-trigger.json")))
    missing = requests.get(connector.url + get_incident_path(alert), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NotFound"
    assert alert["SystemAlertId"] in missing.json()["error"]["message"]
    connector.incident_for_alert(alert)
    other = requests.get(connector.url + get_incident_path(alert, workspace="00000000-0000-4000-8000-000000000000"),
                         timeout=10)
    assert other.status_code == 404 and "Workspace" in other.json()["error"]["message"]
    unknown = requests.get(connector.url + "/Incidents/Comment", timeout=10)
    assert unknown.status_code == 404


def test_arm_throttling_reaches_the_playbook_with_its_retry_after(connector):
    alert = sample("alert-trigger.json")
    connector.incident_for_alert(alert)
    connector.arm.fail(429, path=r"/alerts$", retry_after=7)
    throttled = requests.get(connector.url + get_incident_path(alert), timeout=10)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert requests.get(connector.url + get_incident_path(alert), timeout=10).status_code == 200


def test_a_revoked_token_is_renewed_once(connector):
    alert = sample("alert-trigger.json")
    connector.incident_for_alert(alert)
    assert requests.get(connector.url + get_incident_path(alert), timeout=10).status_code == 200
    connector.entra.revoke_all()
    assert requests.get(connector.url + get_incident_path(alert), timeout=10).status_code == 200
    assert [r.status for r in connector.arm.received][-3:] == [401, 200, 200]


@pytest.mark.parametrize(("path", "body", "problem"), [
    ("/incident-creation", "incident-trigger.json", None),
    ("/incident-creation", "alert-trigger.json", "incident envelope"),
    ("/subscribe", "alert-trigger.json", None),
    ("/subscribe", "alert-trigger-entities-string.json", None),
    ("/subscribe", "entity-trigger-ip.json", "the alert"),
    ("/entity/IP", "entity-trigger-ip.json", None),
    ("/entity/Host", "entity-trigger-host.json", None),
    ("/entity/Account", "entity-trigger-account.json", None),
    ("/entity/Host", "entity-trigger-ip.json", "only for Host entities"),
    ("/entity/IP", "incident-trigger.json", "'Entity'"),
    ("/entity/Mailbox", "entity-trigger-ip.json", "not an entity trigger modelled here"),
    ("/somewhere", "incident-trigger.json", "not a Microsoft Sentinel trigger"),
])
def test_each_trigger_hands_over_its_own_body(connector, path, body, problem):
    found = connector.trigger_problem(path, sample(body))
    assert (found is None) if problem is None else (problem in found)
