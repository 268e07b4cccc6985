"""StateStore.lock against Azurite: one holder at a time, expiry after a crash, Busy when held too long."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from core.errors import Busy
from core.state import StateStore


@pytest.fixture
def store(stack) -> StateStore:
    return StateStore(connection_string=stack.azurite.connection_string, prefix="lk" + uuid.uuid4().hex[:8])


def test_holders_take_turns(store):
    inside, overlaps, entered = [0], [], []
    lock = threading.Lock()

    def work(n: int) -> None:
        with store.lock("locks", "machine|abc"):
            with lock:
                inside[0] += 1
                overlaps.append(inside[0])
            time.sleep(0.05)
            entered.append(n)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(entered) == list(range(6)) and max(overlaps) == 1
    assert store.get("locks", "lock", "machine|abc") is None  # released


def test_a_crashed_holders_lease_expires(store):
    store.insert_if_absent("locks", {"PartitionKey": "lock", "RowKey": "ip|203.0.113.9", "owner": "gone",
                                     "until": time.time() - 1})
    with store.lock("locks", "ip|203.0.113.9", wait_seconds=1):
        assert store.get("locks", "lock", "ip|203.0.113.9")["owner"] != "gone"


def test_held_too_long_is_busy_and_retryable(store):
    with store.lock("locks", "user|alice", hold_seconds=30):
        started = time.monotonic()
        with pytest.raises(Busy) as caught, store.lock("locks", "user|alice", wait_seconds=0.3):
            pass
    assert caught.value.status == 429 and caught.value.retry_after and time.monotonic() - started < 3
    assert "user|alice" in caught.value.message


def test_an_expired_lease_taken_over_is_not_released_by_its_old_holder(store):
    with store.lock("locks", "machine|x", hold_seconds=0.2):
        time.sleep(0.3)
        with store.lock("locks", "machine|x", wait_seconds=1):  # takes over the expired lease
            pass
        store.insert_if_absent("locks", {"PartitionKey": "lock", "RowKey": "machine|x", "owner": "next",
                                         "until": time.time() + 30})
    assert store.get("locks", "lock", "machine|x")["owner"] == "next"  # the first holder left it alone
