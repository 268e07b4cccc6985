"""Approvals end to end: subscribe through the local host, mail to each approver and a notice in Teams / Slack,
people signed in through the host's Easy Auth emulation (Entra emulator sign-in), decisions over real HTTP,
callbacks to a loopback stand-in for the Logic App."""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import unquote, urlsplit

import pytest
import requests

from localdev.emulators.graph import PEOPLE, SOC_APPROVERS_GROUP
from localdev.stack import APPROVAL_SIGNING_KEY
from tests.conftest import wait_for
from tests.fixtures import incident_with
from tests.orchestration.helpers import form_of, link_for, links_in, origin_of, person, press, resign, review_link

ROUTE = "orchestration/approvals"
ALICE, BOB, MALLORY, CAROL, DAVE = (p[0] for p in PEOPLE)
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


def comments_text(stack, incident):
    return " ".join(c["properties"]["message"] for c in stack.arm.comments(incident["object"]["id"]))


def sweep(host):
    fired = requests.post(f"{host.host.url}/admin/functions/approval_sweep", json={},
                          headers={"x-functions-key": host.host.master_key}, timeout=30)
    assert fired.status_code == 202


def test_approvers_get_personal_mail_and_channels_a_notice_that_cannot_decide(clean_stack, host, callbacks,
                                                                               incident):
    url, first = subscribe(host, callbacks, incident)
    assert first["state"] == "pending" and first["approvers"] == ["alice@contoso.com", "bob@contoso.com"]
    assert first["asked"] == {"mail:alice@contoso.com": "sent", "mail:bob@contoso.com": "sent", "teams": "accepted",
                              "slack": "sent"}  # a Teams Workflows webhook only accepts (202): issue 15.7
    for approver in ("alice@contoso.com", "bob@contoso.com"):
        links = mail_links(clean_stack, approver)
        assert len(links) == 2 and all(f"approver={approver}" in link for link in links)
        (mail,) = clean_stack.outbox.to(approver)
        assert mail["from"] == "soc-approvals@contoso.com"
        assert "Users to confirm compromised" in mail["body"] and "adele.vance@contoso.com" in mail["body"]
    # Teams and Slack: what is asked, the targets, the deadline, one Review link; no decision link at all.
    for message in (json.dumps(clean_stack.teams.cards[0]), json.dumps(clean_stack.slack.messages[0])):
        assert links_in(message) == [] and "approver=" not in message
        assert urlsplit(review_link(message)).path.endswith("/review")
        assert "Adele Vance" in message and "Decide by" in message
    assert "Approval requested" in comments_text(clean_stack, incident)

    # The Logic App retries the subscribe: same approval, nobody asked twice.
    response = host.post(ROUTE, {"callbackUrl": url, "incident": incident})
    assert response.status_code == 200 and response.json()["approvalId"] == first["approvalId"]
    assert len(clean_stack.outbox.sent) == 2 and len(clean_stack.teams.messages) == 1
    assert len(clean_stack.slack.messages) == 1


def test_the_page_needs_a_sign_in_and_only_its_own_form_decides(clean_stack, host, callbacks, incident):
    url, approval = subscribe(host, callbacks, incident)
    block = link_for(mail_links(clean_stack, "alice@contoso.com"), "Block")

    # Mail scanners and link previews fetch the link: sent to the sign-in, nothing decided.
    for _ in range(2):
        anonymous = requests.get(block, timeout=30, allow_redirects=False)
        assert anonymous.status_code == 302
        location = anonymous.headers["Location"]
        assert location.startswith("/api/auth/login?redirect=")  # the app's own sign-in (SIGN_IN_MODE=app)
        assert unquote(location.split("=", 1)[1]) == block[len(origin_of(block)):]
    assert requests.post(block, data={"confirm": "Block"}, timeout=30).status_code == 401

    alice = person(clean_stack, host.host.url, "alice@contoso.com")
    page = alice.get(block, timeout=30)
    assert page.status_code == 200 and '<form method="post"' in page.text and "Confirm: Block" in page.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.text
    assert "Alice Approver" in page.text and "Adele Vance (adele.vance@contoso.com)" in page.text
    assert page.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in \
        page.headers["Content-Security-Policy"]
    token = form_of(page)["csrf"]
    # Cross-site posts with alice's cookie: no token, a foreign origin, no origin at all.
    assert alice.post(block, data={"confirm": "Block"}, headers={"Origin": origin_of(block)},
                      timeout=30).status_code == 403
    assert alice.post(block, data={"confirm": "Block", "csrf": token}, headers={"Origin": "https://evil.example"},
                      timeout=30).status_code == 403
    assert alice.post(block, data={"confirm": "Block", "csrf": token}, timeout=30).status_code == 403
    # Another person's token (bob's session) does not work with alice's session.
    bob = person(clean_stack, host.host.url, "bob@contoso.com")
    bob_token = form_of(bob.get(link_for(mail_links(clean_stack, "bob@contoso.com"), "Block"), timeout=30))["csrf"]
    assert alice.post(block, data={"confirm": "Block", "csrf": bob_token}, headers={"Origin": origin_of(block)},
                      timeout=30).status_code == 403
    time.sleep(0.3)
    assert callbacks.bodies(url) == []

    decided = alice.post(block, data={"confirm": "Block", "csrf": token}, headers={"Origin": origin_of(block)},
                         timeout=30)
    assert decided.status_code == 200 and "Recorded: Block" in decided.text
    (callback,) = callbacks.bodies(url)
    assert callback["decision"] == "Block" and callback["decidedBy"] == "alice@contoso.com"
    assert callback["decidedById"] == ALICE and callback["decidedByName"] == "Alice Approver"
    assert callback["approvalId"] == approval["approvalId"] and callback["incidentArmId"] == incident["object"]["id"]
    assert callback["targets"]["entities"]["users"][0]["AadUserId"] == "b1a2c3d4-e5f6-4789-8abc-def012345678"
    text = comments_text(clean_stack, incident)
    assert "Approval decision: Block" in text and "Alice Approver (alice@contoso.com, object id " + ALICE in text
    assert "signed in with Microsoft Entra ID" in text

    # Later clicks: the same link replayed, the other approver's links. A clear page, nothing changes.
    replay = press(alice, block, "Block")
    assert replay.status_code == 409 and "Block (by Alice Approver" in replay.text
    assert press(bob, link_for(mail_links(clean_stack, "bob@contoso.com"), "Ignore"), "Ignore").status_code == 409
    assert len(callbacks.bodies(url)) == 1
    decisions = [c for c in clean_stack.arm.comments(incident["object"]["id"])
                 if "Approval decision" in c["properties"]["message"]]
    assert len(decisions) == 1


def test_a_channel_member_who_is_not_an_approver_cannot_decide(clean_stack, host, callbacks, incident):
    """The attack of issue 13: mallory reads the SOC channel and alice's forwarded mail; she decides nothing."""
    url, _ = subscribe(host, callbacks, incident)
    review = review_link(json.dumps(clean_stack.teams.cards[0]))
    alice_ignore = link_for(mail_links(clean_stack, "alice@contoso.com"), "Ignore")
    mallory = person(clean_stack, host.host.url, "mallory@contoso.com")
    for link in (review, alice_ignore):
        page = mallory.get(link, timeout=30)
        assert page.status_code == 403 and "not an approver" in page.text
        assert "Who may decide" in page.text and "Alice Approver (alice@contoso.com)" in page.text
        forged = mallory.post(link, data={"confirm": "Ignore"}, headers={"Origin": origin_of(link)}, timeout=30)
        assert forged.status_code == 403 and "Recorded" not in forged.text
    # A client-supplied principal header claiming to be alice is stripped by Easy Auth: no sign-in, no decision.
    claim = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": ALICE},
        {"typ": "upn", "val": "alice@contoso.com"}]}).encode()).decode()
    spoofed = requests.post(alice_ignore, data={"confirm": "Ignore"}, timeout=30,
                            headers={"X-MS-CLIENT-PRINCIPAL": claim, "X-MS-CLIENT-PRINCIPAL-ID": ALICE,
                                     "Origin": origin_of(alice_ignore)})
    assert spoofed.status_code == 401
    time.sleep(0.3)
    assert callbacks.bodies(url) == []
    assert "Approval decision" not in comments_text(clean_stack, incident)


def test_an_approver_decides_only_through_their_own_link_or_the_review_page(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    bob = person(clean_stack, host.host.url, "bob@contoso.com")
    refused = bob.get(link_for(mail_links(clean_stack, "alice@contoso.com"), "Block"), timeout=30)
    assert refused.status_code == 403 and "mailed to Alice Approver" in refused.text
    review = review_link(json.dumps(clean_stack.slack.messages[0]))
    page = bob.get(review, timeout=30)
    assert page.status_code == 200 and "Decide this approval" in page.text
    assert 'value="Block"' in page.text and 'value="Ignore"' in page.text
    decided = bob.post(review, data={**form_of(page), "confirm": "Ignore"}, headers={"Origin": origin_of(review)},
                       timeout=30)
    assert decided.status_code == 200 and "Recorded: Ignore" in decided.text
    (callback,) = callbacks.bodies(url)
    assert callback["decision"] == "Ignore" and callback["decidedById"] == BOB
    assert "through the review page" in comments_text(clean_stack, incident)


def test_forged_and_foreign_links_are_refused(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    block = link_for(mail_links(clean_stack, "alice@contoso.com"), "Block")
    ignore = link_for(mail_links(clean_stack, "alice@contoso.com"), "Ignore")
    tampered = [
        block.replace("sig=", "sig=x"),                                       # signature altered
        block.replace("approver=alice@contoso.com", "approver=bob@contoso.com"),  # someone else's name
        block.replace("/Block?", "/Ignore?"),                                 # another choice
        block.split("&sig=")[0],                                              # no signature
        ignore.replace(urlsplit(ignore).path.split("/")[-2], "0" * 32),       # another approval
        block.replace("/Block?", "/review?"),                                 # a personal link made a review link
    ]
    alice = person(clean_stack, host.host.url, "alice@contoso.com")
    for link in tampered:
        assert link != block
        for response in (requests.get(link, timeout=30, allow_redirects=False), alice.get(link, timeout=30),
                         alice.post(link, data={"confirm": "Block"}, headers={"Origin": origin_of(link)}, timeout=30)):
            assert response.status_code in (403, 404), link
            assert "Recorded" not in response.text
    # A validly signed link (an insider with the key) for someone this approval did not ask.
    eve = resign(block, APPROVAL_SIGNING_KEY, approver="eve@contoso.com")
    assert alice.get(eve, timeout=30).status_code == 403
    # Validly signed but with another expiry: not a link of this approval.
    later = resign(block, APPROVAL_SIGNING_KEY, expires=str(int(time.time()) + 10**6))
    assert alice.get(later, timeout=30).status_code == 403
    assert callbacks.bodies(url) == []
    assert APPROVAL_SIGNING_KEY not in host.host.output and "logic-app-sas" not in host.host.output


def test_expired_links_show_a_page_and_only_the_sweep_times_out(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident, timeout="PT2S")
    block = link_for(mail_links(clean_stack, "alice@contoso.com"), "Block")
    alice = person(clean_stack, host.host.url, "alice@contoso.com")
    time.sleep(2.2)
    for _ in range(2):  # a GET (and a POST) of an expired approval changes nothing
        expired = alice.get(block, timeout=30)
        assert expired.status_code == 410 and "expired" in expired.text
    time.sleep(0.3)
    assert callbacks.bodies(url) == [] and "Approval timed out" not in comments_text(clean_stack, incident)
    sweep(host)
    (callback,) = wait_for(lambda: callbacks.bodies(url))
    assert callback["decision"] == "TimedOut" and callback["decidedBy"] is None
    wait_for(lambda: "Approval timed out" in comments_text(clean_stack, incident))
    assert alice.get(block, timeout=30).status_code == 409  # closed now: nothing changes
    assert len(callbacks.bodies(url)) == 1


def test_unsubscribe_cancels_and_links_stop_deciding(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    block = link_for(mail_links(clean_stack, "bob@contoso.com"), "Block")
    response = host.http.delete(f"{host.host.url}/api/{ROUTE}", json={"callbackUrl": url},
                                headers={"x-functions-key": host.host.function_key}, timeout=30)
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    clicked = person(clean_stack, host.host.url, "bob@contoso.com").get(block, timeout=30)
    assert clicked.status_code == 409 and "cancelled" in clicked.text
    assert callbacks.bodies(url) == []
    assert "cancelled" in comments_text(clean_stack, incident)


def test_a_failed_callback_is_redelivered_by_the_sweep(clean_stack, host, callbacks, incident):
    url, _ = subscribe(host, callbacks, incident)
    callbacks.fail(500, times=20)
    alice = person(clean_stack, host.host.url, "alice@contoso.com")
    assert press(alice, link_for(mail_links(clean_stack, "alice@contoso.com"), "Ignore"), "Ignore").status_code == 200
    callbacks.clear_faults()
    sweep(host)
    delivered = wait_for(lambda: [b for b in callbacks.bodies(url) if b])
    assert delivered[-1]["decision"] == "Ignore"


def test_block_targets_follow_the_verdicts(clean_stack, host, callbacks):
    """Only IPs rated malicious or suspicious are proposed; a harmless one (0/94) is listed as not blocked."""
    bad, harmless = "203.0.113.202", "198.51.100.202"  # addresses no other test of this module looks up
    clean_stack.vt.set_report(bad, malicious=12, suspicious=1, harmless=55, undetected=26)
    clean_stack.vt.set_report(harmless, harmless=71, undetected=23)
    incident = incident_with(4242, [bad, harmless, "10.0.0.5"], name=str(uuid.uuid4()))
    clean_stack.arm.seed_from_trigger(incident)
    assert host.post("enrichment/ip-reputation", incident).status_code == 200
    _, approval = subscribe(host, callbacks, incident)
    targets = approval["targets"]
    assert [ip["address"] for ip in targets["ips"]] == [bad]
    assert targets["entities"]["ips"] == [{"Type": "ip", "Address": bad}]
    not_blocked = {ip["address"]: ip["reason"] for ip in targets["notBlocked"]}
    assert "harmless (0/94 engines flagged it)" in not_blocked[harmless]
    assert "no VirusTotal verdict" in not_blocked["10.0.0.5"]
    assert targets["hosts"] == [] and targets["entities"]["hosts"] == []  # isolation off: no host proposed
    page = person(clean_stack, host.host.url, "alice@contoso.com").get(
        link_for(mail_links(clean_stack, "alice@contoso.com"), "Block"), timeout=30)
    assert f"{bad}: VirusTotal malicious (13/94 engines flagged it)" in page.text
    assert f"{harmless}: VirusTotal harmless" in page.text


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
    ({"choices": ["Block", "review"]}, "Review"),
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


# -- other configurations: each its own host ---------------------------------------------------------------------
def test_approvers_by_object_id_and_group_and_guest_mail(clean_stack, host_with, callbacks, incident):
    host = host_with(APPROVERS=f"{BOB},{SOC_APPROVERS_GROUP},dave_fabrikam.com#ext#@contoso.onmicrosoft.com")
    url, approval = subscribe(host, callbacks, incident, channels=["email"])
    # bob by object id, carol through the group, dave (a guest) at his mail address, not his UPN.
    assert sorted(m["to"][0] for m in clean_stack.outbox.sent) == ["bob@contoso.com", "carol@contoso.com",
                                                                  "dave@fabrikam.com"]
    carol = person(clean_stack, host.host.url, "carol@contoso.com")
    carols_block = link_for(mail_links(clean_stack, "carol@contoso.com"), "Block")
    alice = person(clean_stack, host.host.url, "alice@contoso.com")  # no APPROVERS entry names her on this host
    assert alice.get(carols_block, timeout=30).status_code == 403
    # Carol leaves the group: her mailed link stops deciding at once.
    clean_stack.graph.remove_member(SOC_APPROVERS_GROUP, CAROL)
    link = link_for(mail_links(clean_stack, "carol@contoso.com"), "Ignore")
    assert carol.get(link, timeout=30).status_code == 403
    clean_stack.graph.add_member(SOC_APPROVERS_GROUP, CAROL)
    assert press(carol, link, "Ignore").status_code == 200
    (callback,) = callbacks.bodies(url)
    assert callback["decidedById"] == CAROL and approval["approvers"] == sorted(approval["approvers"])


def test_approvals_refuse_to_run_where_nobody_can_sign_in(clean_stack, host_with, callbacks, incident):
    # The app's own sign-in without its app registration; App Service Authentication chosen but not in front.
    for overrides, named in (({"SIGN_IN_CLIENT_ID": ""}, "SIGN_IN_CLIENT_ID"),
                             ({"SIGN_IN_MODE": "easyauth"}, "WEBSITE_AUTH_ENABLED")):
        host = host_with(**overrides)
        response = host.post(ROUTE, {"callbackUrl": callbacks.new_url(), "incident": incident})
        assert response.status_code == 500 and named in response.json()["error"]["message"]
    assert clean_stack.outbox.sent == []


def test_sign_in_off_falls_back_to_the_links_holder_and_says_so(clean_stack, host_with, callbacks, incident):
    host = host_with(APPROVAL_REQUIRE_SIGN_IN="false", SIGN_IN_CLIENT_ID="")
    url, _ = subscribe(host, callbacks, incident)
    assert press(requests.Session(), link_for(mail_links(clean_stack, "bob@contoso.com"), "Ignore"),
                 "Ignore").status_code == 200
    (callback,) = callbacks.bodies(url)
    assert callback["decidedBy"] == "bob@contoso.com"
    assert "sign-in is OFF" in comments_text(clean_stack, incident)
    assert requests.get(review_link(json.dumps(clean_stack.teams.cards[0])), timeout=30).status_code == 403


def test_an_approval_offers_no_more_targets_than_the_incidents_blast_radius_budget(clean_stack, host_with, callbacks):
    """Issue 14.8: the cap counts per incident across calls, and applies when targets are proposed: with a cap of 2
    and one address of this incident already blocked, Block is offered one more address; the others are listed
    as not touched, naming the cap."""
    host = host_with(RESPONSE_MAX_TARGETS="2")
    addresses = ["203.0.113.211", "203.0.113.212", "203.0.113.213"]
    for address in addresses:
        clean_stack.vt.set_report(address, malicious=9, harmless=60, undetected=25)
    incident = incident_with(4243, addresses, name=str(uuid.uuid4()))
    clean_stack.arm.seed_from_trigger(incident)
    assert host.post("enrichment/ip-reputation", incident).status_code == 200
    first = {"incidentArmId": incident["object"]["id"], "Entities": [{"Type": "ip", "Address": addresses[0]}]}
    assert host.post("response/block-ip", first).status_code == 200, "one address of the incident blocked already"
    _, approval = subscribe(host, callbacks, incident)
    targets = approval["targets"]
    assert len(targets["ips"]) == 1 and len(targets["entities"]["ips"]) == 1
    capped = [t for t in targets["notTouched"] if "blast-radius cap" in t["reason"]]
    assert len(capped) == 2 and all("RESPONSE_MAX_TARGETS" in t["reason"] for t in capped)


def test_an_incident_full_of_comments_still_gets_its_decision(clean_stack, host, callbacks, incident):
    # Main PUT the approval's comments directly: on an incident holding Sentinel's 100 comments the subscribe
    # failed with Sentinel's 400 and nobody was asked (issue 15.11: every comment goes through the budget).
    from tests.sync.conftest import add_sentinel_comment

    incident_id = incident["object"]["id"]
    for i in range(100):
        add_sentinel_comment(clean_stack, incident_id, f"Analyst note {i}")
    url, approval = subscribe(host, callbacks, incident)
    assert approval["state"] == "pending" and set(approval["asked"].values()) == {"sent", "accepted"}  # Teams: 202
    alice = person(clean_stack, host.host.url, "alice@contoso.com")
    assert press(alice, link_for(mail_links(clean_stack, "alice@contoso.com"), "Ignore"), "Ignore").status_code == 200
    assert wait_for(lambda: callbacks.bodies(url))[0]["decision"] == "Ignore"
    assert len(clean_stack.arm.comments(incident_id)) == 100
    assert not [r for r in clean_stack.arm.requests_to("PUT", r"/comments/") if r.status == 400]
