"""The registry of leases runs of this process hold (core/held_here.py): events per owner."""

from __future__ import annotations

from core.held_here import HeldHere


def test_a_give_back_sets_the_holders_event_and_only_the_holders():
    held = HeldHere()
    held.hold("k", "a")
    event = held.event("k")
    held.give_back("k", "someone else")  # not the holder: nothing changes
    assert held.event("k") is event and not event.is_set()
    held.give_back("k", "a")
    assert event.is_set() and held.event("k") is None
    held.give_back("k", "a")  # twice is harmless
    assert held.event("unknown") is None


def test_a_lease_taken_over_wakes_the_old_holders_waiters_and_keeps_the_new_holders_entry():
    held = HeldHere()
    held.hold("k", "a")
    old = held.event("k")
    held.hold("k", "b")  # a's lease expired and b took it
    new = held.event("k")
    assert old.is_set() and new is not old and not new.is_set()
    held.give_back("k", "a")  # the late run ends: b's waiters keep waiting for b
    assert held.event("k") is new and not new.is_set()
    held.give_back("k", "b")
    assert new.is_set()
