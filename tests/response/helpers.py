"""Helpers of the response tests: incidents built to measure, fresh ids and addresses."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.fixtures import sample


def host_entity(host_name: str, domain: str | None = "corp.contoso.com", device_id: str | None = None) -> dict:
    props: dict[str, Any] = {"hostName": host_name, "friendlyName": host_name, "osFamily": "Windows"}
    if domain:
        props["dnsDomain"] = domain
    if device_id:
        props["additionalData"] = {"MdatpDeviceId": device_id}
    return {"kind": "Host", "properties": props}


def account_entity(name: str, suffix: str | None = "contoso.com", aad_id: str | None = None) -> dict:
    props: dict[str, Any] = {"accountName": name, "friendlyName": name}
    if suffix:
        props["upnSuffix"] = suffix
    if aad_id:
        props["aadUserId"] = aad_id
    return {"kind": "Account", "properties": props}


def ip_entity(address: str) -> dict:
    return {"kind": "Ip", "properties": {"address": address, "friendlyName": address}}


# Indicators the enrichment rates and block-indicators blocks (issue 18).
def fresh_sha256() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def fresh_domain() -> str:
    return f"evil-{uuid.uuid4().hex[:10]}.example"


def file_entity(value: str, algorithm: str = "SHA256") -> dict:
    return {"kind": "FileHash", "properties": {"algorithm": algorithm, "hashValue": value, "friendlyName": value}}


def file_with_hashes(name: str, **hashes: str) -> list[dict]:
    """A File entity pointing at its FileHash entities (ARM format: ``fileHashEntityIds``)."""
    ids = [f"h-{uuid.uuid4().hex[:8]}" for _ in hashes]
    found = [{"id": i, "name": i, "kind": "FileHash", "properties": {"algorithm": a.upper(), "hashValue": v}}
             for i, (a, v) in zip(ids, hashes.items(), strict=True)]
    return [*found, {"kind": "File", "properties": {"fileName": name, "fileHashEntityIds": ids}}]


def url_entity(url: str) -> dict:
    return {"kind": "Url", "properties": {"url": url, "friendlyName": url}}


def dns_entity(name: str) -> dict:
    return {"kind": "DnsResolution", "properties": {"domainName": name, "friendlyName": name}}


def rate(stack, host, body: dict, verdicts: dict[str, str]) -> None:
    """VirusTotal rates each value as named (malicious, suspicious, harmless, unknown), then the enrichment runs on
    the incident, so the verdict cache holds what block-indicators reads."""
    counts = {"malicious": {"malicious": 9}, "suspicious": {"suspicious": 1}, "harmless": {"harmless": 70}}
    for value, verdict in verdicts.items():
        if verdict == "unknown":
            stack.vt.set_unknown(value)
        else:
            stack.vt.set_report(value, **counts[verdict])
    answer = host.post("enrichment/reputation", body)
    assert answer.status_code == 200, answer.text


def incident(stack, *entities: dict, title: str = "Ransomware behaviour on a finance workstation") -> dict:
    """A new incident trigger body (own id and number) with exactly ``entities``, seeded in the ARM emulator."""
    body = sample("incident-trigger.json")
    guid = str(uuid.uuid4())
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    props = obj["properties"]
    props["incidentNumber"] = uuid.uuid4().int % 100000
    props["title"] = title
    props["relatedEntities"] = [
        {"id": f"{obj['id']}/entities/e{i}", "name": f"e{i}", "type": "Microsoft.SecurityInsights/Entities", **e}
        for i, e in enumerate(entities)]
    stack.arm.seed_from_trigger(body)
    return body


def machine_id() -> str:
    """A fresh Defender machine id (40 hex characters, like a SHA-1)."""
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def fresh_ips(n: int) -> list[str]:
    """Public (documentation-range) IPv6 addresses no earlier test has blocked."""
    base = uuid.uuid4().int
    return [f"2001:db8:{(base >> 16) % 0xFFFF:x}:{base % 0xFFFF:x}::{i + 1:x}" for i in range(n)]


def comments(stack, body: dict) -> list[dict]:
    return stack.arm.comments(body["object"]["id"])


def comment_writes(stack, body: dict) -> dict[str, list[str]]:
    """Every comment PUT on the incident, by comment id: the messages in the order they were sent."""
    writes: dict[str, list[str]] = {}
    for request in stack.arm.requests_to("PUT", r"/comments/[^/]+$"):
        if request.path.lower().startswith(body["object"]["id"].lower() + "/comments/"):
            writes.setdefault(request.path.rsplit("/", 1)[-1], []).append(request.json["properties"]["message"])
    return writes


def assert_never_edited(stack, body: dict) -> None:
    """No comment was edited (issue #15.11: the Defender portal does not show edits): a comment id may be PUT
    again only with the same message (a retry of the same content)."""
    for cid, messages in comment_writes(stack, body).items():
        assert len(set(messages)) == 1, f"comment {cid} was edited: {messages}"


def outcomes(summary: dict) -> dict[str, str]:
    return {item["target"]: item["outcome"] for item in summary["results"]}


# The Logic App HTTP action's Default retry policy: "up to 4 retries at exponentially increasing intervals ...
# scale by 7.5 seconds but are capped between 5 and 45 seconds", on 408, 429 and 5xx (Azure Logic Apps, "Handle
# errors and exceptions"); the Exponential Interval type "waits a random interval, which is selected from an
# exponentially growing range". Observed (phvbaars.wordpress.com/tag/retry): the first retry at once, then after
# 6, 11 and 27 s. Modelled as ranges, the first one immediate (the hardest case for a lease still held).
# Tests and the bench compress the waits (``speed``) so they do not sleep through them.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
RETRY_WAITS = ((0.0, 0.0), (5.0, 7.5), (7.5, 15.0), (15.0, 30.0))


def policy_wait(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds the Default policy waits before retry ``attempt`` (1-based), uncompressed, jitter included."""
    low, high = RETRY_WAITS[attempt - 1]
    return (rng or random).uniform(low, high)


def with_retry_policy(send: Callable[[], Any], speed: float = 0.05) -> tuple[Any, int]:
    """Call ``send`` as a Logic App action with the Default retry policy; the last answer and the retries made."""
    answer = send()
    for attempt in range(1, len(RETRY_WAITS) + 1):
        if answer.status_code not in RETRY_STATUSES:
            return answer, attempt - 1
        time.sleep(policy_wait(attempt) * speed)
        answer = send()
    return answer, len(RETRY_WAITS)
