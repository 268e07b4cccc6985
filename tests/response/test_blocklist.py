"""The block list in Table Storage (Azurite) and the firewall feed format."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.state import StateStore
from response.blocklist import BlockEntry, BlockList, render_edl


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(stack):
    return StateStore(connection_string=stack.azurite.connection_string, prefix="bl" + uuid.uuid4().hex[:8])


def entry(address: str, expires: float, incident: str = "inc-1", created: float = 0.0) -> BlockEntry:
    return BlockEntry(address, incident, f"incident {incident}", created, expires, "1001")


def test_add_is_conditional_and_only_moves_expiry_later(store):
    clock = Clock()
    blocklist = BlockList(store, clock)
    assert blocklist.add(entry("203.0.113.45", clock.now + 100)) == "added"
    assert blocklist.add(entry("203.0.113.45", clock.now + 50, incident="inc-2")) == "present"
    assert blocklist.add(entry("203.0.113.45", clock.now + 500, incident="inc-2")) == "renewed"
    kept = blocklist.get("203.0.113.45")
    assert kept.expires_at == clock.now + 500 and kept.incident_id == "inc-1"  # who blocked it first stays


def test_expired_entries_leave_the_feed_and_are_replaced(store):
    clock = Clock()
    blocklist = BlockList(store, clock)
    blocklist.add(entry("198.51.100.23", clock.now + 10))
    blocklist.add(entry("2001:db8::1", clock.now + 1000))
    clock.now += 20
    assert blocklist.get("198.51.100.23") is None
    assert [e.address for e in blocklist.active()] == ["2001:db8::1"]
    assert blocklist.add(entry("198.51.100.23", clock.now + 10, incident="inc-3")) == "added"
    assert blocklist.get("198.51.100.23").incident_id == "inc-3"
    assert blocklist.remove("198.51.100.23") is True and blocklist.remove("198.51.100.23") is False


def test_concurrent_blocks_list_the_address_once(store):
    blocklist = BlockList(store)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: blocklist.add(entry("203.0.113.99", 4_000_000_000.0 + i)), range(8)))
    assert results.count("added") == 1
    assert [e.address for e in blocklist.active()] == ["203.0.113.99"]


def test_feed_is_one_address_per_line_ipv4_first():
    entries = [entry(a, 1.0) for a in ("2001:db8::2", "203.0.113.45", "198.51.100.23", "2001:db8::1", "203.0.113.45")]
    assert render_edl(entries) == "198.51.100.23\n203.0.113.45\n2001:db8::1\n2001:db8::2\n"
    assert render_edl([]) == ""
