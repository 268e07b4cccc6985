"""Blocking files, URLs and domains as Defender indicators (issue #18, item 6), end to end over real HTTP: the
enrichment rates the indicators first (VirusTotal emulator -> verdict cache), then block-indicators acts on
what the rating allows, against the Defender emulator (documented validation, per-creator visibility)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from localdev.emulators.entra import MDE_AUDIENCE
from tests.response.helpers import (
    assert_never_edited,
    comments,
    dns_entity,
    file_entity,
    file_with_hashes,
    fresh_domain,
    fresh_sha256,
    incident,
    ip_entity,
    outcomes,
    rate,
    url_entity,
    with_retry_policy,
)

BLOCK, UNBLOCK = "response/block-indicators", "response/unblock-indicators"
SOC_PORTAL = "9e1d2c3b-0000-4000-8000-00000000a11f"  # the SOC's own application (portal, TI connector)
pytestmark = pytest.mark.e2e


def same_incident(stack, body: dict, *entities: dict) -> dict:
    """The trigger body of the same incident, now with ``entities`` (a later run, as after an update)."""
    later = {**body, "object": {**body["object"], "properties": dict(body["object"]["properties"])}}
    later["object"]["properties"]["relatedEntities"] = [
        {"id": f"{body['object']['id']}/entities/later{i}", "name": f"later{i}", **e} for i, e in enumerate(entities)]
    stack.arm.seed_from_trigger(later)
    return later


def audits(stack, body: dict) -> list[dict]:
    """The response audit comments of the incident (the enrichment writes its own beside them)."""
    return [c for c in comments(stack, body) if "response audit" in c["properties"]["message"]]


def indicators(stack) -> dict[str, dict]:
    return {i["indicatorValue"]: i for i in stack.mde.indicators()}


def writes(stack) -> list:
    """Every indicator write request (submits and imports)."""
    return stack.mde.requests_to("POST", r"/api/indicators(/import)?$")


def soc_indicator(stack, value: str, kind: str, action: str, *, expires: datetime | None = None) -> dict:
    """An indicator another application created (the SOC in the portal), over the API as that application."""
    token = stack.entra.issue(MDE_AUDIENCE, app_id=SOC_PORTAL, roles=["Ti.ReadWrite"])
    body = {"indicatorValue": value, "indicatorType": kind, "action": action, "title": "SOC decision",
            "description": "set in the portal", "generateAlert": True}
    if expires is not None:
        body["expirationTime"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = requests.post(f"{stack.mde.url}/api/indicators", headers={"Authorization": f"Bearer {token}"},
                           json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- every kind ------------------------------------------------------------------------------------
def test_each_kind_is_blocked_as_its_defender_indicator_in_one_import(clean_stack, host):
    stack = clean_stack
    digest, name = fresh_sha256(), fresh_domain()
    raw_url = f"https://user:hunter2@{name.upper()}/login/?token=s3cr3t-signature#frag"
    clean = f"https://{name}/login/"
    other = fresh_domain()
    body = incident(stack, file_entity(digest), url_entity(raw_url), dns_entity(other), title="Phishing kit")
    rate(stack, host, body, {digest: "malicious", clean: "malicious", other: "malicious"})

    response = host.post(BLOCK, body)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert outcomes(summary) == {digest: "done", clean: "done", other: "done"}
    assert {r["kind"] for r in summary["results"]} == {"file", "url", "domain"}
    found = indicators(stack)
    assert set(found) == {digest, clean, other}  # the URL exactly as enriched: no userinfo, query or fragment
    assert (found[digest]["indicatorType"], found[digest]["action"]) == ("FileSha256", "BlockAndRemediate")
    assert (found[clean]["indicatorType"], found[clean]["action"]) == ("Url", "Block")
    assert (found[other]["indicatorType"], found[other]["action"]) == ("DomainName", "Block")
    number = body["object"]["properties"]["incidentNumber"]
    for indicator in found.values():
        assert f"incident {number}" in indicator["title"] and "Phishing kit" in indicator["description"]
        assert indicator["generateAlert"] is True and indicator["application"] == "sentinel-playbooks"
        expires = datetime.fromisoformat(indicator["expirationTime"].replace("Z", "+00:00"))
        assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)  # 90 days, as Microsoft's
    (batch,) = writes(stack)  # one write for the call: the Import Indicators API
    assert batch.path.endswith("/import") and len(batch.json["Indicators"]) == 3
    # The URL's secrets never left the tenant and never reached the comment.
    (comment,) = audits(stack, body)
    shown = comment["properties"]["message"] + str([r.body for r in stack.mde.received])
    assert "s3cr3t" not in shown and "hunter2" not in shown and "malicious" in comment["properties"]["message"]
    assert summary["expiresAt"]


def test_one_value_is_one_submit_and_a_retry_writes_nothing(clean_stack, host):
    stack = clean_stack
    name = fresh_domain()
    body = incident(stack, dns_entity(name))
    rate(stack, host, body, {name: "malicious"})
    assert outcomes(host.post(BLOCK, body).json()) == {name: "done"}
    (submit,) = writes(stack)
    assert submit.path.endswith("/api/indicators")
    again = host.post(BLOCK, body)  # the Logic App's retry, or the automation rule again
    assert again.status_code == 200 and outcomes(again.json()) == {name: "already"}
    assert len(writes(stack)) == 1 and len(stack.mde.indicators()) == 1
    assert len(audits(stack, body)) == 1  # the same content: the same comment
    assert_never_edited(stack, body)


def test_a_file_with_several_hashes_is_one_indicator_of_its_sha256(clean_stack, host):
    stack = clean_stack
    digest, sha1, md5 = fresh_sha256(), uuid.uuid4().hex + uuid.uuid4().hex[:8], uuid.uuid4().hex
    body = incident(stack, *file_with_hashes("invoice.exe", sha256=digest, sha1=sha1, md5=md5))
    rate(stack, host, body, {digest: "malicious"})
    response = host.post(BLOCK, body)
    assert outcomes(response.json()) == {f"invoice.exe ({digest})": "done"}
    assert list(indicators(stack)) == [digest]
    md5_only = incident(stack, file_entity(md5, "MD5"))
    stack.mde.reset()
    rate(stack, host, md5_only, {md5: "malicious"})
    assert outcomes(host.post(BLOCK, md5_only).json()) == {md5: "done"}
    assert indicators(stack)[md5]["indicatorType"] == "FileMd5"


# -- guardrails ------------------------------------------------------------------------------------
def test_only_the_configured_verdicts_are_blocked(clean_stack, host):
    stack = clean_stack
    bad, harmless, suspicious, never = fresh_domain(), fresh_domain(), fresh_domain(), fresh_sha256()
    url = f"https://{fresh_domain()}/unseen"
    body = incident(stack, dns_entity(bad), dns_entity(harmless), dns_entity(suspicious), url_entity(url),
                    file_entity(never))
    # ``never`` is not looked up: the enrichment runs on an incident without it.
    looked_up = incident(stack, dns_entity(bad), dns_entity(harmless), dns_entity(suspicious), url_entity(url))
    rate(stack, host, looked_up, {bad: "malicious", harmless: "harmless", suspicious: "suspicious", url: "unknown"})
    response = host.post(BLOCK, body)
    assert response.status_code == 200, response.text
    rows = {r["target"]: (r["outcome"], r["detail"]) for r in response.json()["results"]}
    assert rows[bad][0] == "done" and "malicious" in rows[bad][1]
    for value in (harmless, suspicious, url):
        assert rows[value][0] == "refused" and "BLOCK_INDICATOR_VERDICTS" in rows[value][1]
    assert rows[never] == ("refused", "no VirusTotal verdict yet: run the enrichment first, or add none to "
                                      "BLOCK_INDICATOR_VERDICTS")
    assert set(indicators(stack)) == {bad}


def test_a_url_only_its_host_was_rated_for_uses_the_hosts_verdict(clean_stack, host_with):
    """``VIRUSTOTAL_URL_LOOKUP=domain`` sends VirusTotal a URL's host only: the URL is blocked on that verdict."""
    stack = clean_stack
    client = host_with(VIRUSTOTAL_URL_LOOKUP="domain")
    name = fresh_domain()
    url = f"https://{name}/dropper?id=7"
    body = incident(stack, url_entity(url))
    rate(stack, client, body, {name: "malicious"})
    assert stack.vt.lookups("url") == []
    response = client.post(BLOCK, body)
    (row,) = response.json()["results"]
    assert (row["target"], row["outcome"]) == (f"https://{name}/dropper", "done")
    assert f"of its host {name}" in row["detail"]


def test_none_lets_what_was_never_looked_up_through(clean_stack, host_with):
    stack = clean_stack
    client = host_with(BLOCK_INDICATOR_VERDICTS="malicious,none")
    never = fresh_sha256()
    assert outcomes(client.post(BLOCK, incident(stack, file_entity(never))).json()) == {never: "done"}


def test_internal_protected_and_private_values_are_never_blocked(clean_stack, host_with):
    stack = clean_stack
    client = host_with(INTERNAL_DOMAINS="intranet.example", BLOCK_INDICATOR_VERDICTS="malicious,none")
    body = incident(stack, dns_entity("mail.corp.contoso.com"), dns_entity("wiki.intranet.example"),
                    url_entity("https://sharepoint.contoso.com/sites/x?sig=1"), url_entity("http://10.1.2.3/payload"),
                    dns_entity("update.microsoft.com"), url_entity("https://login.microsoftonline.com/common/oauth2"))
    response = client.post(BLOCK, body)
    assert response.status_code == 409 and response.json()["error"]["code"] == "ResponseRefused"
    (comment,) = audits(stack, body)
    message = comment["properties"]["message"]
    assert "the tenant&#x27;s own domain (corp.contoso.com): never blocked" in message
    assert "internal domain (intranet.example, INTERNAL_DOMAINS): never blocked" in message
    assert "the tenant&#x27;s own domain (contoso.com)" in message and "on 10.1.2.3: private address" in message
    assert "PROTECTED_INDICATORS entry &#x27;*.microsoft.com&#x27;" in message
    assert "PROTECTED_INDICATORS entry &#x27;http*://login.microsoftonline.com/*&#x27;" in message
    assert stack.mde.requests_to("GET", r"/api/indicators") == [] and writes(stack) == []
    assert "sig=1" not in message


def test_without_domain_read_all_no_domain_or_url_is_blocked_but_files_are(clean_stack, host_with):
    """The tenant's verified domains cannot be read: nothing is guessed, every name is refused naming the
    permission (a block of the tenant's own domain would cut every device off from it)."""
    stack = clean_stack
    client = host_with(BLOCK_INDICATOR_VERDICTS="none")  # a fresh process: the domains are read once per process
    stack.graph.directory.readable = False
    digest, name = fresh_sha256(), fresh_domain()
    response = client.post(BLOCK, incident(stack, file_entity(digest), dns_entity(name),
                                           url_entity(f"https://{fresh_domain()}/x")))
    assert response.status_code == 200, response.text
    rows = {r["kind"]: (r["outcome"], r["detail"]) for r in response.json()["results"]}
    assert rows["file"][0] == "done"
    for kind in ("domain", "url"):
        assert rows[kind][0] == "refused" and "Domain.Read.All" in rows[kind][1]
    assert list(indicators(stack)) == [digest]


def test_a_url_on_an_internal_name_written_in_unicode_is_still_internal(clean_stack, host_with):
    client = host_with(INTERNAL_DOMAINS="xn--bcher-kva.example", BLOCK_INDICATOR_VERDICTS="none")
    response = client.post(BLOCK, incident(clean_stack, url_entity("https://shop.bücher.example/cart")))
    assert response.status_code == 409 and "internal domain (xn--bcher-kva.example" in response.text
    assert clean_stack.mde.received == []


def test_a_ftp_url_is_refused_not_sent(clean_stack, host):
    stack = clean_stack
    response = host.post(BLOCK, incident(stack, url_entity(f"ftp://{fresh_domain()}/drop.zip")))
    assert response.status_code == 409 and "Defender URL indicators block http and https" in response.text
    assert stack.mde.received == []


def test_nothing_to_act_on_is_400_and_names_the_skipped_values(clean_stack, host):
    stack = clean_stack
    response = host.post(BLOCK, incident(stack, ip_entity("203.0.113.9"), file_entity("abc123")))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "no file hash, URL or domain entity to act on" in message and "1 skipped" in message
    assert "not an MD5, SHA-1 or SHA-256 hash" in message


def test_the_blast_radius_counts_every_kind_of_the_incident_together(clean_stack, host):
    stack = clean_stack
    values = [fresh_sha256(), fresh_sha256(), fresh_domain(), fresh_domain()]
    entities = [file_entity(values[0]), file_entity(values[1]), dns_entity(values[2]), dns_entity(values[3])]
    body = incident(stack, *entities)
    rate(stack, host, body, dict.fromkeys(values, "malicious"))
    capped = host.post(BLOCK, body)  # four values, cap three: nothing at all
    assert capped.status_code == 409 and capped.json()["error"]["code"] == "BlastRadiusExceeded"
    assert writes(stack) == []
    # Across calls on one incident: two files, then two domains -> the second call would make four.
    files = incident(stack, *entities[:2])
    assert outcomes(host.post(BLOCK, files).json()) == {values[0]: "done", values[1]: "done"}
    refused = host.post(BLOCK, same_incident(stack, files, *entities[2:]))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "BlastRadiusExceeded"
    assert set(indicators(stack)) == set(values[:2])


def test_dry_run_writes_nothing_and_spends_nothing(clean_stack, host):
    stack = clean_stack
    values = [fresh_sha256(), fresh_domain()]
    body = incident(stack, file_entity(values[0]), dns_entity(values[1]))
    rate(stack, host, body, dict.fromkeys(values, "malicious"))
    dry = host.post(BLOCK + "?dryRun=true", body)
    assert dry.status_code == 200 and set(outcomes(dry.json()).values()) == {"would"} and dry.json()["dryRun"]
    assert writes(stack) == [] and "DRY RUN" in audits(stack, body)[0]["properties"]["message"]
    assert set(outcomes(host.post(BLOCK, body).json()).values()) == {"done"}  # the budget is untouched


def test_the_kill_switch_stops_the_action(clean_stack, host_with):
    client = host_with(DISABLED_ACTIONS="block_indicators")
    answer = client.post(BLOCK, incident(clean_stack, dns_entity(fresh_domain())))
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "ActionDisabled"
    assert clean_stack.mde.received == []


# -- what others decided -----------------------------------------------------------------------------
def test_an_allow_of_another_application_wins_on_the_value_a_parent_domain_or_another_hash(clean_stack, host):
    stack = clean_stack
    parent, digest, sha1 = fresh_domain(), fresh_sha256(), uuid.uuid4().hex + uuid.uuid4().hex[:8]
    name, url = fresh_domain(), f"https://cdn.{parent}/kit.js"
    body = incident(stack, dns_entity(name), url_entity(url), *file_with_hashes("tool.exe", sha256=digest, sha1=sha1))
    rate(stack, host, body, {name: "malicious", url: "malicious", digest: "malicious"})
    allows = [soc_indicator(stack, name, "DomainName", "Allowed"),
              soc_indicator(stack, parent, "DomainName", "Allowed"), soc_indicator(stack, sha1, "FileSha1", "Allowed")]
    before = len(writes(stack))
    response = host.post(BLOCK, body)
    assert response.status_code == 409, response.text
    for allow in allows:
        assert f"Defender indicator {allow['id']} allows" in response.json()["error"]["message"]
    assert len(writes(stack)) == before and {i["action"] for i in stack.mde.indicators()} == {"Allowed"}


def test_another_decision_on_the_value_is_not_overwritten(clean_stack, host):
    stack = clean_stack
    url = f"https://{fresh_domain()}/app"
    body = incident(stack, url_entity(url))
    rate(stack, host, body, {url: "malicious"})
    warn = soc_indicator(stack, url, "Url", "Warn")
    response = host.post(BLOCK, body)
    assert response.status_code == 409 and f"Defender indicator {warn['id']} (Warn)" in response.text
    assert indicators(stack)[url]["action"] == "Warn"


def test_an_existing_block_is_kept_or_renewed_never_duplicated(clean_stack, host, host_with):
    stack = clean_stack
    mine, theirs, short = fresh_domain(), fresh_domain(), fresh_domain()
    body = incident(stack, dns_entity(mine), dns_entity(theirs), dns_entity(short))
    rate(stack, host, body, {mine: "malicious", theirs: "malicious", short: "malicious"})
    # The pack's own block, from a deployment with one-hour blocks; the SOC's, one without expiry and one short.
    brief = host_with(BLOCK_INDICATOR_EXPIRY_HOURS="1", BLOCK_INDICATOR_VERDICTS="none")  # its own tables
    assert outcomes(brief.post(BLOCK, incident(stack, dns_entity(mine))).json()) == {mine: "done"}
    first = indicators(stack)[mine]
    forever = soc_indicator(stack, theirs, "DomainName", "Block")
    soon = soc_indicator(stack, short, "DomainName", "Block", expires=datetime.now(UTC) + timedelta(hours=2))
    before = len(writes(stack))

    response = host.post(BLOCK, body)
    rows = {r["target"]: (r["outcome"], r["detail"]) for r in response.json()["results"]}
    assert rows[mine][0] == "done" and "renewed" in rows[mine][1]
    assert rows[theirs] == ("already", f"blocked until no expiry (Defender indicator {forever['id']}, which the "
                                       "pack did not create)")
    assert rows[short][0] == "already" and "left as its owner set it" in rows[short][1]
    renewed = indicators(stack)
    assert renewed[mine]["id"] == first["id"] and renewed[mine]["expirationTime"] > first["expirationTime"]
    assert renewed[short]["expirationTime"] == soon["expirationTime"]  # the SOC's block, as the SOC set it
    assert len(stack.mde.indicators()) == 3 and len(writes(stack)) == before + 1  # one submit: the renewal


# -- undo ------------------------------------------------------------------------------------------
def test_unblock_removes_the_packs_blocks_only_and_is_idempotent(clean_stack, host):
    stack = clean_stack
    digest, name, theirs = fresh_sha256(), fresh_domain(), fresh_domain()
    body = incident(stack, file_entity(digest), dns_entity(name), dns_entity(theirs))
    rate(stack, host, body, {digest: "malicious", name: "malicious", theirs: "malicious"})
    soc = soc_indicator(stack, theirs, "DomainName", "Block")
    assert host.post(BLOCK, body).status_code == 200
    undone = host.post(UNBLOCK, body)
    assert undone.status_code == 200, undone.text
    assert outcomes(undone.json()) == {digest: "done", name: "done", theirs: "refused"}
    assert f"Defender indicator {soc['id']}, which the pack did not create" in undone.text
    assert list(indicators(stack)) == [theirs]  # the SOC's block stays
    again = host.post(UNBLOCK, body)
    assert outcomes(again.json()) == {digest: "already", name: "already", theirs: "refused"}
    assert len(stack.mde.requests_to("DELETE", r"/api/indicators/")) == 2


def test_unblock_honours_dry_run(clean_stack, host):
    stack = clean_stack
    name = fresh_domain()
    body = incident(stack, dns_entity(name))
    rate(stack, host, body, {name: "malicious"})
    assert host.post(BLOCK, body).status_code == 200
    dry = host.post(UNBLOCK + "?dryRun=true", body)
    assert outcomes(dry.json()) == {name: "would"} and list(indicators(stack)) == [name]
    assert outcomes(host.post(UNBLOCK, body).json()) == {name: "done"} and indicators(stack) == {}


# -- failures, retries, duplicates -------------------------------------------------------------------
def test_a_defender_outage_is_retried_and_the_retry_completes_in_a_new_comment(clean_stack, host):
    stack = clean_stack
    name = fresh_domain()
    body = incident(stack, dns_entity(name))
    rate(stack, host, body, {name: "malicious"})
    stack.mde.fail(503, path=r"/api/indicators", times=20)
    failed = host.post(BLOCK, body)
    assert failed.status_code == 502 and int(failed.headers["Retry-After"]) > 0
    stack.mde.clear_faults()
    assert outcomes(host.post(BLOCK, body).json()) == {name: "done"}
    first, second = (c["properties"]["message"] for c in audits(stack, body))
    assert "HTTP 503" in first and "done" in second
    assert_never_edited(stack, body)


def test_concurrent_duplicates_write_one_indicator_and_one_comment(clean_stack, host):
    stack = clean_stack
    names = [fresh_domain(), fresh_domain()]
    body = incident(stack, *(dns_entity(n) for n in names))
    rate(stack, host, body, dict.fromkeys(names, "malicious"))
    with ThreadPoolExecutor(6) as pool:  # each copy under the Logic App's retry policy: a busy target is a 429
        answers = [a for a, _ in pool.map(lambda _: with_retry_policy(lambda: host.post(BLOCK, body)), range(6))]
    assert [a.status_code for a in answers] == [200] * 6
    assert len(writes(stack)) == 1 and len(stack.mde.indicators()) == 2
    assert len(audits(stack, body)) == 1
