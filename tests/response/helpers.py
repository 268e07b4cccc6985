"""Helpers of the response tests: incidents built to measure, fresh ids and addresses."""

from __future__ import annotations

import uuid
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


def outcomes(summary: dict) -> dict[str, str]:
    return {item["target"]: item["outcome"] for item in summary["results"]}
