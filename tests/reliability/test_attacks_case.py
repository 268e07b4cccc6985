"""Attacks on the trigger door (issue #14, items 5 and 7), tried over real HTTP against the local host.

- 14.5 Actions are pinned to the workspaces in ``SENTINEL_WORKSPACES``: an incident, alert or entity body
  from any other workspace, or one whose workspace cannot be told, is a 403 naming the setting, on every
  action, before anything is sent anywhere (the managed identity's token never goes to a foreign workspace).
- 14.7 Cheap CPU exhaustion: a body of 1.9 M integers (under 4 MiB) is a 413 before any list is walked.

Each test failed on main before the fix (main answered 200, or 404 after calling ARM with the token).
"""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from core.api import MAX_BODY_BYTES
from localdev.emulators.sentinel_arm import DEFAULT_WORKSPACE
from tests.conftest import HostClient
from tests.fixtures import INCIDENT_4711, sample

pytestmark = pytest.mark.e2e

HOME = ("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}"
        .format(*DEFAULT_WORKSPACE))
HOME_GUID = "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d"  # the samples' Log Analytics workspace id
FOREIGN_SUB = "0a0b0c0d-1111-4222-8333-944445555666"
# Every action that takes a trigger body (core/api.py run_action).
TRIGGER_ROUTES = (
    "enrichment/ip-reputation", "response/block-ip", "response/unblock-ip", "response/mde/isolate",
    "response/mde/release", "response/entra/confirm-compromised", "response/entra/revoke-sessions",
    "response/entra/disable-user", "orchestration/notify", "orchestration/close-incident",
    "sync/servicenow/outbound",
)


@pytest.fixture(scope="module")
def pinned(stack):
    process = stack.host(SENTINEL_WORKSPACES=HOME)
    try:
        yield HostClient(process)
    finally:
        process.stop()


def foreign(body_id: str) -> str:
    """The same ARM id in a subscription the deployment never named."""
    return body_id.replace(DEFAULT_WORKSPACE[0], FOREIGN_SUB)


def foreign_incident(stack) -> dict:
    """An incident trigger body of a workspace in another subscription, which ARM (the emulator) does serve."""
    body = sample("incident-trigger.json")
    guid = str(uuid.uuid4())
    obj = body["object"]
    obj["id"] = foreign(obj["id"]).rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    body["workspaceInfo"]["SubscriptionId"] = FOREIGN_SUB
    stack.arm.seed_from_trigger(body)
    return body


def downstream(stack) -> list[str]:
    """What reached any service except the token endpoint."""
    return [f"{e.name} {r.method} {r.path}" for e in stack.emulators if e is not stack.entra for r in e.received]


def assert_refused(response, fragment: str = "SENTINEL_WORKSPACES") -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "WorkspaceNotAllowed" and fragment in error["message"], error


# -- 14.5: workspace pinning ---------------------------------------------------------------------
@pytest.mark.parametrize("route", TRIGGER_ROUTES)
def test_an_incident_of_another_workspace_is_refused_on_every_action(clean_stack, pinned, route):
    body = foreign_incident(clean_stack)
    clean_stack.reset()
    clean_stack.arm.seed_from_trigger(body)
    assert_refused(pinned.post(route, body))
    assert downstream(clean_stack) == []


def test_a_manual_run_naming_a_foreign_incident_is_refused(clean_stack, pinned):
    incident_id = foreign_incident(clean_stack)["object"]["id"]
    clean_stack.reset()
    assert_refused(pinned.post("enrichment/ip-reputation", {"incidentArmId": incident_id}))
    assert downstream(clean_stack) == []


def test_the_configured_workspace_is_served(clean_stack, pinned):
    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    assert pinned.post("enrichment/ip-reputation", sample("incident-trigger.json")).status_code == 200
    assert pinned.post("enrichment/ip-reputation", sample("entity-trigger-ip.json")).status_code == 200
    assert pinned.post("enrichment/ip-reputation", sample("alert-trigger.json")).status_code == 200
    assert len(clean_stack.arm.comments(INCIDENT_4711)) >= 1


def test_an_alert_of_another_workspace_is_refused(clean_stack, pinned):
    alert = sample("alert-trigger.json")
    alert["WorkspaceSubscriptionId"] = FOREIGN_SUB
    alert["WorkspaceId"] = str(uuid.uuid4())
    assert_refused(pinned.post("enrichment/ip-reputation", alert))
    tied = sample("alert-trigger.json") | {"incidentArmId": foreign(INCIDENT_4711)}
    assert_refused(pinned.post("enrichment/ip-reputation", tied))  # the incident it names decides
    assert downstream(clean_stack) == []


def test_a_body_whose_workspace_cannot_be_told_is_refused(clean_stack, pinned):
    entity = sample("entity-trigger-host.json")  # run outside an incident
    entity["Entity"].pop("id")
    assert_refused(pinned.post("response/mde/isolate", entity), "cannot tell")
    alert = {k: v for k, v in sample("alert-trigger.json").items() if not k.startswith(("Workspace", "Resource"))}
    assert_refused(pinned.post("enrichment/ip-reputation", alert), "cannot tell")
    assert downstream(clean_stack) == []


def test_an_entity_body_is_placed_by_its_workspace_info(clean_stack, pinned):
    entity = sample("entity-trigger-ip.json")
    entity["IncidentArmID"] = None
    entity["Entity"].pop("id")
    entity["WorkspaceInfo"] = {"SubscriptionId": FOREIGN_SUB, "ResourceGroupName": DEFAULT_WORKSPACE[1],
                               "WorkspaceName": DEFAULT_WORKSPACE[2]}
    assert_refused(pinned.post("enrichment/ip-reputation", entity))
    entity["WorkspaceInfo"]["SubscriptionId"] = DEFAULT_WORKSPACE[0]
    assert pinned.post("enrichment/ip-reputation", entity).status_code == 200


# -- 14.7: cheap CPU exhaustion ------------------------------------------------------------------
def integers(prefix: bytes, suffix: bytes) -> bytes:
    """As many JSON zeros as fit under the body limit: ~1.9 M list items, each costing a Python object."""
    count = (MAX_BODY_BYTES - len(prefix) - len(suffix)) // 2
    return prefix + b",".join([b"0"] * count) + suffix


@pytest.mark.parametrize("route", ["enrichment/ip-reputation", "response/block-ip", "orchestration/notify"])
def test_a_list_of_millions_of_integers_is_413_at_once(clean_stack, host, route):
    attack = integers(b'{"SystemAlertId":"x","Entities":[', b"]}")
    assert len(attack) <= MAX_BODY_BYTES and attack.count(b",") > 1_900_000
    response = host.post(route, raw=attack)
    assert response.status_code == 413, response.text
    assert "items" in response.json()["error"]["message"]
    incident = sample("incident-trigger.json")
    incident["object"]["properties"]["relatedEntities"] = []
    raw = json.dumps(incident).replace('"relatedEntities": []', '"relatedEntities": [%s]')
    head, tail = raw.encode().split(b"%s")
    assert host.post(route, raw=integers(head, tail)).status_code == 413
    assert downstream(clean_stack) == []


def test_an_object_with_hundreds_of_thousands_of_keys_is_413(clean_stack, host):
    body = copy.deepcopy(sample("alert-trigger.json")) | {f"k{i}": 0 for i in range(300_000)}
    response = host.post("enrichment/ip-reputation", body)
    assert response.status_code == 413, response.text
    assert downstream(clean_stack) == []
