"""Attacks on the ServiceNow sync's queries (issue 14, item 6), reproduced and kept as regressions.

A value in ``sysparm_query`` is not inert: ``javascript:`` makes ServiceNow run the rest as server-side script,
``^``/``^NQ`` add conditions or whole queries. The incident name became a ``correlation_id=`` value, and the
trigger body's ``object.name`` was trusted for it, so anyone holding the function key could have the instance
run script as the integration user. On main before this fix, the ``javascript:`` name reached ServiceNow's
query and a ticket was created for it; now every value is shaped before any request (sync/query.py) and the
call answers 400 naming the problem, with nothing sent to ServiceNow.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import HostClient
from tests.sync.conftest import OUTBOUND, SyncClient, fresh_incident, sync_settings

pytestmark = pytest.mark.e2e

SCRIPT = "javascript:gs.sleep(5000)"


def queries(stack) -> list[str]:
    """Every sysparm_query ServiceNow received."""
    return [r.query.get("sysparm_query", "") for r in stack.snow.received]


def assert_refused_before_servicenow(stack, response, fragment: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "UnsafeQueryValue" and fragment in error["message"]
    assert not any("javascript" in q.lower() for q in queries(stack)), queries(stack)
    assert stack.snow.received == [] and getattr(stack.snow, "scripts", []) == []
    assert stack.snow.records() == []


@pytest.fixture
def host(stack):
    stack.reset()
    process = stack.host(**sync_settings())
    try:
        yield SyncClient(process, stack)
    finally:
        process.stop()


def test_a_javascript_incident_name_in_the_body_never_reaches_a_query(host):
    stack = host.stack
    body, _ = fresh_incident(stack)
    body["object"]["name"] = SCRIPT  # object.id still names a real incident
    assert_refused_before_servicenow(stack, host.outbound(body), "incident name")


@pytest.mark.parametrize("name", [SCRIPT, "incident-4711", "x^NQcorrelation_display=Microsoft Sentinel",
                                  "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e^ORDERBYsys_id"])
def test_only_guid_shaped_incident_names_reach_servicenow(host, name):
    stack = host.stack
    body, incident_id = fresh_incident(stack)
    arm_id = incident_id.rsplit("/", 1)[0] + "/" + name
    body["object"]["id"], body["object"]["name"] = arm_id, name
    for payload in (body, {"incidentArmId": arm_id}):
        response = host.outbound(payload)
        if response.status_code == 400 and response.json()["error"]["code"] != "UnsafeQueryValue":
            continue  # refused earlier, by the trigger normalisation: fine too
        assert_refused_before_servicenow(stack, response, "javascript:" if "javascript" in name else "GUID")


def test_close_incident_refuses_a_script_name_too(host):
    stack = host.stack
    body, _ = fresh_incident(stack)
    body["object"]["name"] = SCRIPT
    response = host.post("orchestration/close-incident", {**body, "classification": "FalsePositive"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "UnsafeQueryValue"
    assert stack.snow.received == []
    assert stack.arm.requests_to("PUT") == []  # refused before anything was closed: nothing half-done


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("SERVICENOW_MAPPING", json.dumps({"source": "javascript:gs.sleep(5000)"}), "SERVICENOW_MAPPING"),
    ("SERVICENOW_MAPPING", json.dumps({"source": "Microsoft Sentinel^NQactive=true"}), "SERVICENOW_MAPPING"),
    ("SERVICENOW_CALLER_ID", "javascript:gs.getUserID()", "SERVICENOW_CALLER_ID"),
    ("SERVICENOW_CATEGORY", "javascript:gs.sleep(5000)", "SERVICENOW_CATEGORY"),
])
def test_settings_cannot_smuggle_script_or_query_syntax(stack, setting, value, named):
    stack.reset()
    process = stack.host(**sync_settings(**{setting: value}))
    try:
        body, _ = fresh_incident(stack)
        response = HostClient(process).post(OUTBOUND, body)
        assert response.status_code == 500 and named in response.json()["error"]["message"], response.text
    finally:
        process.stop()
    assert stack.snow.received == [] and not any("javascript" in q.lower() for q in queries(stack))


def test_a_push_cannot_name_a_script_either(host):
    response = host.push({"sys_id": SCRIPT})
    assert response.status_code == 400
    assert host.stack.snow.received == []
