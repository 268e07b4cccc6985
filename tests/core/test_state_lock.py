"""StateStore leases against Azurite: taken at once or refused at once, released by etag, expiry after a crash,
transactions with a companion row, one connection pool per store."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from core.errors import Busy
from core.state import StateStore, op_merge, op_replace
from tests.core.concurrent import pool_full_warnings, together


@pytest.fixture
def store(stack) -> StateStore:
    return StateStore(connection_string=stack.azurite.connection_string, prefix="lk" + uuid.uuid4().hex[:8])


def test_a_held_key_is_refused_at_once_not_polled(store):
    with store.lock("locks", "user|alice", hold_seconds=30):
        started = time.monotonic()
        with pytest.raises(Busy) as caught, store.lock("locks", "user|alice"):
            pass
    assert caught.value.status == 429 and caught.value.retry_after and time.monotonic() - started < 2
    assert "user|alice" in caught.value.message
    assert store.get("locks", "lock", "user|alice") is None  # released by its holder, not by the refused run


def test_concurrent_runs_one_holds_the_others_are_busy(store):
    inside, holders, busy = [0], [], []
    guard = threading.Lock()

    def work(n: int) -> None:
        try:
            with store.lock("locks", "machine|abc"):
                with guard:
                    inside[0] += 1
                    holders.append(inside[0])
                time.sleep(0.3)
                with guard:
                    inside[0] -= 1
        except Busy:
            busy.append(n)

    together(6, work)
    assert holders and max(holders) == 1 and len(holders) + len(busy) == 6
    assert store.get("locks", "lock", "machine|abc") is None


def test_several_keys_are_taken_together_or_not_at_all(store):
    with store.lock("locks", "ip|b"):
        with pytest.raises(Busy):
            store.acquire("locks", ["ip|a", "ip|b", "ip|c"])
    assert store.get("locks", "lock", "ip|a") is None and store.get("locks", "lock", "ip|c") is None
    lease = store.acquire("locks", ["ip|c", "ip|a"])
    assert lease.rows == ["ip|a", "ip|c"] and all(lease.etags.values())
    store.release(lease)
    assert list(store.query("locks", "PartitionKey eq 'lock'")) == []


def test_a_crashed_holders_lease_expires(store):
    store.insert_if_absent("locks", {"PartitionKey": "lock", "RowKey": "ip|203.0.113.9", "until": time.time() - 1})
    with store.lock("locks", "ip|203.0.113.9") as lease:
        assert store.get("locks", "lock", "ip|203.0.113.9")["_etag"] == lease.etags["ip|203.0.113.9"]


def test_a_lease_taken_over_after_expiry_is_not_released_by_its_old_holder(store):
    with store.lock("locks", "machine|x", hold_seconds=0.2):
        time.sleep(0.3)
        taken = store.acquire("locks", ["machine|x"])  # takes over the expired lease
    held = store.get("locks", "lock", "machine|x")
    assert held is not None and held["_etag"] == taken.etags["machine|x"]  # the first holder's etag no longer matched
    store.release(taken)
    assert store.get("locks", "lock", "machine|x") is None


class Counter:
    """A companion row counted in the lease's transaction, re-planned when a concurrent writer changed it."""

    def __init__(self, store: StateStore) -> None:
        self.store, self.row, self.refreshed = store, None, 0

    def operations(self) -> list:
        if self.row is None:
            return [op_merge({"PartitionKey": "lock", "RowKey": "counter", "n": 1})]
        return [op_replace({"PartitionKey": "lock", "RowKey": "counter", "n": self.row["n"] + 1}, self.row["_etag"])]

    def refresh(self) -> None:
        self.refreshed += 1
        self.row = self.store.get("locks", "lock", "counter")


def test_a_companion_row_changes_with_the_lease_and_is_replanned_on_conflict(store):
    counter = Counter(store)
    counter.row = {"n": 0, "_etag": 'W/"datetime\'2020-01-01T00%3A00%3A00.0000000Z\'"'}  # stale on purpose
    store.insert_if_absent("locks", {"PartitionKey": "lock", "RowKey": "counter", "n": 5})
    lease = store.acquire("locks", ["machine|y"], companion=counter)
    assert counter.refreshed == 1 and store.get("locks", "lock", "counter")["n"] == 6
    store.release(lease, also=[op_merge({"PartitionKey": "lock", "RowKey": "op|1", "verb": "isolate"})])
    assert store.get("locks", "lock", "machine|y") is None and store.get("locks", "lock", "op|1")["verb"] == "isolate"


def _writes(store: StateStore, caplog, calls: int) -> int:
    """``calls`` concurrent writes over two tables; the connections urllib3 threw away meanwhile."""
    store.upsert("poola", {"PartitionKey": "p", "RowKey": "warm"})
    store.upsert("poolb", {"PartitionKey": "p", "RowKey": "warm"})
    return pool_full_warnings(caplog, calls, lambda n: store.upsert("poola" if n % 2 else "poolb",
                                                                   {"PartitionKey": "p", "RowKey": str(n)}))


def test_one_pool_per_store_sized_by_the_setting(stack, caplog):
    prefix = "pl" + uuid.uuid4().hex[:8]
    roomy = StateStore(connection_string=stack.azurite.connection_string, prefix=prefix, pool_size=200)
    assert _writes(roomy, caplog, 120) == 0  # every table shares the 200 connections
    tight = StateStore(connection_string=stack.azurite.connection_string, prefix=prefix, pool_size=4)
    assert _writes(tight, caplog, 60) > 0  # the setting reaches the transport


def _tables(stack, store: StateStore) -> set[str]:
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    return {t.name for t in service.list_tables() if t.name.startswith(store.prefix)}


def test_tables_are_created_by_the_first_write_that_finds_them_missing(stack, store):
    """A fresh worker does not ask the service to create every table it touches (a round trip each, before its first
    call's requests): reads of a table never written answer nothing, and a write creates the table when the service
    says it does not exist. Every kind of write, on its own table."""
    assert store.get("fresh", "p", "r") is None and list(store.query("fresh", "PartitionKey eq 'p'")) == []
    assert store.get_many("fresh", "p", ["a", "b"]) == {} and _tables(stack, store) == set()
    store.ping()  # reachable, though the health table was never written
    assert store.insert_if_absent("created", {"PartitionKey": "p", "RowKey": "r"}) is True
    assert store.insert_if_absent("created", {"PartitionKey": "p", "RowKey": "r"}) is False
    store.upsert("upserted", {"PartitionKey": "p", "RowKey": "r", "n": 1})
    store.transaction("batched", [op_merge({"PartitionKey": "p", "RowKey": "r", "n": 2})])
    lease = store.acquire("leased", ["user|alice"])
    store.release(lease)
    assert _tables(stack, store) == {store.table_name(t) for t in ("created", "upserted", "batched", "leased")}
    assert store.get("upserted", "p", "r")["n"] == 1 and store.get("batched", "p", "r")["n"] == 2
