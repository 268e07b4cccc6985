"""The ticket map and its leases in Table Storage (Azurite): one winner, no lost update."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import Busy
from core.state import StateStore
from sync.links import LinkStore, new_owner


@pytest.fixture
def links(stack):
    store = StateStore(connection_string=stack.azurite.connection_string, prefix="l" + uuid.uuid4().hex[:8])
    return LinkStore(store, lease_seconds=30, poll_seconds=0.01)


def test_exactly_one_concurrent_claim_wins(links):
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(10) as pool:
        claims = list(pool.map(lambda _: links.claim(key, f"/x/{key}", new_owner()), range(10)))
    assert sum(claim is not None for claim in claims) == 1


def test_lease_serialises_runs_and_a_save_keeps_the_bookkeeping(links):
    key, first = str(uuid.uuid4()), new_owner()
    link = links.claim(key, "/x", first)
    with pytest.raises(Busy) as busy:
        links.acquire(key, new_owner(), wait=0.1)
    assert busy.value.code == "SyncBusy" and busy.value.retry_after and busy.value.status == 429
    link.sys_id, link.mod_count, link.known_comments = "a" * 32, 3, ["c1"]
    links.save(link)
    second = links.acquire(key, new_owner(), wait=0.1)
    assert (second.sys_id, second.mod_count, second.known_comments) == ("a" * 32, 3, ["c1"])


def test_expired_lease_is_taken_over_and_the_late_writer_loses(stack, links):
    clock = [1000.0]
    timed = LinkStore(links.store, lease_seconds=30, poll_seconds=0.01, clock=lambda: clock[0])
    key = str(uuid.uuid4())
    slow = timed.claim(key, "/x", new_owner())
    clock[0] += 31  # the first run hangs past its lease
    fast = timed.acquire(key, new_owner(), wait=0.1)
    fast.mod_count = 7
    timed.save(fast)
    slow.mod_count = 1
    with pytest.raises(Busy) as lost:
        timed.save(slow)
    assert lost.value.code == "SyncLeaseLost"
    assert timed.get(key).mod_count == 7


def test_release_after_failure_keeps_what_was_saved(links):
    key, owner = str(uuid.uuid4()), new_owner()
    link = links.claim(key, "/x", owner)
    link.number = "INC0010001"
    links.save(link, release=False)
    links.release(link)
    again = links.acquire(key, new_owner(), wait=0.1)
    assert again.number == "INC0010001"


def test_ticket_index_watermark_and_runs(links):
    links.index_ticket("b" * 32, "inc-key", "/x/inc")
    assert links.incident_for_ticket("b" * 32) == "inc-key"
    assert links.incident_for_ticket("c" * 32) is None
    assert links.watermark() is None
    links.start_watermark("2026-11-20 10:02:10")
    links.start_watermark("2026-11-20 11:00:00")  # only the first ticket sets it
    assert links.watermark() == "2026-11-20 10:02:10"
    links.set_watermark("2026-11-20 12:00:00")
    assert links.watermark() == "2026-11-20 12:00:00"
    assert links.record_poll({"synced": 1}) == 1 and links.record_poll({"synced": 0}) == 2
    assert links.last_poll()["summary"] == {"synced": 0}
