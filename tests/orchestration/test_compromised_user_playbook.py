"""The compromised-user playbook end to end: infra/playbooks/orchestration-compromised-user.json run by
localdev.playbooks.PlaybookRunner against the local host and the emulators, approvers clicking real links."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import pytest
import requests

from localdev.emulators.graph import ADELE, PEOPLE
from tests.conftest import wait_for
from tests.fixtures import incident_with
from tests.orchestration.helpers import Started, link_for, links_in, person, press

ALICE = PEOPLE[0][0]
PLAYBOOK = Path(__file__).resolve().parents[2] / "infra" / "playbooks" / "orchestration-compromised-user.json"
pytestmark = pytest.mark.e2e


def click(stack, host, approver: str, choice: str) -> requests.Response:
    """The approver opens the mail's link, signs in (Easy Auth), sees the page and confirms (POST from the page)."""
    mail = wait_for(lambda: stack.outbox.to(approver))
    link = link_for(links_in(mail[0]["body"]), choice)
    http = person(stack, host.host.url, approver)
    page = http.get(link, timeout=30)
    assert page.status_code == 200 and "Confirm" in page.text
    return press(http, link, choice)


def tickets_of(stack, incident) -> list[dict]:
    return [r for r in stack.snow.records() if incident["object"]["name"] in json.dumps(r)]


def common_effects(stack, incident) -> None:
    """Ticket once, one notification and one approval question per channel, one mail per approver."""
    assert len(tickets_of(stack, incident)) == 1
    assert len(stack.teams.messages) == 2 and len(stack.slack.messages) == 2
    assert "New Sentinel incident" in json.dumps(stack.teams.cards[0])
    assert "Approval needed" in json.dumps(stack.teams.cards[1])
    assert sorted(m["to"][0] for m in stack.outbox.sent) == ["alice@contoso.com", "bob@contoso.com"]


def test_ignore_closes_the_incident_and_the_ticket(clean_stack, host, incident):
    run = Started(host, PLAYBOOK, incident)
    assert click(clean_stack, host, "bob@contoso.com", "Ignore").status_code == 200
    result = run.join()
    assert result.status == "Succeeded", result.timeline
    assert result["Ask_approvers"].body["decision"] == "Ignore"
    assert result["Close_incident_and_ticket"].status == "Succeeded"
    assert result["Decision_is_Block"].status == "Succeeded" and result["Confirm_user_compromised"].status == "Skipped"

    common_effects(clean_stack, incident)
    props = clean_stack.arm.incident(incident["object"]["id"])["properties"]
    assert props["status"] == "Closed" and props["classification"] == "BenignPositive"
    (ticket,) = tickets_of(clean_stack, incident)
    assert ticket["state"] in ("6", "7")
    text = " ".join(c["properties"]["message"] for c in clean_stack.arm.comments(incident["object"]["id"]))
    assert "Approval decision: Ignore" in text and "bob@contoso.com" in text and "Incident closed" in text


def test_timeout_does_nothing_destructive(clean_stack, host, incident):
    run = Started(host, PLAYBOOK, incident, approvalTimeout="PT1S")
    wait_for(lambda: len(clean_stack.outbox.sent) == 2)
    import time

    time.sleep(1.2)
    requests.post(f"{host.host.url}/admin/functions/approval_sweep", json={},
                  headers={"x-functions-key": host.host.master_key}, timeout=30)
    result = run.join()
    assert result.status == "Succeeded", result.timeline
    assert result["Ask_approvers"].body["decision"] == "TimedOut"
    assert result["Confirm_user_compromised"].status == "Skipped"
    assert result["Close_incident_and_ticket"].status == "Skipped"
    assert clean_stack.arm.incident(incident["object"]["id"])["properties"]["status"] != "Closed"
    text = " ".join(c["properties"]["message"] for c in clean_stack.arm.comments(incident["object"]["id"]))
    assert "Approval timed out" in text


@pytest.mark.skipif(importlib.util.find_spec("response") is None, reason="the response area is not in the tree yet")
def test_block_acts_on_exactly_the_listed_targets(clean_stack, host, callbacks):
    """Block touches the users and IPs the approver saw, nothing else: the harmless IP (0/94) stays open."""
    bad, harmless = "203.0.113.201", "198.51.100.201"  # addresses no other test of this module looks up
    clean_stack.vt.set_report(bad, malicious=12, suspicious=1, harmless=55, undetected=26)
    clean_stack.vt.set_report(harmless, harmless=71, undetected=23)
    incident = incident_with(uuid.uuid4().int % 90000 + 10000, [bad, harmless, "10.0.0.5"],
                             name=str(uuid.uuid4()))
    clean_stack.arm.seed_from_trigger(incident)
    run = Started(host, PLAYBOOK, incident)
    assert click(clean_stack, host, "alice@contoso.com", "Block").status_code == 200
    result = run.join()
    decision = result["Ask_approvers"].body
    assert decision["decision"] == "Block" and decision["decidedById"] == ALICE
    assert [ip["address"] for ip in decision["targets"]["ips"]] == [bad]
    assert {ip["address"] for ip in decision["targets"]["notBlocked"]} == {harmless, "10.0.0.5"}
    for action in ("Confirm_user_compromised", "Revoke_sessions", "Disable_user", "Block_IP"):
        assert result[action].status == "Succeeded", (action, result[action].error, result.timeline)
    assert result["Isolate_host"].status == "Skipped" and result["Close_incident_and_ticket"].status == "Skipped"
    common_effects(clean_stack, incident)
    assert clean_stack.arm.incident(incident["object"]["id"])["properties"]["status"] != "Closed"
    # What the response routes received: exactly the listed targets.
    assert [i["indicatorValue"] for i in clean_stack.mde.indicators()] == [bad]
    assert bad in host.get("response/blocklist").text.split() and harmless not in host.get("response/blocklist").text
    assert clean_stack.graph.user(ADELE)["accountEnabled"] is False
    assert clean_stack.mde.actions() == []


@pytest.mark.skipif(importlib.util.find_spec("response") is None, reason="the response area is not in the tree yet")
def test_block_isolates_the_listed_host_when_isolation_is_on(clean_stack, host, incident):
    clean_stack.mde.add_machine("7d3c9b2a1f0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c", "ws-fin-0042.corp.contoso.com")
    run = Started(host, PLAYBOOK, incident, isolateHost=True)
    assert click(clean_stack, host, "alice@contoso.com", "Block").status_code == 200
    result = run.join()
    (listed,) = result["Ask_approvers"].body["targets"]["hosts"]
    assert listed["fqdn"] == "ws-fin-0042.corp.contoso.com"
    assert result["Isolate_host"].status == "Succeeded", result.timeline
    assert {ip["address"] for ip in result["Ask_approvers"].body["targets"]["ips"]} <= {"203.0.113.45",
                                                                                       "198.51.100.23"}
    assert [a["type"] for a in clean_stack.mde.actions()] == ["Isolate"]
