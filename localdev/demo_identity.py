"""The user's own confirmation in ``make demo``: "Was this you?" asked by mail, answered both ways.

``run(stack, host, say)`` is called by ``localdev/demo.py``. It runs ``infra/playbooks/response-ask-user.json``
twice in the local playbook runner: Adele (the incident's account) signs in through the app's own sign-in and
answers "No, it wasn't me" (she is confirmed compromised; the SOC is told), then, on a second incident, "Yes, it
was me" -- first refused after a password-only sign-in, then counted after the step-up (a new sign-in with her
authenticator: prompt=login and the MFA authentication context). Another person opening her link is refused.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from localdev.demo_orchestration import played, sample_incident
from localdev.easyauth import press
from localdev.emulators.graph import ADELE
from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook
from localdev.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "infra" / "playbooks" / "response-ask-user.json"
ADELE_UPN = "adele.vance@contoso.com"
LINK = re.compile(r'href="([^"]+/api/response/entra/ask-user/[0-9a-f]{32}\?[^"]+)"')


def _link(stack, mails_before: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        mails = [m for m in stack.outbox.sent[mails_before:] if ADELE_UPN in m["to"]]
        if mails:
            return LINK.findall(mails[0]["body"])[0].replace("&amp;", "&")
        time.sleep(0.05)
    raise RuntimeError("the demo waited too long for the question mail")


def _play(stack, host, say: Callable[..., None], number: int, answer: str) -> None:
    incident = sample_incident(number, "demo-ask-user")
    incident_id = stack.arm.seed_from_trigger(incident)
    mails_before = len(stack.outbox.sent)
    runner = PlaybookRunner(load_playbook(PLAYBOOK), bicep_parameters(host.url, host.function_key),
                            name="Ask-User-Was-This-You")
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run(incident)), daemon=True)
    say(f"Sentinel: incident {number} (account adele.vance) -> playbook '{runner.name}'")
    try:
        thread.start()
        link = _link(stack, mails_before)
        say(f"Graph sendMail to {ADELE_UPN}: 'Was this you?' with a personal link", 1)
        if answer == "No":
            bob = requests.Session()
            Stack.sign_in(bob, host.url, "bob@contoso.com")
            say(f"bob@contoso.com opens Adele's link: HTTP {bob.get(link, timeout=30).status_code} (not for him)", 1)
            adele = requests.Session()
            Stack.sign_in(adele, host.url, ADELE_UPN, mfa=False)
            recorded = press(adele, link, "answer", "No")
            say(f"Adele signs in (password only) and answers 'No, it wasn't me': HTTP {recorded.status_code}", 1)
        else:
            adele = requests.Session()
            Stack.sign_in(adele, host.url, ADELE_UPN, mfa=False)
            refused = press(adele, link, "answer", "Yes")
            say(f"Adele answers 'Yes, it was me' after a password-only sign-in: HTTP {refused.status_code} (Yes needs "
                "a fresh multi-factor sign-in)", 1)
            Stack.sign_in(adele, host.url, ADELE_UPN, mfa=True)  # the page's "Sign in again" link: the step-up
            recorded = press(adele, link, "answer", "Yes")
            acrs = stack.entra.sign_in.redemptions[-1]["acrs"]
            say(f"Adele signs in again with her authenticator (prompt=login, authentication context {acrs}) and "
                f"answers 'Yes': HTTP {recorded.status_code}", 1)
        thread.join(60)
    finally:
        runner.close()
    played(outcome, say)
    risky = stack.graph.risky_user(ADELE) or {}
    say(f"Identity Protection: Adele's risk state {risky.get('riskState', 'none')}; incident status "
        f"{stack.arm.incident(incident_id)['properties']['status']} (answers never close incidents)", 1)
    for comment in stack.arm.comments(incident_id):
        text = re.sub(r"<[^>]+>", " ", comment["properties"]["message"])
        say(f"comment: {' '.join(text.split())[:150]}", 2)


def run(stack, host, say: Callable[..., None]) -> None:
    user = stack.graph.user(ADELE)
    if user and not user["accountEnabled"]:  # the compromised-user demo's Block disabled her (AADSTS50057)
        stack.graph.set_enabled(ADELE, True)
        say("(Adele's account, disabled by the Block above, is enabled again for this part: a disabled account "
            "cannot sign in)")
    _play(stack, host, say, 4851, "No")
    print()
    _play(stack, host, say, 4852, "Yes")


if __name__ == "__main__":
    from localdev.demo import standalone

    standalone(run)
