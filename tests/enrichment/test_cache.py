"""The verdict cache's reads (enrichment/cache.py) against Azurite: memory, batched table reads, and the first
look-ups' claims sent beside those reads (issue #16: no read-then-claim round trip before a new look-up)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from core.state import StateStore
from core.verdicts import ROW, TABLE
from enrichment.cache import CLAIMED_HERE, MemoryCache, VerdictCache, WriteBehind, partition_key
from enrichment.indicators import Indicator
from enrichment.virustotal import Verdict
from tests.conftest import count_reads, wait_for


@pytest.fixture
def store(stack) -> StateStore:
    return StateStore(connection_string=stack.azurite.connection_string, prefix="vc" + uuid.uuid4().hex[:8])


def ips(n: int) -> list[Indicator]:
    base = uuid.uuid4().hex[:4]
    return [Indicator("ip", f"2001:db8:{base}::{i + 1:x}") for i in range(n)]


def test_the_first_claims_go_beside_the_reads_and_only_for_addresses_without_a_row(store):
    cache = VerdictCache(store, ttl_seconds=3600, memory=MemoryCache())
    new_a, in_table, new_b, in_memory, new_c, stale = ips(6)
    cache.put(Verdict("ip", in_table.value, "harmless", harmless=60))
    cache.put(Verdict("ip", stale.value, "harmless", harmless=60), fetched_at=time.time() - 7200)
    cache.memory.put(partition_key(in_memory), Verdict("ip", in_memory.value, "malicious", malicious=5), time.time())
    reads = cache.read([new_a, in_table, new_b, in_memory, new_c, stale], limit=4, claim_first=3)
    # Memory first; of the rest, the first three were claimed beside the batch read: two won (no row), the cached
    # one lost (its row holds a fresh verdict, read beside it). The fourth new one waits for its own claim.
    assert set(reads.found) == {in_table, in_memory}
    assert reads.claimed == {new_a, new_b}
    assert reads.absent == {new_c}
    claim = store.get(TABLE, partition_key(new_a), ROW)
    assert claim["state"] == "pending" and claim["lease_until"] > time.time()
    assert store.get(TABLE, partition_key(new_c), ROW) is None  # not claimed yet
    assert store.get(TABLE, partition_key(stale), ROW)["state"] == "done"  # expired: the look-up re-reads it


def test_a_claim_whose_look_up_never_starts_is_given_back(store):
    cache = VerdictCache(store, ttl_seconds=3600, memory=MemoryCache())
    [address] = ips(1)
    assert cache.read([address], claim_first=1).claimed == {address}
    writes = WriteBehind(2)
    cache.release(address, writes)
    writes.wait()
    row = store.get(TABLE, partition_key(address), ROW)
    assert row["state"] == "pending" and row["lease_until"] == 0.0  # the next run claims it at once
    assert cache.read([address], claim_first=1).claimed == set()  # a row exists: read again, then taken over


def test_a_run_waits_for_a_look_up_of_this_process_on_an_event_and_takes_its_verdict_from_memory(store):
    """No spinning (issue #16): while a run of this process looks an address up, another run that needs it sends no
    Table request; it has the verdict as soon as the look-up answers, without reading the row."""
    memory = MemoryCache()
    cache = VerdictCache(store, ttl_seconds=3600, memory=memory)
    [address] = ips(1)
    owner = cache.claim(address)
    assert owner and CLAIMED_HERE.event(partition_key(address)) is not None
    reads = count_reads(store)
    answered, got = threading.Event(), []
    writes = WriteBehind(2)
    waiter = threading.Thread(target=lambda: got.append(cache.fetch(address, lambda _: pytest.fail("looked up twice"),
                                                                     writes)))
    waiter.start()
    wait_for(lambda: reads[0] >= 1, timeout=30)  # it read the row and found the claim
    time.sleep(0.3)  # re-reading with back-off would have read the row again by now
    assert reads[0] == 1 and not got

    def look_up(indicator):
        answered.set()
        return Verdict("ip", indicator.value, "malicious", malicious=7)

    mine = cache.fetch_claimed(address, look_up, writes, owner)
    waiter.join(timeout=30)
    writes.wait()
    assert answered.is_set() and got == [(mine[0], True)] and reads[0] == 1
    assert CLAIMED_HERE.event(partition_key(address)) is None
