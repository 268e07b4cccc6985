"""The ServiceNow part of ``make demo``: a ticket is created for incident 4711, and a resolution
made in ServiceNow flows back to Sentinel.

``run(stack, host, say)`` is called by ``localdev/demo.py`` with its running stack, function host and
timeline printer. The Sentinel side goes through the deployed playbook definition
(``infra/playbooks/sync-servicenow-outbound.json``), the ServiceNow side through what a business rule
sends (a signed push), and the timer through the host's admin API, as in Azure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "infra" / "playbooks" / "sync-servicenow-outbound.json"
SAMPLES = ROOT / "tests" / "fixtures"

Say = Callable[..., None]


def _writes(stack: Any) -> tuple[int, int]:
    servicenow = sum(1 for r in stack.snow.received if r.method in ("POST", "PUT", "PATCH", "DELETE"))
    return servicenow, len(stack.arm.requests_to("PUT"))


def _sync(stack: Any, runner: PlaybookRunner, body: dict, what: str, say: Say) -> dict:
    say(f"Sentinel: {what} -> automation rule runs playbook '{runner.name}'")
    result = runner.run(body)
    action = result.actions["Sync_ServiceNow_ticket"]
    for line in result.timeline[1:-1]:
        say(f"playbook: {line}", 1)
    if result.status != "Succeeded":
        say(f"playbook run {result.status}: {action.error or action.body}", 1)
        raise SystemExit(1)
    return action.body


def _poll(host: Any, say: Say) -> dict:
    """Fire the timer through the admin API (202 at once) and wait until the host counts the run finished."""
    def status() -> dict:
        return requests.get(f"{host.url}/api/sync/servicenow/status", headers={"x-functions-key": host.function_key},
                            timeout=30).json()["poll"]

    before = status()["runs"]
    requests.post(f"{host.url}/admin/functions/servicenow_poll", json={"input": ""},
                  headers={"x-functions-key": host.master_key}, timeout=30).raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = status()
        if now["runs"] > before:
            return now["last"]
        time.sleep(0.05)
    say("timer run did not finish within 60 s", 1)
    raise SystemExit(1)


def run(stack: Any, host: Any, say: Say) -> None:
    """Create the ticket of incident 4711, then resolve it in ServiceNow and watch Sentinel follow."""
    from localdev.stack import SNOW_WEBHOOK_SECRET
    from sync.webhook import SIGNATURE_HEADER, sign

    body = json.loads((SAMPLES / "incident-trigger.json").read_text())
    incident_id = body["object"]["id"]
    try:
        stack.arm.incident(incident_id)
    except KeyError:
        stack.arm.seed_from_trigger(body)
    say(f"ServiceNow Table API {stack.snow.url} (incident, sys_journal_field), integration user "
        f"{host.env['SERVICENOW_USERNAME']}")
    with PlaybookRunner(load_playbook(PLAYBOOK), bicep_parameters(host.url, host.function_key),
                        name="Sync-ServiceNow") as runner:
        summary = _sync(stack, runner, body, "incident 4711 created", say)
        ticket = stack.snow.record(summary["ticket"]["sysId"])
        say(f"ServiceNow: {ticket['number']} created: '{ticket['short_description']}'", 1)
        say(f"impact {ticket['impact']} / urgency {ticket['urgency']} -> priority {ticket['priority']}; state "
            f"{ticket['state']} (New); correlation_id {ticket['correlation_id']} ({ticket['correlation_display']})", 2)
        notes = stack.snow.journal(ticket["sys_id"])
        if notes:
            say(f"{len(notes)} existing Sentinel comment(s) copied as work note(s) (the VirusTotal table)", 2)
        labels = [label["labelName"] for label in stack.arm.incident(incident_id)["properties"]["labels"]]
        say(f"Sentinel: comment with the ticket link written; labels now {labels}", 1)

        before = _writes(stack)
        again = _sync(stack, runner, body, "the same trigger fires again (Logic App retry)", say)
        wrote = tuple(after - was for after, was in zip(_writes(stack), before, strict=True))
        say(f"same ticket {again['ticket']['number']}, created={again['created']}; writes: ServiceNow {wrote[0]}, "
            f"Sentinel {wrote[1]}", 1)

        print()
        say(f"ServiceNow: megan.bowen adds a work note and resolves {ticket['number']} "
            "(close code 'Solution provided')")
        note = "Called Adele: the 09:41 sign-in was not hers. Password reset, device isolated."
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", work_notes=note)
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", state="6", close_code="Solution provided",
                             close_notes="Phished credentials; password reset and sessions revoked.")
        record = stack.snow.record(ticket["sys_id"])
        push = json.dumps({"sys_id": record["sys_id"], "number": record["number"],
                           "sys_mod_count": record["sys_mod_count"], "sys_updated_on": record["sys_updated_on"]})
        say("business rule: POST /api/sync/servicenow/inbound (function key + X-ServiceNow-Signature)", 1)
        answer = requests.post(f"{host.url}/api/sync/servicenow/inbound", data=push.encode(), timeout=60,
                               headers={"Content-Type": "application/json", "x-functions-key": host.function_key,
                                        SIGNATURE_HEADER: sign(push.encode(), SNOW_WEBHOOK_SECRET)}).json()
        incident = stack.arm.incident(incident_id)["properties"]
        say(f"<- {answer['sentinel']}", 1)
        say(f"Sentinel: incident 4711 {incident['status']} as {incident['classification']}/"
            f"{incident['classificationReason']}: '{incident['classificationComment']}'", 1)
        copied = [c for c in stack.arm.comments(incident_id) if "Called Adele" in c["properties"]["message"]]
        say(f"Sentinel: the work note is now comment {copied[0]['name'][:8]}…", 1)

        print()
        before = _writes(stack)
        _sync(stack, runner, {**load_updated(), "object": stack.arm.incident(incident_id)},
              "incident 4711 updated (by the sync itself)", say)
        snow_before = len(stack.snow.received)
        polled = _poll(host, say)
        say(f"timer servicenow_poll: {len(stack.snow.received) - snow_before} ServiceNow request(s), "
            f"examined {polled.get('examined')}, synced {polled.get('synced')}", 0)
        wrote = tuple(after - was for after, was in zip(_writes(stack), before, strict=True))
        say(f"no echo: writes since the resolution came back: ServiceNow {wrote[0]}, Sentinel {wrote[1]}", 1)

        print()
        say(f"ServiceNow: the auto-close job closes {ticket['number']} (state 7: read-only for the integration user)")
        stack.snow.update_as(ticket["sys_id"], "system", state="7")
        stack.snow.advance(30)
        polled = _poll(host, say)
        closed = [c for c in stack.arm.comments(incident_id) if "is closed" in c["properties"]["message"]]
        say(f"timer servicenow_poll: synced {polled.get('synced')}; Sentinel: {len(closed)} note that the ticket is "
            "closed and no longer written to", 1)
        say("Sentinel: an analyst reopens incident 4711 (the attacker came back)")
        stack.arm.touch(incident_id, status="Active")
        reopened = _sync(stack, runner, {**load_updated(), "object": stack.arm.incident(incident_id)},
                         "incident 4711 updated (reopened)", say)
        follow_up = stack.snow.record(reopened["ticket"]["sysId"])
        say(f"ServiceNow: follow-up {follow_up['number']} opened (parent_incident {ticket['number']}, state "
            f"{follow_up['state']}); {ticket['number']} stays closed", 1)


def load_updated() -> dict:
    return json.loads((SAMPLES / "incident-trigger-updated.json").read_text())


__all__ = ["run"]
