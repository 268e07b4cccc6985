"""The latest VirusTotal verdict the pack knows for an indicator, read from the enrichment's cache table.

Table ``vtcache`` (written by enrichment/cache.py, which owns its lifecycle): PartitionKey = ``kind:value``
(``cache_key``: ``ip:203.0.113.45``, ``file:<sha256>``, ``domain:evil.example``, a URL as ``url:<sha256 of the
cleaned URL>``), RowKey = ``v4``; a ``done`` row carries the verdict JSON and ``fetched_at``. Readers here
want the *latest* verdict whatever its age (an approval or a block says how old it is), so the enrichment's TTL
does not apply; a ``pending`` row (a lookup under way) is no verdict yet. The key design lives here, in core,
because areas may not import each other: enrichment imports TABLE and ROW from this module, and the response
area reads the verdict of the exact value the enrichment looked up, which for a URL is ``clean_url`` of it
(the URL without userinfo, query and fragment: what may leave the tenant, issue #18).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from core.concurrency import run_bounded
from core.state import StateStore, key_safe

TABLE = "vtcache"
ROW = "v4"
FILTER_COMPARISONS = 15  # Table Storage: at most 15 discrete comparisons per $filter


def cache_key(kind: str, value: str) -> str:
    """The PartitionKey of an indicator's row: ``kind:value``; a URL by its hash (Table keys cannot hold all of
    a URL's characters)."""
    if kind == "url":
        return "url:" + hashlib.sha256(value.encode()).hexdigest()
    return key_safe(f"{kind}:{value}")[:512]


def clean_url(url: str) -> str:
    """The URL without userinfo, query and fragment, scheme and host in lower case, ``/`` for an empty path:
    the form enrichment looks up (its cache key) and the form a Defender URL indicator blocks."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", "", ""))


@dataclass(frozen=True)
class KnownVerdict:
    value: str
    verdict: str  # malicious | suspicious | harmless | unknown (enrichment/virustotal.py's words)
    malicious: int
    suspicious: int
    engines: int
    fetched_at: float
    kind: str = "ip"

    @property
    def ip(self) -> str:
        """The value of an IP's verdict (the name approvals have always read)."""
        return self.value

    def describe(self) -> str:
        """``malicious (12/94 engines)``: what a person reading an approval needs."""
        flagged = self.malicious + self.suspicious
        return f"{self.verdict} ({flagged}/{self.engines} engines flagged it)"

    def age(self, now: float | None = None) -> str:
        """How old the verdict is, in words a comment can show (``3 h``, ``12 days``)."""
        seconds = max(0.0, (time.time() if now is None else now) - self.fetched_at)
        if seconds < 3600:
            return f"{int(seconds // 60)} min"
        if seconds < 2 * 86400:
            return f"{int(seconds // 3600)} h"
        return f"{int(seconds // 86400)} days"


def _verdict(kind: str, value: str, row: dict | None) -> KnownVerdict | None:
    if not row or row.get("state") != "done" or not row.get("verdict"):
        return None
    try:
        data = json.loads(row["verdict"])
    except (TypeError, ValueError):
        return None
    counts = [int(data.get(k) or 0) for k in ("malicious", "suspicious", "harmless", "undetected", "timeout")]
    return KnownVerdict(value=value, verdict=str(data.get("verdict") or "unknown").lower(), malicious=counts[0],
                        suspicious=counts[1], engines=sum(counts), fetched_at=float(row.get("fetched_at") or 0),
                        kind=kind)


def latest_verdict(store: StateStore, value: str, kind: str = "ip") -> KnownVerdict | None:
    """The cached verdict of ``value`` (an IP unless ``kind`` says ``file``, ``url`` or ``domain``; a URL as
    ``clean_url`` gives it), or None when VirusTotal was never asked (or is being asked now)."""
    return _verdict(kind, value, store.get(TABLE, cache_key(kind, value), ROW))


def latest_verdicts(store: StateStore, items: Iterable[tuple[str, str]], pool: int = 4
                    ) -> dict[tuple[str, str], KnownVerdict]:
    """The cached verdicts of several ``(kind, value)``: one query per 15 of them (Table Storage's limit of
    comparisons in a filter, as enrichment/cache.py reads), the queries side by side. Missing ones are absent."""
    keys = {cache_key(kind, value): (kind, value) for kind, value in dict.fromkeys(items)}
    names = list(keys)
    batches = [names[i:i + FILTER_COMPARISONS] for i in range(0, len(names), FILTER_COMPARISONS)]

    def read(batch: list[str]) -> list[dict]:
        parameters = {f"k{i}": key for i, key in enumerate(batch)}
        query = " or ".join(f"PartitionKey eq @{name}" for name in parameters)
        return [row for row in store.query(TABLE, query, parameters) if row.get("RowKey") == ROW]

    found: dict[tuple[str, str], KnownVerdict] = {}
    for outcome in run_bounded(read, batches, max(1, pool)):
        for row in outcome.get():
            item = keys.get(str(row.get("PartitionKey")))
            verdict = _verdict(item[0], item[1], row) if item else None
            if item and verdict is not None:
                found[item] = verdict
    return found


__all__ = ["ROW", "TABLE", "KnownVerdict", "cache_key", "clean_url", "latest_verdict", "latest_verdicts"]
