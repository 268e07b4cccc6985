"""Verdict cache: a per-process memory layer in front of Table Storage, shared by every incident.

Table ``vtcache``: one cache for every kind, keyed by kind and value. PartitionKey = ``kind:value``
(``ip:203.0.113.45``, ``file:<sha256>``, ``domain:evil.example``; a URL, whose characters Table keys cannot
all hold, as ``url:<sha256 of the cleaned URL>``), RowKey = ``v4`` (the verdict's JSON shape); columns
``state`` (done | pending), ``verdict`` (JSON), ``fetched_at`` and ``lease_until`` (epoch seconds). Table
Storage has no TTL, so expiry is checked on read and an expired row is simply overwritten.

Reads (issue #16, item 2: fewer calls):
- the memory layer (``MemoryCache``, one per process) answers what this instance looked up or read in
  the last ``ttl`` seconds, bounded in size; a verdict keeps the age it had in the table, so the memory
  layer never extends a verdict's life;
- the rest is read in batches: one query per 15 addresses (Table Storage allows at most 15 discrete
  comparisons in a ``$filter``: Learn, "Querying tables and entities"), the batches side by side.

Look-ups (``fetch``): a ``pending`` row is a short lease. When an incident storm brings the same address
to several runs at once, the one whose conditional insert wins asks VirusTotal and the others wait for
its answer instead of spending quota on the same address (a run of this process on the claimer's event,
``CLAIMED_HERE``, then from memory without a read; another process's by re-reading the row, backing off).
The verdict is written back by a writer the run owns (``WriteBehind``), off the run's critical path: the next
look-up starts at once, and the run waits for its writes only at its end, beside its comment.

The claim beside the read (``read``, issue #16: no avoidable serial step): a new address needs the batch read
(is there a verdict?) and then its claim (the conditional insert) before its look-up, two Table Storage round
trips one after the other. The claims of the first ``claim_first`` addresses (the look-ups that start first)
are sent beside the batch reads instead: a claim that wins proves there was no row, so that look-up starts
when the reads answer. A claim that loses costs one refused insert (a row exists: its batch read says whether
it holds a fresh verdict); only the first ``claim_first`` addresses are claimed early, because the later
look-ups wait for a VirusTotal slot anyway and are claimed while they wait.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from core.concurrency import run_bounded
from core.errors import PackError
from core.held_here import HeldHere, new_owner
from core.state import StateStore
from core.verdicts import ROW, TABLE, cache_key
from enrichment.indicators import Indicator
from enrichment.virustotal import Verdict

log = logging.getLogger(__name__)

FILTER_COMPARISONS = 15  # Table Storage: at most 15 discrete comparisons per $filter
MEMORY_ITEMS = 20_000  # ~1 KB each: a few tens of MB at most per process


def partition_key(indicator: Indicator) -> str:
    """The row's PartitionKey (see the module doc; the key design is core.verdicts.cache_key)."""
    return cache_key(indicator.kind, indicator.value)


class MemoryCache:
    """Fresh verdicts this process has seen: key -> (verdict, fetched_at), least recently used evicted."""

    def __init__(self, max_items: int = MEMORY_ITEMS) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[Verdict, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, ttl: float, now: float) -> Verdict | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            if now - found[1] >= ttl:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: str, verdict: Verdict, fetched_at: float) -> None:
        with self._lock:
            self._items[key] = (verdict, fetched_at)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MEMORY = MemoryCache()  # per process: every invocation in this worker shares it
# Look-ups a run of this process has claimed: a run that needs the same address waits on the claimer's event (then
# finds the verdict in ``MEMORY``) instead of re-reading the row; a claim held by another process is re-read.
CLAIMED_HERE = HeldHere()


class WriteBehind:
    """Cache writes of one run, started as soon as each verdict is known; ``wait`` at the run's end.

    Its own pool (core/concurrency.py explains why pools are not shared), as wide as the run's look-ups: the
    writes of one round of look-ups then take one round trip, not several (with 4 writers, the 16 writes of a
    round took four and outlasted the comment). Writes run in a copy of the caller's context, so their log lines
    and timing stay with the run.
    """

    def __init__(self, workers: int = 16) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vt-write")
        self._futures: list[Future] = []

    def submit(self, write: Callable[[], Any]) -> Future:
        context = contextvars.copy_context()
        future = self._pool.submit(context.run, write)
        self._futures.append(future)
        return future

    def wait(self) -> None:
        """Wait for every write; the first failure is raised (the run's answer says the state store failed)."""
        try:
            for future in list(self._futures):
                future.result()
        finally:
            self._pool.shutdown(wait=True)

    def close(self) -> None:
        """Wait for every write without raising: for a run that is already failing for another reason."""
        self._pool.shutdown(wait=True)
        for future in self._futures:
            if future.exception() is not None:
                log.warning("verdict cache write failed: %s", type(future.exception()).__name__)


@dataclass
class Reads:
    """What ``VerdictCache.read`` found: fresh verdicts, claims won (look these up now), addresses without a row
    (claim, then look up); every other address has a row that is not fresh (expired, or another run's lease)."""

    found: dict[Indicator, Verdict] = field(default_factory=dict)
    absent: set[Indicator] = field(default_factory=set)
    owners: dict[Indicator, str] = field(default_factory=dict)  # each claim won, by its owner id

    @property
    def claimed(self) -> set[Indicator]:
        return set(self.owners)


class VerdictCache:
    def __init__(self, store: StateStore, ttl_seconds: int, lease_seconds: float = 30.0,
                 wait_seconds: float = 15.0, poll_seconds: float = 0.05, clock: Callable[[], float] = time.time,
                 memory: MemoryCache = MEMORY) -> None:
        self.store = store
        self.ttl = ttl_seconds
        self.lease = lease_seconds
        self.wait = wait_seconds
        self.poll = poll_seconds
        self.clock = clock
        self.memory = memory

    def _fresh(self, row: dict | None) -> Verdict | None:
        if row and row.get("state") == "done" and self.clock() - float(row.get("fetched_at", 0)) < self.ttl:
            verdict = Verdict.from_cache(json.loads(row["verdict"]))
            self.memory.put(str(row["PartitionKey"]), verdict, float(row["fetched_at"]))
            return verdict
        return None

    # -- reads ----------------------------------------------------------------------------------
    def get(self, indicator: Indicator) -> Verdict | None:
        """The cached verdict if it is fresh (no lease taken)."""
        key = partition_key(indicator)
        return self.memory.get(key, self.ttl, self.clock()) or self._fresh(self.store.get(TABLE, key, ROW))

    def get_many(self, indicators: Iterable[Indicator], limit: int = 16
                 ) -> tuple[dict[Indicator, Verdict], set[Indicator]]:
        """(fresh verdicts of ``indicators``, those the table holds no row for): from memory, then from the table
        in batches of 15 side by side."""
        reads = self.read(indicators, limit)
        return reads.found, reads.absent

    def read(self, indicators: Iterable[Indicator], limit: int = 16, *, claim_first: int = 0) -> Reads:
        """What the cache knows of ``indicators``: memory first, then the table in batches of 15 side by side, with
        the claims of the first ``claim_first`` addresses memory lacks beside those reads (see the module doc)."""
        reads = Reads()
        missing: list[Indicator] = []
        now = self.clock()
        for indicator in dict.fromkeys(indicators):
            verdict = self.memory.get(partition_key(indicator), self.ttl, now)
            if verdict is not None:
                reads.found[indicator] = verdict
            else:
                missing.append(indicator)
        batches = [missing[i:i + FILTER_COMPARISONS] for i in range(0, len(missing), FILTER_COMPARISONS)]
        early = missing[:max(0, claim_first)]
        calls: list[Callable[[], Any]] = [lambda b=batch: ("read", b, self._read_batch(b)) for batch in batches]
        calls += [lambda i=indicator: ("claim", i, self.claim(i)) for indicator in early]
        outcomes = run_bounded(lambda call: call(), calls, max(1, limit + len(early)))
        owners = {o.value[1]: o.value[2] for o in outcomes if o.ok and o.value[0] == "claim" and o.value[2]}
        won = set(owners)
        failed = next((o.error for o in outcomes if not o.ok), None)
        if failed is not None:
            for indicator in won:  # the run fails: no claim of it may hold up the next run (e.g. its retry)
                key = partition_key(indicator)
                try:
                    self.store.upsert(TABLE, self._released_row(key))
                except PackError:
                    log.warning("a verdict claim could not be given back; it expires after %ss", self.lease)
                CLAIMED_HERE.give_back(key, owners[indicator])
            raise failed
        for outcome in outcomes:
            what, _, value = outcome.get()
            if what == "read":
                batch_found, batch_absent = value
                reads.found.update(batch_found)
                reads.absent |= batch_absent
        # A claim that won means no row existed; the read beside it may have seen that row already (ours).
        reads.owners = owners
        for indicator in won:
            reads.found.pop(indicator, None)
        reads.absent -= won
        # A claim that lost means a row exists now, whatever the read beside it saw: the look-up reads it again.
        reads.absent -= set(early) - won
        return reads

    def _read_batch(self, indicators: list[Indicator]) -> tuple[dict[Indicator, Verdict], set[Indicator]]:
        keys = {partition_key(indicator): indicator for indicator in indicators}
        names = {f"k{i}": key for i, key in enumerate(keys)}
        query = " or ".join(f"PartitionKey eq @{name}" for name in names)
        found, present = {}, set()
        for row in self.store.query(TABLE, query, names):
            if row.get("RowKey") != ROW or row.get("PartitionKey") not in keys:
                continue
            present.add(keys[row["PartitionKey"]])
            if (verdict := self._fresh(row)) is not None:
                found[keys[row["PartitionKey"]]] = verdict
        return found, set(indicators) - present

    # -- look-ups -------------------------------------------------------------------------------
    def fetch(self, indicator: Indicator, lookup: Callable[[Indicator], Verdict], writes: WriteBehind, *,
              absent: bool = False) -> tuple[Verdict, bool]:
        """(verdict, came_from_cache) for an address the reads did not find. ``lookup`` runs at most once across
        concurrent callers; the verdict's write goes to ``writes``. ``absent``: the batch read just found no row,
        so the first step is the claim itself (a conditional insert), not another read."""
        deadline = self.clock() + self.wait
        key = partition_key(indicator)
        pause = self.poll
        first = True
        while True:
            row = None if first and absent else self.store.get(TABLE, key, ROW)
            first = False
            verdict = self._fresh(row)
            if verdict is not None:
                return verdict, True
            leased = (row is not None and row.get("state") == "pending"
                      and float(row.get("lease_until", 0)) > self.clock())
            if not leased or self.clock() >= deadline:
                claim = self._claim_row(key)
                won = (self.store.insert_if_absent(TABLE, claim) if row is None
                       else self.store.replace_if_unchanged(TABLE, claim, row["_etag"]))
                if won:
                    owner = new_owner()
                    CLAIMED_HERE.hold(key, owner)
                    return self._fetch_and_store(indicator, key, lookup, writes, owner), False
            # Another run is asking VirusTotal for this address: its answer comes soon. A run of this process is
            # waited for on its event (its verdict then is in memory); another process's, by reading the row again.
            here = CLAIMED_HERE.event(key)
            if here is not None and here.wait(max(0.0, deadline - self.clock())):
                verdict = self.memory.get(key, self.ttl, self.clock())
                if verdict is not None:
                    return verdict, True
                continue
            if here is None:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def claim(self, indicator: Indicator) -> str | None:
        """Take the look-up of an address the table holds no row for (a conditional insert): the claim's owner (for
        ``fetch_claimed`` and ``release``), None when a row exists."""
        key = partition_key(indicator)
        if not self.store.insert_if_absent(TABLE, self._claim_row(key)):
            return None
        owner = new_owner()
        CLAIMED_HERE.hold(key, owner)
        return owner

    def fetch_claimed(self, indicator: Indicator, lookup: Callable[[Indicator], Verdict], writes: WriteBehind,
                      owner: str = "") -> tuple[Verdict, bool]:
        """(verdict, False) for an address this run's ``claim`` (``owner``) won: the look-up, its write behind."""
        return self._fetch_and_store(indicator, partition_key(indicator), lookup, writes, owner), False

    def release(self, indicator: Indicator, writes: WriteBehind, owner: str = "") -> None:
        """Give back a claim (``owner``) whose look-up never started (VirusTotal's quota ran out first)."""
        key = partition_key(indicator)
        writes.submit(lambda: self.store.upsert(TABLE, self._released_row(key)))
        CLAIMED_HERE.give_back(key, owner)

    def _claim_row(self, key: str) -> dict:
        return {"PartitionKey": key, "RowKey": ROW, "state": "pending", "lease_until": self.clock() + self.lease,
                "fetched_at": 0.0, "verdict": ""}

    @staticmethod
    def _released_row(key: str) -> dict:
        return {"PartitionKey": key, "RowKey": ROW, "state": "pending", "lease_until": 0.0, "fetched_at": 0.0,
                "verdict": ""}

    def _fetch_and_store(self, indicator: Indicator, key: str, lookup: Callable[[Indicator], Verdict],
                         writes: WriteBehind, owner: str) -> Verdict:
        try:
            verdict = lookup(indicator)
        except BaseException:
            # Give the lease back so the next caller (or the deferred run) does not wait for it.
            writes.submit(lambda: self.store.upsert(TABLE, self._released_row(key)))
            CLAIMED_HERE.give_back(key, owner)
            raise
        fetched_at = self.clock()
        self.memory.put(key, verdict, fetched_at)  # before the event: a run woken by it finds the verdict here
        CLAIMED_HERE.give_back(key, owner)
        writes.submit(lambda: self.put(verdict, fetched_at))
        return verdict

    def put(self, verdict: Verdict, fetched_at: float | None = None) -> None:
        fetched_at = self.clock() if fetched_at is None else fetched_at
        key = partition_key(Indicator(verdict.kind, verdict.value))
        self.store.upsert(TABLE, {"PartitionKey": key, "RowKey": ROW, "state": "done", "lease_until": 0.0,
                                  "fetched_at": fetched_at, "verdict": json.dumps(verdict.to_cache())})
