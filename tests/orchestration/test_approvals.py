"""Approvals end to end: subscribe through the local host, mail / Teams / Slack questions on the emulators,
signed links clicked over real HTTP, callbacks to a loopback stand-in for the Logic App."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
import requests

from localdev.stack import APPROVAL_SIGNING_KEY
from tests.conftest import wait_for
from tests.orchestration.helpers import link_for, links_in, resign

ROUTE = "orchestration/approvals"
pytestmark = pytest.mark.e2e


def subscribe(host, callbacks, incident, **extra):
    url = callbacks.new_url()
    body = {"callbackUrl": url, "incident": incident, "choices": ["Block", "Ignore"],
            "question": "Block the user and the IP?", **extra}
    response = host.post(ROUTE, body)
    assert response.status_code in (200, 201), response.text
    return url, response.json()


def mail_links(stack, approver):
    (mail,) = stack.outbox.to(approver)
    return links_in(mail["body"])


def confirm(link, choice=None):
    """What the confirmation page's form does."""
    choice = choice or urlsplit(link).path.rsplit("/", 1)[-1]
    return requests.post(link, data={"confirm": choice}, timeout=30)


def comments_text(stack, incident):
    return " ".join(c["properties"]["message"] for c in stack.arm.comments(incident["object"]["id"]))


def test_approvers_are_asked_once_on_every_channel(clean_stack, host, callbacks, incident):
    url, first = subscribe(host, callbacks, incident)
    assert first["state"] == "pending" and first["approvers"] == ["alice@contoso.com", "bob@contoso.com"]
    assert set(first["asked"].values()) == {"sent"}
    for approver in ("alice@contoso.com", "bob@contoso.com"):
        links = mail_links(clean_stack, approver)
        assert len(links) == 2 and all(f"approver={approver}" in link for link in links)
        assert clean_stack.outbox.to(approver)[0]["from"] == "soc-approvals@contoso.com"
    (card,) = clean_stack.teams.cards
    assert len(links_in(json.dumps(card))) == 4
    assert len(links_in(json.dumps(clean_stack.slack.messages[0]))) == 4
    assert "Approval requested" in comments_text(clean_stack, incident)

    # The Logic App retries the subscribe: same approval, nobody asked twice.
    response = host.post(ROUTE, {"callbackUrl": url, "incident": incident})
    assert response.status_code == 200 and response.json()["approvalId"] == first["approvalId"]
    assert len(clean_stack.outbox.sent) == 2 and len(clean_stack.teams.messages) == 1
    assert len(clean_stack.slack.messages) == 1


def test_get_only_shows_a_page_and_the_first_post_decides(clean_stack, host, callbacks, incident):
    url, approval = subscribe(host, callbacks, incident)
    block = link_for(mail_links(clean_stack, "alice@contoso.com"), "Block")

    # Mail scanners and link previews fetch the link: a page, no decision.
    for _ in range(3):
        page = requests.get(block, timeout=30)
        assert page.status_code == 200 and "<form method=\"post\"" in page.text and "Confirm: Block" in page.text
        assert page.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in \
            page.headers["Content-Security-Policy"]
    assert requests.post(block, timeout=30).status_code == 400  # a bare POST is not the form's
    time.sleep(0.3)
    assert callbacks.bodies(url) == []

    decided = confirm(block)
    assert decided.status_code == 200 and "Recorded: Block" in decided.text
    (callback,) = callbacks.bodies(url)
    assert callback["decision"] == "Block" and callback["decidedBy"] == "alice@contoso.com"
    assert callback["approvalId"] == approval["approvalId"] and callback["incidentArmId"] == incident["object"]["id"]
    text = comments_text(clean_stack, incident)
    assert "Approval decision: Block" in text and "alice@contoso.com" in text

    # Later clicks: the same link replayed, the other approver's links. A clear page, nothing changes.
    replay = confirm(block)
    assert replay.status_code == 409 and "Block (decided by alice@contoso.com" in replay.text
    ignore = link_for(mail_links(clean_stack, "bob@contoso.com"), "Ignore")
    assert requests.get(ignore, timeout=30).status_code == 409
    assert confirm(ignore).status_code == 409
    assert len(callbacks.bodies(url)) == 1
    decisions = [c for c in clean_stack.arm.comments(incident["object"]["id"])
                 if "Approval decision" in c["properties"]["message"]]
    assert len(decisions) == 1


def test_forged_and_foreign_links_are_refused(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    block = link_for(mail_links(clean_stack, "alice@contoso.com"), "Block")
    ignore = link_for(mail_links(clean_stack, "alice@contoso.com"), "Ignore")
    tampered = [
        block.replace("sig=", "sig=x"),                                       # signature altered
        block.replace("approver=alice%40contoso.com", "approver=bob%40contoso.com")
             .replace("approver=alice@contoso.com", "approver=bob@contoso.com"),  # someone else's name
        block.replace("/Block?", "/Ignore?"),                                 # another choice
        block.split("&sig=")[0],                                              # no signature
        ignore.replace(urlsplit(ignore).path.split("/")[-2], "0" * 32),       # another approval
    ]
    for link in tampered:
        assert link != block
        for response in (requests.get(link, timeout=30), confirm(link, "Block")):
            assert response.status_code in (403, 404), link
            assert "Recorded" not in response.text
    # A validly signed link (an insider with the key) for someone not in APPROVERS.
    eve = resign(block, APPROVAL_SIGNING_KEY, approver="eve@contoso.com")
    refused = confirm(eve)
    assert refused.status_code == 403 and "not an approver" in refused.text
    # Validly signed but with another expiry: not a link of this approval.
    later = resign(block, APPROVAL_SIGNING_KEY, expires=str(int(time.time()) + 10**6))
    assert confirm(later).status_code == 403
    assert callbacks.bodies(url) == []
    assert APPROVAL_SIGNING_KEY not in host.host.output and "logic-app-sas" not in host.host.output


def test_timeout_calls_back_timed_out_and_expired_links_refuse(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident, timeout="PT2S")
    block = link_for(mail_links(clean_stack, "alice@contoso.com"), "Block")
    time.sleep(2.2)
    expired = confirm(block)
    assert expired.status_code == 410 and "expired" in expired.text
    (callback,) = callbacks.bodies(url)
    assert callback["decision"] == "TimedOut" and callback["decidedBy"] is None
    assert "Approval timed out" in comments_text(clean_stack, incident)
    assert confirm(block).status_code == 409  # closed now: nothing changes
    assert len(callbacks.bodies(url)) == 1


def test_the_sweep_times_out_approvals_nobody_clicked(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident, timeout="PT1S")
    time.sleep(1.2)
    fired = requests.post(f"{host.host.url}/admin/functions/approval_sweep", json={},
                          headers={"x-functions-key": host.host.master_key}, timeout=30)
    assert fired.status_code == 202
    callback = wait_for(lambda: callbacks.bodies(url))
    assert callback[0]["decision"] == "TimedOut"
    wait_for(lambda: "Approval timed out" in comments_text(clean_stack, incident))


def test_unsubscribe_cancels_and_links_stop_deciding(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    block = link_for(mail_links(clean_stack, "bob@contoso.com"), "Block")
    response = host.http.delete(f"{host.host.url}/api/{ROUTE}", json={"callbackUrl": url},
                                headers={"x-functions-key": host.host.function_key}, timeout=30)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    clicked = confirm(block)
    assert clicked.status_code == 409 and "cancelled" in clicked.text
    assert callbacks.bodies(url) == []
    assert "cancelled" in comments_text(clean_stack, incident)


def test_a_failed_callback_is_redelivered_by_the_sweep(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    callbacks.fail(500, times=20)
    assert confirm(link_for(mail_links(clean_stack, "alice@contoso.com"), "Ignore")).status_code == 200
    callbacks.clear_faults()
    requests.post(f"{host.host.url}/admin/functions/approval_sweep", json={},
                  headers={"x-functions-key": host.host.master_key}, timeout=30)
    delivered = wait_for(lambda: [b for b in callbacks.bodies(url) if b])
    assert delivered[-1]["decision"] == "Ignore"


@pytest.mark.parametrize("callback", [
    "https://evil.example.com/workflows/x/run?sig=1",
    "http://169.254.169.254/metadata/identity/oauth2/token",
    "https://prod-01.westeurope.logic.azure.com.evil.example/x",
    "https://user:pw@prod-01.westeurope.logic.azure.com/x",
    "ftp://prod-01.westeurope.logic.azure.com/x",
    "",
])
def test_callback_urls_outside_logic_apps_are_refused(clean_stack, host, incident, callback):
    response = host.post(ROUTE, {"callbackUrl": callback, "incident": incident})
    assert response.status_code == 400 and "callbackUrl" in response.json()["error"]["message"]
    assert clean_stack.outbox.sent == [] and clean_stack.teams.messages == []


@pytest.mark.parametrize(("body", "problem"), [
    ({"incident": {"incidentArmId": "x"}}, "callbackUrl"),
    ({"choices": ["Block"]}, "choices"),
    ({"choices": ["Block", "TimedOut"]}, "TimedOut"),
    ({"approvers": ["eve@contoso.com"]}, "APPROVERS"),
    ({"timeout": "one hour"}, "ISO 8601"),
    ({"channels": ["pigeon"]}, "channels"),
])
def test_bad_subscribe_bodies_are_400s_naming_the_problem(clean_stack, host, callbacks, incident, body, problem):
    request = {"callbackUrl": callbacks.new_url(), "incident": incident, **body}
    if "callbackUrl" == problem:
        request.pop("callbackUrl")
    response = host.post(ROUTE, request)
    assert response.status_code == 400 and problem in response.json()["error"]["message"]
