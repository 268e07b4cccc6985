"""IP blocking end to end: Defender indicators, the pack's block list and the firewall feed over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from localdev.emulators.entra import DEPLOYED_ROLES, MANAGED_IDENTITY, MDE_AUDIENCE
from tests.conftest import HostClient
from tests.fixtures import INCIDENT_4711, sample
from tests.response.helpers import (
    assert_never_edited,
    comments,
    fresh_ips,
    incident,
    ip_entity,
    outcomes,
    with_retry_policy,
)

BLOCK, UNBLOCK, FEED = "response/block-ip", "response/unblock-ip", "response/blocklist"
pytestmark = pytest.mark.e2e


def indicator_posts(stack) -> list:
    """Every indicator written: one per submit, one per entry of an import."""
    submits = stack.mde.requests_to("POST", r"/api/indicators$")
    imports = stack.mde.requests_to("POST", r"/api/indicators/import$")
    imported = [item for request in imports for item in request.json["Indicators"]]
    return submits + imported


def test_several_addresses_are_written_in_one_import_one_address_in_one_submit(clean_stack, host):
    stack = clean_stack
    ips = fresh_ips(3)
    assert host.post(BLOCK, incident(stack, *(ip_entity(ip) for ip in ips))).status_code == 200
    (batch,) = stack.mde.requests_to("POST", r"/api/indicators/import$")
    assert sorted(i["indicatorValue"] for i in batch.json["Indicators"]) == sorted(ips)
    assert stack.mde.requests_to("POST", r"/api/indicators$") == []
    (single,) = fresh_ips(1)
    assert host.post(BLOCK, incident(stack, ip_entity(single))).status_code == 200
    assert [r.json["indicatorValue"] for r in stack.mde.requests_to("POST", r"/api/indicators$")] == [single]


def feed(host) -> list[str]:
    response = host.get(FEED)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return response.text.splitlines()


def test_block_creates_indicators_and_feeds_the_firewalls_once(clean_stack, host):
    stack = clean_stack
    ips = fresh_ips(2)
    body = incident(stack, *(ip_entity(ip) for ip in [*ips, "10.0.0.5"]), title="C2 beacon from finance")
    response = host.post(BLOCK, body)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert outcomes(summary) == {ips[0]: "done", ips[1]: "done", "10.0.0.5": "refused"}
    indicators = {i["indicatorValue"]: i for i in stack.mde.indicators()}
    assert set(indicators) == set(ips)
    number = body["object"]["properties"]["incidentNumber"]
    for indicator in indicators.values():
        assert (indicator["indicatorType"], indicator["action"], indicator["severity"]) == \
               ("IpAddress", "AlertAndBlock", "High")
        assert f"incident {number}" in indicator["title"] and "C2 beacon from finance" in indicator["description"]
        expires = datetime.fromisoformat(indicator["expirationTime"].replace("Z", "+00:00"))
        assert timedelta(hours=71) < expires - datetime.now(UTC) <= timedelta(hours=72)
    assert set(ips) <= set(feed(host))
    assert "10.0.0.5" not in feed(host)

    again = host.post(BLOCK, body)  # a retry, or the playbook again
    assert outcomes(again.json()) == {ips[0]: "already", ips[1]: "already", "10.0.0.5": "refused"}
    assert len(indicator_posts(stack)) == 2 and len(stack.mde.indicators()) == 2
    (comment,) = comments(stack, body)
    assert "done" in comment["properties"]["message"] and "private address" in comment["properties"]["message"]


def test_unblock_removes_both_and_is_idempotent(clean_stack, host):
    stack = clean_stack
    ips = fresh_ips(1)
    body = incident(stack, ip_entity(ips[0]))
    assert host.post(BLOCK, body).status_code == 200
    assert ips[0] in feed(host)
    response = host.post(UNBLOCK, body)
    assert response.status_code == 200 and outcomes(response.json()) == {ips[0]: "done"}
    assert stack.mde.indicators() == [] and ips[0] not in feed(host)
    again = host.post(UNBLOCK, body)
    assert outcomes(again.json()) == {ips[0]: "already"}
    assert len(stack.mde.requests_to("DELETE", r"/api/indicators/")) == 1


def test_sample_incident_and_entity_trigger(clean_stack, host):
    stack = clean_stack
    stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    entity = host.post(BLOCK, sample("entity-trigger-ip.json"))
    assert entity.status_code == 200 and outcomes(entity.json()) == {"198.51.100.23": "done"}
    assert len(stack.arm.comments(INCIDENT_4711)) == 1
    alert = host.post(BLOCK, sample("alert-trigger.json"))
    assert outcomes(alert.json()) == {"203.0.113.45": "done", "198.51.100.23": "already", "10.0.0.5": "refused"}
    assert alert.json()["auditComment"] is None
    assert {"198.51.100.23", "203.0.113.45"} <= set(feed(host))
    host.post(UNBLOCK, sample("alert-trigger.json"))  # leave the shared addresses unblocked for other tests


SOC_PORTAL = "9e1d2c3b-0000-4000-8000-00000000a11f"  # the SOC's own application (portal, TI connector)


def soc_exclusion(stack, ip: str) -> dict:
    """An Allowed indicator created by *another* application than the pack's, as the SOC makes them."""
    token = stack.entra.issue(MDE_AUDIENCE, app_id=SOC_PORTAL, roles=["Ti.ReadWrite"])
    allowed = requests.post(f"{stack.mde.url}/api/indicators", headers={"Authorization": f"Bearer {token}"},
                            timeout=5, json={"indicatorValue": ip, "indicatorType": "IpAddress", "action": "Allowed",
                                             "title": "partner VPN", "description": "exclusion"}).json()
    assert allowed["createdBy"] == SOC_PORTAL
    return allowed


def test_an_allowed_indicator_of_another_application_wins(clean_stack, host):
    stack = clean_stack
    ip = fresh_ips(1)[0]
    allowed = soc_exclusion(stack, ip)
    response = host.post(BLOCK, incident(stack, ip_entity(ip)))
    assert response.status_code == 409 and allowed["id"] in response.json()["error"]["message"]
    assert stack.mde.indicators()[0]["action"] == "Allowed" and ip not in feed(host)


def test_without_ti_readwrite_all_the_exclusion_is_invisible_which_is_why_the_pack_needs_it(clean_stack):
    """With Ti.ReadWrite only, Defender lists the pack's own indicators: the SOC's exclusion is not seen and the
    submit (an upsert by value) turns it into a block. The deployment grants Ti.ReadWrite.All for that reason
    (tests/response/test_permissions.py keeps infra to it)."""
    stack = clean_stack
    ip = fresh_ips(1)[0]
    soc_exclusion(stack, ip)
    stack.entra.grant(MANAGED_IDENTITY, *(DEPLOYED_ROLES - {"Ti.ReadWrite.All"} | {"Ti.ReadWrite"}))
    process = None
    try:
        process = stack.host()  # a fresh process: its first token carries the narrower roles
        response = HostClient(process).post(BLOCK, incident(stack, ip_entity(ip)))
    finally:
        stack.entra.grant(MANAGED_IDENTITY, *DEPLOYED_ROLES)
        if process is not None:
            process.stop()
    assert response.status_code == 200 and outcomes(response.json()) == {ip: "done"}
    assert stack.mde.indicators()[0]["action"] == "AlertAndBlock"  # the hazard Ti.ReadWrite.All prevents


def test_blast_radius_and_dry_run(clean_stack, host):
    stack = clean_stack
    capped = host.post(BLOCK, incident(stack, *(ip_entity(ip) for ip in fresh_ips(4))))
    assert capped.status_code == 409 and capped.json()["error"]["code"] == "BlastRadiusExceeded"
    ips = fresh_ips(2)
    dry = host.post(BLOCK + "?dryRun=true", incident(stack, *(ip_entity(ip) for ip in ips)))
    assert dry.status_code == 200 and set(outcomes(dry.json()).values()) == {"would"}
    assert indicator_posts(stack) == [] and not set(ips) & set(feed(host))


def test_throttled_indicator_submission_is_retried(clean_stack, host):
    stack = clean_stack
    ip = fresh_ips(1)[0]
    stack.mde.fail(429, path=r"/api/indicators$", method="POST", retry_after=1)
    stack.mde.fail(500, path=r"/api/indicators$", method="GET")
    response = host.post(BLOCK, incident(stack, ip_entity(ip)))
    assert response.status_code == 200 and outcomes(response.json()) == {ip: "done"}
    assert stack.mde.faults_served == 2 and len(stack.mde.indicators()) == 1


def test_defender_outage_answers_retryable_and_the_retry_completes(clean_stack, host):
    stack = clean_stack
    ip = fresh_ips(1)[0]
    body = incident(stack, ip_entity(ip))
    stack.mde.fail(503, path=r"/api/indicators", times=20)
    response = host.post(BLOCK, body)
    assert response.status_code == 502 and int(response.headers["Retry-After"]) > 0
    assert ip not in feed(host)
    stack.mde.clear_faults()
    assert outcomes(host.post(BLOCK, body).json()) == {ip: "done"}
    # New information arrives as a new comment; the first one, which says why nothing was done, is kept as it
    # was (issue #15.11: no edits). Nothing is lost: both are there, in order.
    first, second = (c["properties"]["message"] for c in comments(stack, body))
    assert "HTTP 503" in first and "done" not in first
    assert "done" in second and ip in second
    assert_never_edited(stack, body)
    again = host.post(BLOCK, body)  # a retry after success: the same content, the same comment
    assert outcomes(again.json()) == {ip: "already"} and len(comments(stack, body)) == 2
    assert again.json()["auditComment"] == comments(stack, body)[1]["name"]
    assert_never_edited(stack, body)


def test_feed_needs_the_function_key(host):
    assert host.get(FEED, key=None).status_code == 401


def test_concurrent_blocks_create_one_indicator_and_one_entry(clean_stack, host):
    stack = clean_stack
    ip = fresh_ips(1)[0]
    body = incident(stack, ip_entity(ip))
    with ThreadPoolExecutor(4) as pool:  # each copy under the Logic App's retry policy: a busy target is a 429
        statuses = [r.status_code for r, _ in pool.map(lambda _: with_retry_policy(lambda: host.post(BLOCK, body)),
                                                       range(4))]
    assert statuses == [200] * 4
    assert len(stack.mde.indicators()) == 1 and feed(host).count(ip) == 1 and len(comments(stack, body)) == 1


def test_an_entity_without_an_address_is_a_skipped_row_not_dropped(clean_stack, host):
    """Issue #15.10: an IP entity with an empty address (or one that does not parse) shows as a skipped row with
    its reason, in the answer and the audit comment, beside the addresses that were blocked."""
    stack = clean_stack
    ip = fresh_ips(1)[0]
    body = incident(stack, ip_entity(ip), ip_entity(""), ip_entity("not-an-address"))
    response = host.post(BLOCK, body)
    assert response.status_code == 200, response.text
    rows = {(r["target"], r["outcome"]): r["detail"] for r in response.json()["results"]}
    assert rows[(ip, "done")]
    assert rows[("(ip entity without a value)", "skipped")] == "IP entity without an address"
    assert rows[("not-an-address", "skipped")] == "not an IP address"
    (comment,) = comments(stack, body)
    assert "IP entity without an address" in comment["properties"]["message"]


def test_nothing_to_act_on_is_the_documented_400_naming_the_skipped_entities(clean_stack, host):
    stack = clean_stack
    body = incident(stack, ip_entity(""))
    response = host.post(BLOCK, body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "no IP entity to act on" in message and "1 skipped" in message and "without an address" in message
    (comment,) = comments(stack, body)  # audited, with the skipped row
    assert "IP entity without an address" in comment["properties"]["message"]
    assert stack.mde.requests_to("GET", r"/api/indicators") == []
