"""The latest VirusTotal verdict the pack knows for an indicator, read from the enrichment's cache table.

Table ``vtcache`` (written by enrichment/cache.py, which owns its lifecycle): PartitionKey = ``kind:value``
(``cache_key``: ``ip:203.0.113.45``, ``file:<sha256>``, ``domain:evil.example``, a URL as ``url:<sha256 of the
cleaned URL>``), RowKey = ``v4``; a ``done`` row carries the verdict JSON and ``fetched_at``. Readers here
want the *latest* verdict whatever its age (an approval says how old it is), so the enrichment's TTL does
not apply; a ``pending`` row (a lookup under way) is no verdict yet. The key design lives here, in core,
because areas may not import each other: enrichment imports TABLE and ROW from this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from core.state import StateStore, key_safe

TABLE = "vtcache"
ROW = "v4"


def cache_key(kind: str, value: str) -> str:
    """The PartitionKey of an indicator's row: ``kind:value``; a URL by its hash (Table keys cannot hold all of
    a URL's characters)."""
    if kind == "url":
        return "url:" + hashlib.sha256(value.encode()).hexdigest()
    return key_safe(f"{kind}:{value}")[:512]


@dataclass(frozen=True)
class KnownVerdict:
    ip: str
    verdict: str  # malicious | suspicious | harmless | undetected (enrichment/virustotal.py's words)
    malicious: int
    suspicious: int
    engines: int
    fetched_at: float

    def describe(self) -> str:
        """``malicious (12/94 engines)``: what a person reading an approval needs."""
        flagged = self.malicious + self.suspicious
        return f"{self.verdict} ({flagged}/{self.engines} engines flagged it)"


def latest_verdict(store: StateStore, ip: str) -> KnownVerdict | None:
    """The cached verdict of ``ip``, or None when VirusTotal was never asked (or is being asked now)."""
    row = store.get(TABLE, cache_key("ip", ip), ROW)
    if not row or row.get("state") != "done" or not row.get("verdict"):
        return None
    try:
        data = json.loads(row["verdict"])
    except (TypeError, ValueError):
        return None
    counts = [int(data.get(k) or 0) for k in ("malicious", "suspicious", "harmless", "undetected", "timeout")]
    return KnownVerdict(ip=ip, verdict=str(data.get("verdict") or "unknown").lower(), malicious=counts[0],
                        suspicious=counts[1], engines=sum(counts), fetched_at=float(row.get("fetched_at") or 0))


__all__ = ["ROW", "TABLE", "KnownVerdict", "cache_key", "latest_verdict"]
