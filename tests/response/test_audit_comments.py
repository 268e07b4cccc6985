"""Response audit comments on a long-lived incident (issue #15.11): through the incident's comment budget, never
edited. Sentinel caps an incident at 100 comments; the pack leaves the last ``SENTINEL_COMMENT_RESERVE`` to
analysts, writes one summary comment when its share runs out, and then says in its answer that it did not
comment."""

from __future__ import annotations

import uuid

import pytest
import requests

from localdev.emulators.entra import ARM_AUDIENCE
from localdev.emulators.sentinel_arm import API_VERSION
from tests.response.helpers import assert_never_edited, comments, fresh_ips, incident, ip_entity, outcomes

BLOCK, UNBLOCK = "response/block-ip", "response/unblock-ip"
pytestmark = pytest.mark.e2e


def analysts_comment(stack, incident_id: str, n: int) -> None:
    """``n`` comments written by people, through the ARM API as the portal writes them."""
    headers = {"Authorization": f"Bearer {stack.entra.issue(ARM_AUDIENCE)}"}
    for _ in range(n):
        answer = requests.put(f"{stack.arm.url}{incident_id}/comments/{uuid.uuid4()}", headers=headers, timeout=10,
                              params={"api-version": API_VERSION},
                              json={"properties": {"message": "analyst note"}})
        assert answer.status_code in (200, 201), answer.text


def test_the_response_audit_spends_the_comment_budget_and_then_says_so(clean_stack, host):
    stack = clean_stack
    ip = fresh_ips(1)[0]
    incident_id = incident(stack, ip_entity(ip))["object"]["id"]
    analysts_comment(stack, incident_id, 89)  # 11 slots left: the reserve of 10 and the pack's last one

    first = host.post(BLOCK, stack.arm.trigger_body(incident_id))  # the trigger carries the comment count
    assert first.status_code == 200 and outcomes(first.json()) == {ip: "done"}
    last = comments(stack, {"object": {"id": incident_id}})[-1]["properties"]["message"]
    assert "comment budget reached" in last and ip in last
    assert first.json()["commentSkipped"] is None

    second = host.post(UNBLOCK, stack.arm.trigger_body(incident_id))
    assert second.status_code == 200 and outcomes(second.json()) == {ip: "done"}
    assert second.json()["auditComment"] is None and "comment budget" in second.json()["commentSkipped"]
    assert len(stack.arm.comments(incident_id)) == 90  # the analysts' 10 are left to them
    assert_never_edited(stack, {"object": {"id": incident_id}})
