"""The project's own copies of the sample trigger payloads (tests/fixtures/*.json)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
TRIGGER_SAMPLES = (
    "incident-trigger.json",
    "incident-trigger-updated.json",
    "incident-trigger-defender-portal.json",
    "alert-trigger.json",
    "alert-trigger-entities-string.json",
    "entity-trigger-ip.json",
    "entity-trigger-host.json",
)
INCIDENT_4711 = ("/subscriptions/6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f/resourceGroups/rg-sentinel-prod/providers/"
                 "Microsoft.OperationalInsights/workspaces/law-sentinel-prod/providers/Microsoft.SecurityInsights/"
                 "Incidents/5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e")


@cache
def _load(name: str) -> str:
    return (FIXTURES / name).read_text()


def sample(name: str) -> dict:
    """A fresh (deep) copy of a sample payload: tests may modify it."""
    return copy.deepcopy(json.loads(_load(name)))


def fresh_incident(**properties) -> dict:
    """The sample incident (its entities kept) under a new id, number and URL, with ``properties`` set."""
    import uuid

    body = sample("incident-trigger.json")
    guid = str(uuid.uuid4())
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    obj["properties"]["incidentNumber"] = uuid.uuid4().int % 100000
    obj["properties"]["incidentUrl"] = obj["properties"]["incidentUrl"].rsplit("/", 1)[0] + "/" + guid
    obj["properties"].update(properties)
    return body


def incident_with(number: int, ips: list[str], *, name: str | None = None) -> dict:
    """An incident trigger body shaped like the sample, with its own id, number and IP entities."""
    import uuid

    body = sample("incident-trigger.json")
    guid = name or str(uuid.uuid5(uuid.NAMESPACE_URL, f"incident-{number}"))
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    props = obj["properties"]
    props["incidentNumber"] = number
    props["title"] = f"Synthetic incident {number}"
    others = [e for e in props["relatedEntities"] if e["kind"] != "Ip"]
    props["relatedEntities"] = [
        {"id": f"{obj['id']}/entities/ip{i}", "name": f"ip{i}", "type": "Microsoft.SecurityInsights/Entities",
         "kind": "Ip", "properties": {"address": ip, "friendlyName": ip}}
        for i, ip in enumerate(ips)
    ] + others
    return body
