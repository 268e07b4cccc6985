"""The blast-radius budget against Azurite: distinct targets per incident and action within a window, counted
across calls, spent atomically (etag), readable for approvals."""

from __future__ import annotations

import uuid

import pytest

from core.radius import TABLE, BlastRadius, BlastRadiusExceeded
from core.settings import Settings
from core.state import StateStore
from tests.core.concurrent import together

INCIDENT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/w/providers/" \
           "Microsoft.SecurityInsights/Incidents/" + str(uuid.uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(stack) -> StateStore:
    return StateStore(connection_string=stack.azurite.connection_string, prefix="rb" + uuid.uuid4().hex[:8])


def budget(store, clock, cap: int = 3, hours: int = 24) -> BlastRadius:
    settings = Settings.from_env({"RESPONSE_MAX_TARGETS": str(cap), "RESPONSE_RADIUS_WINDOW_HOURS": str(hours)})
    return BlastRadius(store, settings, clock)


def test_distinct_targets_count_across_calls_and_a_retry_counts_once(store):
    radius = budget(store, Clock())
    radius.reserve(INCIDENT, "entra-disable-user", ["a", "B"], "users")
    radius.reserve(INCIDENT, "entra-disable-user", ["b", "a"], "users")  # the retry: nothing new
    assert radius.remaining(INCIDENT, "entra-disable-user") == 1
    with pytest.raises(BlastRadiusExceeded, match="RESPONSE_MAX_TARGETS=3"):
        radius.reserve(INCIDENT, "entra-disable-user", ["c", "d"], "users")
    assert radius.remaining(INCIDENT, "entra-disable-user") == 1  # the refused call spent nothing
    radius.check(INCIDENT, "entra-disable-user", ["c"], "users")  # a dry run of one more still fits
    assert radius.remaining(INCIDENT, "mde-isolate") == 3  # each action has its own budget


def test_targets_older_than_the_window_no_longer_count(store):
    clock = Clock()
    radius = budget(store, clock, hours=1)
    radius.reserve(INCIDENT, "block-ip", ["203.0.113.1", "203.0.113.2", "203.0.113.3"], "IP addresses")
    assert radius.remaining(INCIDENT, "block-ip") == 0
    clock.now += 3601
    assert radius.remaining(INCIDENT, "block-ip") == 3
    radius.reserve(INCIDENT, "block-ip", ["203.0.113.4"], "IP addresses")
    assert radius.remaining(INCIDENT, "block-ip") == 2


def test_concurrent_reservations_never_exceed_the_cap(store):
    radius = budget(store, Clock(), cap=5)
    granted, refused = [], []

    def reserve(n: int) -> None:
        try:
            radius.reserve(INCIDENT, "mde-isolate", [f"m{n}a", f"m{n}b"], "machines")
            granted.append(n)
        except BlastRadiusExceeded:
            refused.append(n)

    together(6, reserve)
    assert len(granted) == 2 and len(refused) == 4  # 2 x 2 targets fit under 5; a third pair would not
    assert radius.remaining(INCIDENT, "mde-isolate") == 1
    (row,) = store.query(TABLE, "PartitionKey eq 'response'")
    assert row["RowKey"].startswith("radius|")
