"""Verdict cache in Table Storage, shared by every incident and every function instance.

Table ``vtcache``: PartitionKey = IP address, RowKey = ``v3``; columns ``state`` (done | pending),
``verdict`` (JSON), ``fetched_at`` and ``lease_until`` (epoch seconds). Table Storage has no
TTL, so expiry is checked on read and an expired row is simply overwritten.

A ``pending`` row is a short lease: when an incident storm brings the same IP to several
instances at once, the one whose conditional insert wins asks VirusTotal, and the others wait
for its answer instead of spending quota on the same address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from core.state import StateStore, key_safe
from core.verdicts import ROW, TABLE
from enrichment.virustotal import IpVerdict


class VerdictCache:
    def __init__(self, store: StateStore, ttl_seconds: int, lease_seconds: float = 30.0,
                 wait_seconds: float = 15.0, poll_seconds: float = 0.1, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl = ttl_seconds
        self.lease = lease_seconds
        self.wait = wait_seconds
        self.poll = poll_seconds
        self.clock = clock

    def _fresh(self, row: dict | None) -> IpVerdict | None:
        if row and row.get("state") == "done" and self.clock() - float(row.get("fetched_at", 0)) < self.ttl:
            return IpVerdict.from_dict(json.loads(row["verdict"]))
        return None

    def get(self, ip: str) -> IpVerdict | None:
        """The cached verdict if it is fresh (no lease taken)."""
        return self._fresh(self.store.get(TABLE, key_safe(ip), ROW))

    def get_or_fetch(self, ip: str, fetch: Callable[[str], IpVerdict]) -> tuple[IpVerdict, bool]:
        """(verdict, came_from_cache). ``fetch`` runs at most once across concurrent callers."""
        deadline = self.clock() + self.wait
        key = key_safe(ip)
        while True:
            row = self.store.get(TABLE, key, ROW)
            verdict = self._fresh(row)
            if verdict is not None:
                return verdict, True
            leased = (row is not None and row.get("state") == "pending"
                      and float(row.get("lease_until", 0)) > self.clock())
            if not leased or self.clock() >= deadline:
                claim = {"PartitionKey": key, "RowKey": ROW, "state": "pending",
                         "lease_until": self.clock() + self.lease, "fetched_at": 0.0, "verdict": ""}
                won = (self.store.insert_if_absent(TABLE, claim) if row is None
                       else self.store.replace_if_unchanged(TABLE, claim, row["_etag"]))
                if won:
                    return self._fetch_and_store(ip, key, fetch), False
            time.sleep(self.poll)

    def _fetch_and_store(self, ip: str, key: str, fetch: Callable[[str], IpVerdict]) -> IpVerdict:
        try:
            verdict = fetch(ip)
        except BaseException:
            # Give the lease back so the next caller (or the deferred run) does not wait for it.
            self.store.upsert(TABLE, {"PartitionKey": key, "RowKey": ROW, "state": "pending",
                                      "lease_until": 0.0, "fetched_at": 0.0, "verdict": ""})
            raise
        self.put(verdict)
        return verdict

    def put(self, verdict: IpVerdict) -> None:
        self.store.upsert(TABLE, {"PartitionKey": key_safe(verdict.ip), "RowKey": ROW, "state": "done",
                                  "lease_until": 0.0, "fetched_at": self.clock(),
                                  "verdict": json.dumps(verdict.to_dict())})
