"""The compromised-user playbook in ``make demo``: ticket, Teams / Slack notice, approval mail, a sign-in, a
decision, the outcome.

``run(stack, host, say)`` is called by ``localdev/demo.py`` with a started ``Stack``, its ``HostProcess``
and the demo's timeline printer. It runs ``infra/playbooks/orchestration-compromised-user.json`` in the
local playbook runner; a channel member who is no approver is refused; the approver signs in through the
app's own sign-in (the Entra emulator's sign-in page), opens the mailed link
(the page lists the targets) and confirms; it prints what happened on every side. Block is played when the
response area is in the tree; Ignore always.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from localdev.easyauth import press
from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook
from localdev.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "infra" / "playbooks" / "orchestration-compromised-user.json"
SAMPLE = ROOT / "tests" / "fixtures" / "incident-trigger.json"
LINK = re.compile(r"https?://[^\s\"'<>]+/api/orchestration/approvals/[0-9a-f]{32}/[A-Za-z_-]+\?[^\s\"'<>]+")
REVIEW = re.compile(r"https?://[^\s\"'<>\\]+/api/orchestration/approvals/[0-9a-f]{32}/review\?[^\s\"'<>\\]+")


def sample_incident(number: int, name: str = "demo-orchestration") -> dict:
    """The sample incident under its own id, number and URL (stable across demo runs)."""
    body = json.loads(SAMPLE.read_text())
    guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}-{number}"))
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    obj["properties"]["incidentNumber"] = number
    obj["properties"]["incidentUrl"] = obj["properties"]["incidentUrl"].rsplit("/", 1)[0] + "/" + guid
    return copy.deepcopy(body)


def _wait(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise RuntimeError("the demo waited too long for the approval's mail and notice")


def played(outcome: dict[str, Any], say: Callable[..., None]) -> Any:
    """The finished run of a playbook played in a thread, its timeline printed; exits the demo if it hung."""
    result = outcome.get("result")
    if result is None:
        say("the playbook run did not finish", 1)
        raise SystemExit(1)
    for line in result.timeline[1:]:
        say(f"playbook: {line}", 1)
    return result


def _play(stack, host, say: Callable[..., None], number: int, approver: str, choice: str) -> None:
    incident = sample_incident(number)
    incident_id = stack.arm.seed_from_trigger(incident)
    mails_before, teams_before, slack_before = len(stack.outbox.sent), len(stack.teams.messages), \
        len(stack.slack.messages)
    runner = PlaybookRunner(load_playbook(PLAYBOOK), bicep_parameters(host.url, host.function_key),
                            name="Compromised-User-Approval")
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run(incident)), daemon=True)
    say(f"Sentinel: incident {number} created, 'Sign-in from anonymizing proxy…' (High, account adele.vance) "
        f"-> playbook '{runner.name}'")
    try:
        thread.start()
        mail = _wait(lambda: [m for m in stack.outbox.sent[mails_before:] if approver in m["to"]])[0]
        say(f"Graph sendMail from {mail['from']}: {len(stack.outbox.sent) - mails_before} approval mail(s), "
            f"one per approver, each with personal links: '{mail['subject'][:60]}'", 1)
        card = json.dumps(_wait(lambda: [m for m in stack.teams.messages[teams_before:]
                                         if "Approval needed" in json.dumps(m)])[-1])
        review = next(link.replace("&amp;", "&") for link in REVIEW.findall(card))
        say("Teams / Slack: a notice with the targets, the deadline and one Review link; no decision links", 1)
        mallory = requests.Session()
        Stack.sign_in(mallory, host.url, "mallory@contoso.com")
        refused = mallory.get(review, timeout=30)
        say(f"mallory@contoso.com (reads the SOC channel, not an approver) signs in and opens Review: HTTP "
            f"{refused.status_code}, 'not an approver', the page lists who may decide", 1)
        link = next(link.replace("&amp;", "&") for link in LINK.findall(mail["body"])
                    if link.split("?")[0].endswith("/" + choice))
        scanner = requests.get(link, timeout=30, allow_redirects=False)
        say(f"{approver}'s mail scanner opens the {choice} link: HTTP {scanner.status_code} to "
            f"{scanner.headers.get('Location', '')[:40]}…, nothing decided", 1)
        browser = requests.Session()
        Stack.sign_in(browser, host.url, approver)
        say(f"{approver} signs in: /api/auth/login -> Entra ID (MSAL, PKCE; the code redeemed with the function "
            "identity's token, no secret) -> the app's signed session cookie", 1)
        page = browser.get(link, timeout=30)
        targets = re.sub(r"<[^>]+>", " ", page.text.split("<h2>", 1)[-1].split("<form", 1)[0])
        say(f"the page (HTTP {page.status_code}) lists the targets: {' '.join(targets.split())[:150]}", 1)
        confirmed = press(browser, link, "confirm", choice)
        say(f"{approver} presses 'Confirm: {choice}': HTTP {confirmed.status_code}, decision recorded in their name", 1)
        replay = press(browser, link, "confirm", choice)
        say(f"the same link pressed again: HTTP {replay.status_code} (single use: already decided)", 1)
        thread.join(60)
    finally:
        runner.close()
    result = played(outcome, say)
    decision = result.actions["Ask_approvers"].body or {}
    targets = decision.get("targets") or {}
    say(f"callback: {decision.get('decision')} by {decision.get('decidedByName')} ({decision.get('decidedById')}); "
        f"Block acts on users {[u['upn'] for u in targets.get('users', [])]}, IPs "
        f"{[i['address'] for i in targets.get('ips', [])]}; not blocked "
        f"{[i['address'] for i in targets.get('notBlocked', [])]}", 1)
    tickets = [r for r in stack.snow.records() if incident["object"]["name"] in json.dumps(r)]
    say(f"ServiceNow: ticket {', '.join(t.get('number', '?') + ' state ' + t.get('state', '?') for t in tickets)}", 1)
    say(f"Teams: {len(stack.teams.messages) - teams_before} card(s); Slack: {len(stack.slack.messages) - slack_before} "
        "message(s) (incident notice + approval question)", 1)
    props = stack.arm.incident(incident_id)["properties"]
    say(f"Sentinel: incident {number} status {props['status']}"
        + (f" ({props.get('classification')})" if props.get("classification") else ""), 1)
    tasks = [f"'{t['properties']['title']}' ({t['properties']['status']})" for t in stack.arm.tasks(incident_id)]
    say(f"Sentinel: analyst tasks {', '.join(tasks)}" if tasks else "Sentinel: no analyst task (not a Block)", 1)
    for comment in stack.arm.comments(incident_id):
        text = re.sub(r"<[^>]+>", " ", comment["properties"]["message"])
        say(f"comment: {' '.join(text.split())[:150]}", 2)


def run(stack, host, say: Callable[..., None]) -> None:
    """Play the compromised-user flow: Ignore (and Block when the response area exists)."""
    say(f"Teams webhook {stack.teams.url}, Slack webhook {stack.slack.url}, ServiceNow {stack.snow.url}, "
        f"Graph mail {stack.mail.url}")
    if importlib.util.find_spec("response") is not None:
        _play(stack, host, say, 4801, "alice@contoso.com", "Block")
        print()
    _play(stack, host, say, 4802, "bob@contoso.com", "Ignore")


if __name__ == "__main__":
    from localdev.demo import standalone

    standalone(run)
