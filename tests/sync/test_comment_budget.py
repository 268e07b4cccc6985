"""The sync's comments on a long-lived incident (issue 15, item 11): new information as new comments, within
the incident's comment budget (core/comments.py).

Sentinel keeps at most 100 comments per incident (the ARM emulator answers 400 past it) and the Defender portal
does not show edited comments. A ticket that collects work notes for weeks must neither fill the incident (the
analysts' last ``SENTINEL_COMMENT_RESERVE`` comments stay theirs) nor rewrite a comment to say something new.
"""

from __future__ import annotations

import pytest

from localdev.emulators.sentinel_arm import MAX_COMMENTS
from sync.links import LinkStore
from tests.sync.conftest import add_sentinel_comment, guid, linked_ticket

pytestmark = pytest.mark.e2e
RESERVE = 10  # SENTINEL_COMMENT_RESERVE's default
BUDGET_NOTICE = "comment budget reached"


def comment_puts(stack, incident_id: str) -> list:
    return stack.arm.requests_to("PUT", f"{guid(incident_id)}/comments/")


def test_a_long_lived_incident_never_passes_the_pack_s_share_of_comments(snow, sync_host):
    stack = sync_host.stack
    incident_id, ticket = linked_ticket(sync_host)
    sys_id = ticket["sys_id"]
    answers = []
    for round_ in range(40):  # weeks of work notes, three between two business-rule pushes
        for i in range(3):
            snow.update_as(sys_id, work_notes=f"Work note {round_}.{i}: still investigating.")
        answer = sync_host.push_ticket(sys_id)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())

    comments = stack.arm.comments(incident_id)
    # 1 ticket comment + 120 work notes wanted; the pack stops where it leaves the reserve to analysts.
    assert len(comments) == MAX_COMMENTS - RESERVE
    summaries = [c for c in comments if BUDGET_NOTICE in c["properties"]["message"]]
    assert len(summaries) == 1, "one summary comment says that the pack stops commenting"
    assert "Work note" in summaries[0]["properties"]["message"]  # it carries the run's message, shortened
    assert any("commentBudget" in a for a in answers)
    # Never an edit: every comment PUT created a comment (201); none rewrote one (200).
    assert all(r.status == 201 for r in comment_puts(stack, incident_id))

    # The reserve is the analysts': they can still add theirs, and the 101st is Sentinel's refusal, not ours.
    for i in range(RESERVE):
        add_sentinel_comment(stack, incident_id, f"Analyst note {i}")
    assert len(stack.arm.comments(incident_id)) == MAX_COMMENTS

    # Later work notes: the sync goes on (fields, journal position) and writes no comment, and fails nothing.
    puts = len(comment_puts(stack, incident_id))
    snow.update_as(sys_id, work_notes="After the budget: contained.", severity="1")
    answer = sync_host.push_ticket(sys_id)
    assert answer.status_code == 200, answer.text
    assert len(comment_puts(stack, incident_id)) == puts
    assert stack.arm.incident(incident_id)["properties"]["severity"] == "High"

    # The pack's own comments (the ticket comment, the summary) never went to ServiceNow as work notes, and the
    # analysts' ones did.
    notes = [entry["value"] for entry in snow.journal(sys_id)]
    assert not [note for note in notes if BUDGET_NOTICE in note]
    assert sum("Analyst note" in note for note in notes) == RESERVE
    link = LinkStore(sync_host.state).get(guid(incident_id))
    assert link.comments_count in (-1, MAX_COMMENTS)


def test_a_replacement_ticket_gets_its_own_comment_instead_of_editing_the_first(snow, sync_host):
    # Main wrote the ticket comment under one id per incident: the ticket that replaced a deleted one rewrote it.
    stack = sync_host.stack
    incident_id, ticket = linked_ticket(sync_host)
    [first] = [c for c in stack.arm.comments(incident_id) if ticket["number"] in c["properties"]["message"]]
    snow.delete_incident(ticket["sys_id"])
    add_sentinel_comment(stack, incident_id, "Where did the ticket go?")
    body = {"incidentArmId": incident_id}
    answer = sync_host.post("sync/servicenow/outbound", body)
    assert answer.status_code == 200, answer.text
    [replacement] = snow.records(correlation_id=guid(incident_id))
    assert replacement["number"] != ticket["number"]
    messages = {c["name"]: c["properties"]["message"] for c in stack.arm.comments(incident_id)}
    assert messages[first["name"]] == first["properties"]["message"]  # the first comment is as it was
    assert any(replacement["number"] in m for name, m in messages.items() if name != first["name"])
    assert all(r.status == 201 for r in comment_puts(stack, incident_id))
