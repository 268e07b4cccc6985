"""The deployed sync playbook (sync-servicenow-outbound.json), run by the local runner against the host.

The same definition serves the "incident created" and "incident updated" automation rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook
from tests.fixtures import sample
from tests.sync.conftest import fresh_incident, ticket_of

PLAYBOOK = Path(__file__).resolve().parents[2] / "infra" / "playbooks" / "sync-servicenow-outbound.json"
pytestmark = pytest.mark.e2e


@pytest.fixture
def runner(sync_host):
    with PlaybookRunner(load_playbook(PLAYBOOK), bicep_parameters(sync_host.host.url, sync_host.host.function_key),
                        time_scale=0.01) as run:
        yield run


def test_created_then_updated_through_the_playbook(snow, sync_host, runner):
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack)
    created = runner.run(body)
    assert created.status == "Succeeded", created.timeline
    assert created.actions["Sync_ServiceNow_ticket"].body["created"] is True

    stack.arm.touch(incident_id, status="Closed", classification="TruePositive",
                    classificationReason="SuspiciousActivity", classificationComment="Phished; contained.")
    updated = runner.run(sample("incident-trigger-updated.json") | {"object": stack.arm.incident(incident_id)})
    assert updated.status == "Succeeded", updated.timeline
    ticket = ticket_of(stack, incident_id)
    assert (ticket["state"], ticket["close_code"], ticket["close_notes"]) == ("6", "Solution provided",
                                                                              "Phished; contained.")
    assert len(snow.records()) == 1


def test_servicenow_throttling_is_retried_by_the_playbook(snow, sync_host, runner):
    body, incident_id = fresh_incident(sync_host.stack)
    snow.fail(429, times=1, retry_after=30, method="POST")  # longer than the function waits itself
    result = runner.run(body)
    action = result.actions["Sync_ServiceNow_ticket"]
    assert result.status == "Succeeded", result.timeline
    assert action.attempts == 2 and action.waits == [30.0]  # the Logic App waited the Retry-After
    assert len(snow.records(correlation_id=ticket_of(sync_host.stack, incident_id)["correlation_id"])) == 1
