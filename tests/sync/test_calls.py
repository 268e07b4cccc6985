"""How many calls each sync action makes (issue 16, item 2), counted by what the services received: the ARM and
ServiceNow emulators' request lists and a counting proxy in front of Table Storage (nothing mocked).

Targets: a new ticket in at most 9 calls (15 before), close-incident in at most 4 (5), an idle poll in one
ServiceNow request and no Table write, at most 5 calls per changed ticket when polling. Token requests to the
identity endpoint are not counted (cached for the token's lifetime).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.sync.conftest import SyncClient, fresh_incident, guid, sync_settings
from tests.sync.counting import StorageCounter

pytestmark = pytest.mark.e2e
OVERLAP = 10


@pytest.fixture(scope="module")
def counted(stack):
    direct = stack.azurite.connection_string
    with StorageCounter(StorageCounter.table_port(direct)) as counter:
        process = stack.host(**sync_settings(STATE_STORAGE_CONNECTION=StorageCounter.connection_string(
            direct, counter.port), SERVICENOW_POLL_BATCH="100"))
        try:
            client = SyncClient(process, stack, state_connection=direct)
            client.counter = counter
            fresh = fresh_incident(stack)[0]  # the first ticket of a process also starts the poll cursor
            assert client.outbound(fresh).status_code == 200
            yield client
        finally:
            process.stop()


class Calls:
    """Requests the services received between ``start`` and ``stop``."""

    def __init__(self, client) -> None:
        self.client, self.stack = client, client.stack

    def __enter__(self) -> Calls:
        self.arm, self.snow = len(self.stack.arm.received), len(self.stack.snow.received)
        self.table = self.client.counter.snapshot()
        return self

    def __exit__(self, *exc) -> None:
        self.arm = len(self.stack.arm.received) - self.arm
        self.snow = len(self.stack.snow.received) - self.snow
        counts = self.client.counter.counts(self.table)
        self.table, self.table_writes = counts["calls"], counts["writes"]

    @property
    def total(self) -> int:
        return self.arm + self.snow + self.table

    def __repr__(self) -> str:
        return f"Calls(arm={self.arm}, servicenow={self.snow}, table={self.table} ({self.table_writes} writes))"


def test_create_is_at_most_nine_calls(counted):
    body, _ = fresh_incident(counted.stack)
    with Calls(counted) as calls:
        assert counted.outbound(body).status_code == 200
    assert calls.total <= 9, calls
    assert calls.snow == 2  # look-up by correlation id (an interrupted run's ticket), create


def test_close_incident_is_four_calls_without_a_ticket_and_eight_with_one(counted):
    body, _ = fresh_incident(counted.stack)
    with Calls(counted) as calls:
        answer = counted.post("orchestration/close-incident", {**body, "classification": "FalsePositive"})
    assert answer.status_code == 200 and answer.json()["ticket"] == {"result": "no-ticket"}
    assert calls.total <= 4, calls  # read + write the incident, its comment, the link look-up

    body, incident_id = fresh_incident(counted.stack)
    assert counted.outbound(body).status_code == 200
    with Calls(counted) as calls:
        answer = counted.post("orchestration/close-incident", {**body, "classification": "FalsePositive"})
    assert answer.status_code == 200 and answer.json()["ticket"]["result"] == "synced", answer.text
    assert calls.snow == 1 and calls.arm == 3 and calls.total <= 8, calls  # one PATCH: no ticket read
    [ticket] = counted.stack.snow.records(correlation_id=guid(incident_id))
    assert ticket["state"] == "6" and ticket["close_code"] == "No resolution provided"
    with Calls(counted) as again:  # the Logic App retries: nothing is written twice
        assert counted.post("orchestration/close-incident", {**body, "classification": "FalsePositive"}
                            ).status_code == 200
    assert again.snow == 0 and [e["element"] for e in counted.stack.snow.journal(ticket["sys_id"])] == ["work_notes"]


def test_a_changed_ticket_costs_at_most_five_calls_when_polled(counted):
    stack = counted.stack
    made = [fresh_incident(stack) for _ in range(10)]
    with ThreadPoolExecutor(8) as pool:
        assert all(a.status_code == 200 for a in pool.map(lambda pair: counted.outbound(pair[0]), made))
    counted.poll()
    stack.snow.advance(OVERLAP + 2)
    counted.poll()
    for _, incident_id in made:
        [ticket] = stack.snow.records(correlation_id=guid(incident_id))
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency="3")
    with Calls(counted) as calls:
        summary = counted.poll()
    assert summary["synced"] == 10
    assert calls.total / 10 <= 5, calls


def test_a_push_of_a_change_costs_one_ticket_read(counted):
    stack = counted.stack
    body, incident_id = fresh_incident(stack)
    assert counted.outbound(body).status_code == 200
    [ticket] = stack.snow.records(correlation_id=guid(incident_id))
    stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency="3")
    with Calls(counted) as calls:
        assert counted.push_ticket(ticket["sys_id"]).status_code == 200
    assert calls.snow == 2 and calls.table <= 3 and calls.total <= 7, calls  # the ticket, its journal
