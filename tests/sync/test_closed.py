"""Closed tickets (issue 15, item 2): read-only for the integration user (itil), so the sync stops writing to
them, says so once on the incident, and opens a follow-up ticket when the Sentinel incident is reopened."""

from __future__ import annotations

import pytest

from sync.links import LinkStore
from tests.sync.conftest import add_sentinel_comment, fresh_incident, guid, writes

pytestmark = pytest.mark.e2e
CLOSED_NOTE = "is closed, and a closed ticket is read-only in ServiceNow"


def props(stack, incident_id):
    return stack.arm.incident(incident_id)["properties"]


def closed_pair(sync_host):
    """Linked, closed in Sentinel (the ticket resolves), then ServiceNow's auto-close job closes the ticket."""
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack)
    assert sync_host.outbound(body).status_code == 200
    stack.arm.touch(incident_id, status="Closed", classification="TruePositive",
                    classificationReason="SuspiciousActivity", classificationComment="Contained.")
    assert sync_host.outbound(body).status_code == 200
    [ticket] = stack.snow.records(correlation_id=guid(incident_id))
    assert ticket["state"] == "6"
    closed = stack.snow.update_as(ticket["sys_id"], "system", state="7")  # the auto-close job
    return body, incident_id, closed


def notes_about_closing(stack, incident_id) -> list[str]:
    return [c["properties"]["message"] for c in stack.arm.comments(incident_id)
            if CLOSED_NOTE in c["properties"]["message"]]


def test_a_closed_ticket_is_left_alone_and_the_incident_says_why_once(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = closed_pair(sync_host)
    assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200  # the business rule fires on the close
    link = LinkStore(sync_host.state).get(guid(incident_id))
    assert link.state == "closed"
    assert len(notes_about_closing(stack, incident_id)) == 1
    assert ticket["number"] in notes_about_closing(stack, incident_id)[0]

    # Later Sentinel changes: a reclassification and a comment. Nothing goes to the ticket, nothing fails.
    stack.arm.touch(incident_id, classification="FalsePositive", classificationReason="InaccurateData")
    add_sentinel_comment(stack, incident_id, "Re-checked: the rule misfired.")
    before = writes(stack)["servicenow"]
    for _ in range(3):
        answer = sync_host.outbound(body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["ticket"]["readOnly"] is True
    sync_host.poll()
    assert writes(stack)["servicenow"] == before
    assert not [r for r in snow.requests_to("PATCH") if r.status == 403]  # never even tried
    assert snow.record(ticket["sys_id"])["state"] == "7"
    assert len(notes_about_closing(stack, incident_id)) == 1


def test_reopening_the_incident_opens_a_follow_up_ticket_linked_to_the_closed_one(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, closed = closed_pair(sync_host)
    assert sync_host.outbound(body).status_code == 200  # the sync learns the ticket is closed
    stack.arm.touch(incident_id, status="Active", severity="Medium")  # an analyst reopens the incident
    comment = add_sentinel_comment(stack, incident_id, "Reopened: the attacker came back.")
    answer = sync_host.outbound(body)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["followUpOf"] == closed["number"] and summary["created"] is True

    tickets = sorted(snow.records(correlation_id=guid(incident_id)), key=lambda t: t["number"])
    assert [t["number"] for t in tickets] == [closed["number"], tickets[1]["number"]]
    follow_up = tickets[1]
    assert follow_up["parent_incident"] == closed["sys_id"]
    assert follow_up["state"] == "2" and follow_up["priority"] == "3"  # Active, Medium
    assert f"Follow-up of {closed['number']}" in follow_up["description"]
    assert snow.record(closed["sys_id"]) == closed  # untouched

    labels = [label["labelName"] for label in props(stack, incident_id)["labels"]]
    assert f"ServiceNow: {follow_up['number']}" in labels
    messages = [c["properties"]["message"] for c in stack.arm.comments(incident_id)]
    assert any(follow_up["number"] in m and closed["number"] in m for m in messages)
    # What was said in Sentinel meanwhile reaches the follow-up as a work note, once.
    notes = [e["value"] for e in snow.journal(follow_up["sys_id"])]
    assert sum(comment in note for note in notes) == 1
    link = LinkStore(sync_host.state).get(guid(incident_id))
    assert (link.sys_id, link.state, link.previous) == (follow_up["sys_id"], "linked",
                                                       [[closed["sys_id"], closed["number"]]])
    # A push about the closed ticket is recognised, not an error.
    echo = sync_host.push({"sys_id": closed["sys_id"], "sys_mod_count": "99"})
    assert echo.status_code == 200 and "follow-up" in echo.json()["ignored"]
    # And it keeps going: closing the incident resolves the follow-up.
    stack.arm.touch(incident_id, status="Closed", classification="BenignPositive",
                    classificationReason="SuspiciousButExpected", classificationComment="Pentest.")
    assert sync_host.outbound(body).status_code == 200
    assert snow.record(follow_up["sys_id"])["state"] == "6"
    assert len(snow.records(correlation_id=guid(incident_id))) == 2


def test_closed_in_servicenow_first_then_reopened_in_sentinel(snow, sync_host):
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack)
    assert sync_host.outbound(body).status_code == 200
    [ticket] = snow.records(correlation_id=guid(incident_id))
    snow.update_as(ticket["sys_id"], "system", state="7", close_code="Duplicate", close_notes="Dup of INC0001.")
    assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200
    incident = props(stack, incident_id)
    assert incident["status"] == "Closed" and incident["classification"] == "Undetermined"
    stack.arm.touch(incident_id, status="Active")
    assert sync_host.outbound(body).json()["followUpOf"] == ticket["number"]
    assert len(snow.records(correlation_id=guid(incident_id))) == 2


def test_an_admin_reopening_the_closed_ticket_resumes_the_sync(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = closed_pair(sync_host)
    assert sync_host.outbound(body).status_code == 200
    snow.update_as(ticket["sys_id"], "admin", state="2")
    assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200
    assert props(stack, incident_id)["status"] == "Active"
    assert LinkStore(sync_host.state).get(guid(incident_id)).state == "linked"
    stack.arm.touch(incident_id, severity="Low")
    assert sync_host.outbound(body).status_code == 200
    assert snow.record(ticket["sys_id"])["priority"] == "4"
    assert len(snow.records(correlation_id=guid(incident_id))) == 1
