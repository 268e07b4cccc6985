"""The latest VirusTotal verdict the pack knows for an IP, read from the enrichment's cache table.

Table ``vtcache`` (written by enrichment/cache.py, which owns its lifecycle): PartitionKey = the IP
(``key_safe``), RowKey = ``v3``; a ``done`` row carries the verdict JSON and ``fetched_at``. Readers here
want the *latest* verdict whatever its age (an approval says how old it is), so the enrichment's TTL does
not apply; a ``pending`` row (a lookup under way) is no verdict yet. The key design lives here, in core,
because areas may not import each other: enrichment imports TABLE and ROW from this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.state import StateStore, key_safe

TABLE = "vtcache"
ROW = "v3"


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
    row = store.get(TABLE, key_safe(ip), ROW)
    if not row or row.get("state") != "done" or not row.get("verdict"):
        return None
    try:
        data = json.loads(row["verdict"])
    except (TypeError, ValueError):
        return None
    counts = [int(data.get(k) or 0) for k in ("malicious", "suspicious", "harmless", "undetected", "timeout")]
    return KnownVerdict(ip=ip, verdict=str(data.get("verdict") or "unknown").lower(), malicious=counts[0],
                        suspicious=counts[1], engines=sum(counts), fetched_at=float(row.get("fetched_at") or 0))


__all__ = ["ROW", "TABLE", "KnownVerdict", "latest_verdict"]
