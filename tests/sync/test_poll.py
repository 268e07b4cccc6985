"""The poll: where a change may still be committing (pure), and the timer end to end."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sync.poll import fresh_from, shift_stamp
from sync.servicenow import Position
from tests.conftest import wait_for
from tests.sync.conftest import SyncClient, fresh_incident, guid, sync_settings
from tests.sync.counting import StorageCounter

OVERLAP = 10  # SERVICENOW_POLL_OVERLAP_SECONDS (default)


def test_shift_stamp():
    assert shift_stamp("2026-11-20 10:00:03", -5) == "2026-11-20 09:59:58"
    assert shift_stamp("2026-12-31 23:59:59", 1) == "2027-01-01 00:00:00"


def row(stamp: str) -> dict:
    return {"sys_updated_on": stamp, "sys_id": "a" * 32}


def test_a_page_read_long_after_its_changes_needs_no_second_look():
    assert fresh_from(Position("2026-11-20 10:00:00"), [row("2026-11-20 10:00:05")], "2026-11-20 10:02:00", 10) == ""


def test_a_page_read_right_after_its_changes_is_read_again_from_where_they_may_still_commit():
    rows = [row("2026-11-20 10:00:01"), row("2026-11-20 10:00:20")]
    # read at 10:00:25 with a 10 s overlap: stamps up to 10:00:14 had committed; 10:00:15 on may still come
    assert fresh_from(Position("2026-11-20 10:00:00"), rows, "2026-11-20 10:00:25", 10) == "2026-11-20 10:00:15"
    # never before where the page started
    assert fresh_from(Position("2026-11-20 10:00:18", "b" * 32), rows, "2026-11-20 10:00:25", 10) \
        == "2026-11-20 10:00:18"
    assert fresh_from(Position("2026-11-20 10:00:00"), [], "2026-11-20 10:00:25", 10) == ""


# == end to end: the timer through the local host =================================================


@pytest.fixture(scope="module")
def counted(stack):
    """A sync host whose Table Storage requests are counted, with small pages: 2 tickets, 5 pages per run."""
    direct = stack.azurite.connection_string
    with StorageCounter(StorageCounter.table_port(direct)) as counter:
        process = stack.host(**sync_settings(STATE_STORAGE_CONNECTION=StorageCounter.connection_string(
            direct, counter.port), SERVICENOW_POLL_BATCH="2", SERVICENOW_POLL_MAX_PAGES="5"))
        try:
            client = SyncClient(process, stack, state_connection=direct)
            client.counter = counter
            yield client
        finally:
            process.stop()


def link_pairs(client, n: int) -> list[tuple[str, dict]]:
    """n incidents with their tickets (the outbound sync, 8 at a time): [(incident id, ticket)]."""
    stack = client.stack
    made = [fresh_incident(stack) for _ in range(n)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda pair: client.outbound(pair[0]), made))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    return [(incident_id, stack.snow.records(correlation_id=guid(incident_id))[0]) for _, incident_id in made]


def severity(stack, incident_id: str) -> str:
    return stack.arm.incident(incident_id)["properties"]["severity"]


@pytest.mark.e2e
def test_a_burst_of_five_times_a_runs_cap_is_applied_in_full(counted):
    """issue 16.4: 50 changes within a second or two, a run reads at most 10 (5 pages of 2): every run makes
    progress, and every change is applied. Before the cursor, runs restarted 5 s before the newest change seen
    and, with more than a run's worth of changes in that window, never got further."""
    stack = counted.stack
    stack.reset()
    pairs = link_pairs(counted, 50)
    counted.poll()  # catch up with the creations
    stack.snow.advance(OVERLAP + 2)
    counted.poll()
    for _, ticket in pairs:  # the burst: an analyst's bulk update
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency="3")
    runs = counted.poll_until(lambda: all(severity(stack, i) == "Informational" for i, _ in pairs), runs=12)
    assert len(runs) <= 8, runs  # 5 runs of 10, then the look back at what may still have been committing
    assert all(run["stopped"] is None for run in runs)
    applied = [run["synced"] for run in runs]
    assert sum(applied) == 50 and max(applied) <= 10, runs


@pytest.mark.e2e
def test_a_change_committed_late_inside_the_window_is_applied(counted):
    stack = counted.stack
    stack.reset()
    (late_id, late), (early_id, early) = link_pairs(counted, 2)
    counted.poll()
    stack.snow.advance(OVERLAP + 2)
    counted.poll()
    token = stack.snow.begin_update(late["sys_id"], "megan.bowen", impact="3", urgency="3")  # stamped now...
    stack.snow.advance(1)
    stack.snow.update_as(early["sys_id"], "megan.bowen", impact="2", urgency="3")  # ...a later change commits first
    counted.poll()
    assert severity(stack, early_id) == "Low" and severity(stack, late_id) == "High"  # not visible yet
    stack.snow.commit(token)  # 1 s after its stamp, well inside the overlap window
    counted.poll()
    assert severity(stack, late_id) == "Informational"


@pytest.mark.e2e
def test_an_idle_cycle_is_one_request_and_no_table_write(counted):
    stack = counted.stack
    stack.reset()
    [(incident_id, ticket)] = link_pairs(counted, 1)
    stack.snow.update_as(ticket["sys_id"], "megan.bowen", urgency="3")
    counted.poll()
    assert severity(stack, incident_id) == "Medium"
    stack.snow.advance(OVERLAP + 2)
    counted.poll()  # the look back at the window after that change
    for _ in range(5):
        snow_before, storage_before = len(stack.snow.received), counted.counter.snapshot()
        summary = counted.poll()
        assert summary["examined"] == 0
        assert len(stack.snow.received) - snow_before == 1
        assert counted.counter.counts(storage_before) == {"calls": 1, "writes": 0}  # the cursor read


@pytest.mark.e2e
def test_a_pages_tickets_are_reconciled_side_by_side(sync_host):
    """issue 16.1: with Sentinel answering in a second, five changed tickets of one page are read at once, not
    one after another (a sequential poll leaves at least a second between two incident reads)."""
    stack = sync_host.stack
    stack.reset()
    pairs = link_pairs(sync_host, 5)
    sync_host.poll()
    stack.snow.advance(OVERLAP + 2)
    sync_host.poll()
    for _, ticket in pairs:
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency="3")
    stack.arm.latency = 1.0
    try:
        mark = len(stack.arm.received)
        assert sync_host.poll()["synced"] == 5
    finally:
        stack.arm.latency = 0.0
    reads = sorted(r.at for r in stack.arm.received[mark:] if r.method == "GET" and "/comments" not in r.path)
    assert len(reads) == 5 and reads[1] - reads[0] < 0.5, [round(t - reads[0], 2) for t in reads]


@pytest.mark.e2e
def test_a_page_read_ahead_that_fails_keeps_what_the_run_applied(counted):
    """The next page is read while one is applied: when that read fails (ServiceNow down past the retries), the run
    stops after the page it applied, the cursor keeps that progress, and the next run goes on from there."""
    import threading

    stack = counted.stack
    stack.reset()
    pairs = link_pairs(counted, 4)  # two pages of 2
    counted.poll()
    stack.snow.advance(OVERLAP + 2)
    counted.poll()
    for _, ticket in pairs:
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency="3")
    lists = len(stack.snow.requests_to("GET", r"/table/incident$"))
    go = threading.Event()
    held = stack.snow.hold(go.is_set, path=r"/table/sys_journal_field$")  # the first page's journal
    runner = threading.Thread(target=lambda: results.append(counted.poll()))
    results: list[dict] = []
    runner.start()
    try:
        wait_for(lambda: len(stack.snow.requests_to("GET", r"/table/incident$")) > lists, timeout=60, interval=0.02)
        stack.snow.fail(503, path=r"/table/incident$", method="GET", times=20, retry_after=0)  # the page read ahead
        go.set()
        runner.join(120)
    finally:
        go.set()
        stack.snow.clear_faults()
    [summary] = results
    assert held.released == [True]
    assert summary["synced"] == 2 and summary["stopped"] and "ServiceNow" in summary["stopped"], summary
    assert sorted(severity(stack, i) for i, _ in pairs).count("Informational") == 2
    after = counted.poll()
    assert after["synced"] == 2 and after["stopped"] is None, after
    assert all(severity(stack, i) == "Informational" for i, _ in pairs)
