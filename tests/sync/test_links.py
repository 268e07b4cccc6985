"""The ticket map and its leases in Table Storage (Azurite): one winner, no lost update."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import Busy
from core.state import StateStore
from sync.links import HELD_HERE, LinkStore, PollCursor, Superseded, new_owner
from tests.conftest import count_reads, wait_for


@pytest.fixture
def links(stack):
    store = StateStore(connection_string=stack.azurite.connection_string, prefix="l" + uuid.uuid4().hex[:8])
    return LinkStore(store, lease_seconds=30)


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


def test_a_run_waits_for_a_holder_of_this_process_on_an_event_without_reading_again(links):
    """No spinning lock (issue #16): while the holder works, the waiter sends no Table request; it goes on as soon as
    the lease is given back."""
    key, holder = str(uuid.uuid4()), new_owner()
    link = links.claim(key, "/x", holder)
    reads = count_reads(links.store)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(links.acquire(key, new_owner(), wait=60)))
    waiter.start()
    wait_for(lambda: reads[0] >= 1, timeout=30)  # it read the link and found it leased
    time.sleep(0.3)  # a poll every 50 ms would have read it six times by now
    assert reads[0] == 1 and not got
    link.mod_count = 7
    links.save(link)
    waiter.join(timeout=30)
    assert got and got[0].mod_count == 7 and reads[0] == 2


def test_a_pair_leased_by_another_process_answers_busy_at_once(links):
    """The holder is not in this process (a crashed run or another instance): the trigger's retry comes back later."""
    key, holder = str(uuid.uuid4()), new_owner()
    links.claim(key, "/x", holder)
    HELD_HERE.give_back(key, holder)  # as another process sees it: the row is leased, no run here holds it
    reads = count_reads(links.store)
    started = time.monotonic()
    with pytest.raises(Busy) as busy:
        links.acquire(key, new_owner(), wait=60)
    assert busy.value.status == 429 and busy.value.retry_after and reads[0] == 1
    assert time.monotonic() - started < 30  # at once, not after the 60 s it was allowed to wait


def test_expired_lease_is_taken_over_and_the_late_writer_loses(stack, links):
    clock = [1000.0]
    timed = LinkStore(links.store, lease_seconds=30, clock=lambda: clock[0])
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


def test_a_late_writer_that_lost_its_lease_does_not_wake_the_new_holders_waiters(links):
    """The lease passed (expired) to another run of this process: the late run's refused save gives back only its own
    entry, so runs waiting for the new holder keep waiting for it rather than answering Busy."""
    clock = [1000.0]
    timed = LinkStore(links.store, lease_seconds=30, clock=lambda: clock[0])
    key = str(uuid.uuid4())
    slow = timed.claim(key, "/x", new_owner())
    clock[0] += 31
    fast = timed.acquire(key, new_owner(), wait=0.1)
    waiting_on = HELD_HERE.event(key)
    with pytest.raises(Busy):
        timed.save(slow)
    assert HELD_HERE.event(key) is waiting_on and not waiting_on.is_set()
    timed.save(fast)
    assert waiting_on.is_set() and HELD_HERE.event(key) is None


def test_release_after_failure_keeps_what_was_saved(links):
    key, owner = str(uuid.uuid4()), new_owner()
    link = links.claim(key, "/x", owner)
    link.number = "INC0010001"
    links.save(link, release=False)
    links.release(link)
    again = links.acquire(key, new_owner(), wait=0.1)
    assert again.number == "INC0010001"


def test_ticket_index_cursor_and_runs(links):
    links.index_ticket("b" * 32, "inc-key", "/x/inc")
    assert links.incident_for_ticket("b" * 32) == "inc-key"
    assert links.incident_for_ticket("c" * 32) is None
    assert links.cursor() is None
    links.start_cursor("2026-11-20 10:02:10")
    links.start_cursor("2026-11-20 11:00:00")  # only the first ticket sets it
    assert links.cursor() == PollCursor(stamp="2026-11-20 10:02:10")
    many = {f"{i:032x}": ["2026-11-20 12:00:00", i] for i in range(2000)}  # more than one property holds
    links.save_cursor(PollCursor("2026-11-20 12:00:00", "f" * 32, recheck="2026-11-20 11:59:50", complete=False,
                                 recent=many))
    assert links.cursor() == PollCursor("2026-11-20 12:00:00", "f" * 32, "2026-11-20 11:59:50", False, many)
    assert links.last_poll() is None
    links.record_poll({"synced": 1})
    assert links.last_poll()["summary"] == {"synced": 1}


def test_a_cursor_row_of_the_earlier_design_reads_from_its_older_mark(links):
    links.store.upsert("snowlinks", {"PartitionKey": "poll", "RowKey": "watermark", "since": "2026-11-20 10:00:00",
                                     "floor": "2026-11-20 09:59:00"})
    assert links.cursor() == PollCursor(stamp="2026-11-20 09:59:00", complete=False)


def test_a_lease_is_short_and_renewed_when_a_run_is_long(stack, links):
    clock = [1000.0]
    timed = LinkStore(links.store, clock=lambda: clock[0])
    assert timed.lease_seconds == 30  # a run killed mid-way holds its pair for half a minute, not two
    link = timed.claim(str(uuid.uuid4()), "/x", new_owner())
    clock[0] += 10
    timed.renew(link)  # more than half left: nothing written
    assert link.lease_until == 1030
    clock[0] += 10
    timed.renew(link)
    assert link.lease_until == 1050 and timed.get(link.incident_key).lease_until == 1050


def test_a_link_read_without_the_lease_is_saved_only_if_unchanged(links):
    key = str(uuid.uuid4())
    first = links.claim(key, "/x", new_owner())
    links.save(first)
    mine, theirs = links.get(key), links.get(key)
    theirs.mod_count = 5
    assert links.save_if_unchanged(theirs)
    mine.mod_count = 3
    assert not links.save_if_unchanged(mine)
    assert links.get(key).mod_count == 5
    assert links.take(mine, new_owner()) is None  # a stale read cannot take the lease either


def test_a_pages_links_are_read_and_saved_together_and_one_written_meanwhile_is_left_to_its_writer(links):
    keys = [str(uuid.uuid4()) for _ in range(20)]  # two read queries (14 keys each at most), one transaction
    for key in keys:
        links.save(links.claim(key, f"/x/{key}", new_owner()))
    read = links.get_many([*keys, str(uuid.uuid4())])  # an unknown key is simply absent
    assert sorted(read) == sorted(keys) and all(read[k].etag == links.get(k).etag for k in keys)
    theirs = links.get(keys[3])
    theirs.mod_count = 9
    assert links.save_if_unchanged(theirs)  # another run (a push) saved this pair meanwhile
    owner = new_owner()
    leased = links.take(read[keys[5]], owner)
    for key in keys:
        read[key].mod_count = 4
    leased.mod_count, leased.lease_owner = 4, ""
    batch = [(read[k], "") for k in keys if k != keys[5]] + [(leased, owner)]
    outcomes = links.save_all(batch)
    assert [k for k, problem in outcomes.items() if problem is not None] == [keys[3]]
    assert isinstance(outcomes[keys[3]], Superseded)
    assert links.get(keys[3]).mod_count == 9  # theirs stays
    assert all(links.get(k).mod_count == 4 for k in keys if k != keys[3])
    assert links.get(keys[5]).lease_owner == ""  # the leased one saved and released
    again = [(read[k], "") for k in keys if k not in (keys[3], keys[5])]
    for link, _ in again:
        link.mod_count = 6
    assert all(problem is None for problem in links.save_all(again).values())  # each kept its new etag
    assert links.get(keys[0]).mod_count == 6
