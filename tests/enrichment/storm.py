"""Incidents that mix every indicator kind: the enrichment tests' and the bench storm's data (issue #18, item 4).

``mixed_incident(number, ...)`` is one incident trigger body with IP, FileHash, Url and DnsResolution
entities (and the sample's host and account). ``mixed_storm(incidents, unique)`` draws ``incidents`` such
bodies from a pool of ``unique`` public indicators of each kind plus values that must never reach
VirusTotal (private addresses, the tenant's own domain, internal URLs, malformed hashes), seeded so every
run draws the same storm. ``Storm.unique_lookups`` is how many VirusTotal calls the storm may cost: one per
unique public indicator, whatever kind, however many incidents share it.

For bench/run.py (helper H6's), the storm scenario becomes::

    storm = mixed_storm(200, 50)                      # instead of incident_storm's IP-only bodies
    for body in storm.bodies: stack.arm.seed_from_trigger(body)
    ... post each body to /api/enrichment/reputation with 8 callers ...
    row(scenario, "VirusTotal calls vs unique indicators", len(stack.vt.lookups()), storm.unique_lookups, "1.0")
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from tests.fixtures import incident_with

PRIVATE_IPS = ("10.0.0.5", "192.168.1.20", "172.16.4.4", "100.64.1.1", "127.0.0.1", "::ffff:10.9.9.9")
INTERNAL_URLS = ("https://portal.contoso.com/login?session=SECRET", "http://192.168.1.10/admin")
INTERNAL_DOMAINS = ("contoso.com", "mail.contoso.com", "intranet")
MALFORMED_HASHES = ("xyz", "0" * 31)


def public_ips(unique: int) -> list[str]:
    return [f"203.0.113.{i}" if i < 200 else f"2001:db8::{i:x}" for i in range(1, unique + 1)]


def hashes(unique: int) -> list[str]:
    return [uuid.UUID(int=random.Random(f"file-{i}").getrandbits(128)).hex * 2 for i in range(unique)]


def urls(unique: int) -> list[str]:
    return [f"https://user:pw@phish-{i}.example/login?token=T{i}#x" for i in range(unique)]


def domains(unique: int) -> list[str]:
    return [f"c2-{i}.example" for i in range(unique)]


def entities(ips: list[str], files: list[str], links: list[str], names: list[str]) -> list[dict]:
    """ARM entities of the four indicator kinds (as relatedEntities holds them)."""
    found = [{"kind": "Ip", "properties": {"address": ip, "friendlyName": ip}} for ip in ips]
    found += [{"kind": "FileHash", "properties": {"algorithm": "SHA256" if len(h) == 64 else "Unknown",
                                                  "hashValue": h}} for h in files]
    found += [{"kind": "Url", "properties": {"url": link}} for link in links]
    found += [{"kind": "DnsResolution", "properties": {"domainName": name}} for name in names]
    return found


def mixed_incident(number: int, ips: list[str], files: list[str], links: list[str], names: list[str],
                   *, name: str | None = None) -> dict:
    """An incident trigger body with these indicators (IPs first, then files, URLs and domains)."""
    body = incident_with(number, [], name=name)
    props = body["object"]["properties"]
    others = [e for e in props["relatedEntities"] if e["kind"] != "Ip"]
    props["relatedEntities"] = [
        {"id": f"{body['object']['id']}/entities/e{i}", "name": f"e{i}", "type": "Microsoft.SecurityInsights/Entities",
         **entity} for i, entity in enumerate(entities(ips, files, links, names))] + others
    return body


@dataclass
class Storm:
    bodies: list[dict] = field(default_factory=list)
    public: set[str] = field(default_factory=set)  # "kind:value" of every public indicator the bodies hold

    @property
    def unique_lookups(self) -> int:
        return len(self.public)


def mixed_storm(incidents: int, unique: int, *, seed: int = 4711) -> Storm:
    """``incidents`` bodies drawing on ``unique`` public indicators of each kind, and never-sent values."""
    rng = random.Random(seed)
    pools = {"ip": public_ips(unique), "file": hashes(unique), "url": urls(unique), "domain": domains(unique)}
    storm = Storm()
    for n in range(incidents):
        drawn = {kind: rng.sample(pool, k=min(len(pool), rng.randint(1, 3))) for kind, pool in pools.items()}
        for kind, values in drawn.items():
            for value in values:
                storm.public.add(f"{kind}:{_cleaned(kind, value)}")
        storm.bodies.append(mixed_incident(
            20_000 + n,
            drawn["ip"] + rng.sample(PRIVATE_IPS, k=rng.randint(0, 2)),
            drawn["file"] + rng.sample(MALFORMED_HASHES, k=rng.randint(0, 1)),
            drawn["url"] + rng.sample(INTERNAL_URLS, k=rng.randint(0, 1)),
            drawn["domain"] + rng.sample(INTERNAL_DOMAINS, k=rng.randint(0, 1)),
            name=str(uuid.UUID(int=rng.getrandbits(128)))))
    return storm


def _cleaned(kind: str, value: str) -> str:
    if kind == "url":
        from enrichment.indicators import clean_url

        return clean_url(value)
    return value


__all__ = ["Storm", "mixed_incident", "mixed_storm"]
