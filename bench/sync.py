"""``make bench`` scenario: the ServiceNow sync, in calls and in time, under a latency profile.

Counted from what each service received -- the ARM and ServiceNow emulators' request logs and a counting proxy
in front of Table Storage (tests/sync/counting.py) -- never from the pack's own internals:
- create (a new ticket for a new incident): calls, goal <= 9 (15 before issue 16);
- close-incident: calls without a ticket, goal <= 4 (5 before); with a ticket, reported (14 before);
- poll, idle: ServiceNow requests (goal 1) and Table Storage writes (goal 0);
- poll, k changed tickets among N (k = 1 / 10 / 100 / 1,000): calls per changed ticket (goal <= 5; about 9
  before), requests per cycle and time, every change applied;
- poll, a burst of five times a run's cap within one second: every change applied, each run making progress;
- an incident-updated burst: one ticket update per Updated trigger, none for the same triggers again.
The stack runs the ``real`` latency profile (localdev/latency.py) unless ``LOCAL_LATENCY_PROFILE`` says
otherwise. The instance clock is moved past the poll's overlap window between phases (no sleeping).

``run(quick)`` returns rows shaped like ``bench/common.py``'s ``row(...)``; ``goals_missed(rows)``
names the count goals a run missed (timings are reported, never asserted).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row  # noqa: E402
from localdev.stack import Stack  # noqa: E402
from tests.sync.conftest import SyncClient, fresh_incident, guid, sync_settings  # noqa: E402
from tests.sync.counting import StorageCounter  # noqa: E402

PAGE = 100
OVERLAP = 10  # SERVICENOW_POLL_OVERLAP_SECONDS (default)
CALLERS = 8
# Measured on the design before issue 16 (same stack, same counting): the references of the call goals.
BEFORE = {"create": 15, "close": 5, "close with a ticket": 14, "per changed ticket": 9}
CREATE = "create: calls (ARM + ServiceNow + Table Storage)"
CLOSE = "close-incident without a ticket: calls"
IDLE = "poll, idle: ServiceNow requests"
IDLE_WRITES = "poll, idle: Table Storage writes"
PER_TICKET = "poll, {k} changed: calls per changed ticket"
APPLIED = "poll, {k} changed: changes applied"
BURST = "poll burst of 5x a run's cap: changes applied"


class Counts:
    """Requests each service received during a ``with`` block."""

    def __init__(self, stack, counter: StorageCounter) -> None:
        self.stack, self.counter = stack, counter

    def __enter__(self) -> Counts:
        self.started = time.perf_counter()
        self._arm, self._snow = len(self.stack.arm.received), len(self.stack.snow.received)
        self._table = self.counter.snapshot()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self.arm = len(self.stack.arm.received) - self._arm
        self.snow = len(self.stack.snow.received) - self._snow
        table = self.counter.counts(self._table)
        self.table, self.table_writes = table["calls"], table["writes"]
        self.total = self.arm + self.snow + self.table


def _host(stack, counter: StorageCounter, **settings: str) -> SyncClient:
    direct = stack.azurite.connection_string
    process = stack.host(**sync_settings(
        STATE_STORAGE_CONNECTION=StorageCounter.connection_string(direct, counter.port), **settings))
    return SyncClient(process, stack, state_connection=direct)


def _link(client: SyncClient, n: int) -> list[tuple[dict, str, dict]]:
    """n new incidents through the outbound sync (CALLERS at a time): [(trigger body, incident id, ticket)]."""
    made = [fresh_incident(client.stack) for _ in range(n)]
    with ThreadPoolExecutor(CALLERS) as pool:
        statuses = list(pool.map(lambda pair: client.outbound(pair[0]).status_code, made))
    failed = sum(status != 200 for status in statuses)
    if failed:
        raise RuntimeError(f"{failed} of {n} outbound calls failed")
    return [(body, incident_id, client.stack.snow.records(correlation_id=guid(incident_id))[0])
            for body, incident_id in made]


def _settle(client: SyncClient) -> None:
    """Past the overlap window of everything so far, then the one look back: the next cycle starts idle."""
    client.poll()
    client.stack.snow.advance(OVERLAP + 2)
    client.poll()


def run(quick: bool) -> list[dict]:
    profile = os.environ.get("LOCAL_LATENCY_PROFILE", "real")
    tickets = int(os.environ.get("BENCH_SYNC_TICKETS", "0")) or (40 if quick else 1000)
    changes = [k for k in (1, 10, 100, 1000) if k <= tickets]
    scenario = f"servicenow sync: {tickets} tickets, page {PAGE}, latency {profile}"
    rows: list[dict] = []
    with Stack(latency=profile) as stack:
        with StorageCounter(StorageCounter.table_port(stack.azurite.connection_string)) as counter:
            client = _host(stack, counter, SERVICENOW_POLL_BATCH=str(PAGE))
            try:
                rows += _create_and_close(stack, counter, client, scenario)
                rows += _polls(stack, counter, client, scenario, tickets, changes)
                rows += _update_burst(stack, client, scenario, 20 if quick else 100)
            finally:
                client.host.stop()
            stack.reset()
            client = _host(stack, counter, SERVICENOW_POLL_BATCH="10", SERVICENOW_POLL_MAX_PAGES="2")
            try:
                rows += _burst(stack, client, scenario, cap=20)
            finally:
                client.host.stop()
    return rows


def _create_and_close(stack, counter, client: SyncClient, scenario: str) -> list[dict]:
    _link(client, 1)  # the first ticket of a process also starts the poll cursor: not the steady state
    body, _ = fresh_incident(stack)
    with Counts(stack, counter) as create:
        assert client.outbound(body).status_code == 200
    lone, _ = fresh_incident(stack)
    with Counts(stack, counter) as close:
        answer = client.post("orchestration/close-incident", {**lone, "classification": "FalsePositive"})
        assert answer.status_code == 200, answer.text
    with Counts(stack, counter) as close_ticket:
        assert client.post("orchestration/close-incident", {**body, "classification": "FalsePositive"}
                           ).status_code == 200
    return [
        row(scenario, CREATE, create.total, BEFORE["create"], "<= 9"),
        row(scenario, "create: time (s)", create.seconds, None, "reported"),
        row(scenario, CLOSE, close.total, BEFORE["close"], "<= 4"),
        row(scenario, "close-incident with a ticket: calls", close_ticket.total, BEFORE["close with a ticket"],
            "reported: one PATCH, no ticket read"),
        row(scenario, "close-incident with a ticket: time (s)", close_ticket.seconds, None, "reported"),
    ]


def _polls(stack, counter, client: SyncClient, scenario: str, tickets: int, changes: list[int]) -> list[dict]:
    started = time.perf_counter()
    pairs = _link(client, tickets)
    rows = [row(scenario, "incidents linked per second", len(pairs) / (time.perf_counter() - started), None,
                f"reported ({CALLERS} callers)")]
    _settle(client)
    with Counts(stack, counter) as idle:
        summary = client.poll()
    rows += [row(scenario, IDLE, idle.snow, None, "1"), row(scenario, IDLE_WRITES, idle.table_writes, None, "0"),
             row(scenario, "poll, idle: Table Storage calls", idle.table, None, "reported (the cursor read)")]
    assert summary.get("examined") == 0, summary
    for k in changes:
        picked = pairs[:k]
        for _, _, ticket in picked:
            stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency=str(1 + k % 3))
        with Counts(stack, counter) as cycle:
            summaries = [client.poll()]
            while summaries[-1].get("complete") is False and len(summaries) < 10:
                summaries.append(client.poll())
        urgency = str(1 + k % 3)
        applied = sum(stack.snow.record(t["sys_id"])["urgency"] == urgency and _severity(stack, i) == _expected(k)
                      for _, i, t in picked)
        rows += [
            row(scenario, PER_TICKET.format(k=k), cycle.total / k, BEFORE["per changed ticket"],
                "<= 5" if k >= 10 else "reported: a cycle's fixed cost (cursor, page, journal) on one ticket"),
            row(scenario, APPLIED.format(k=k), applied, len(picked), f"= {len(picked)}"),
            row(scenario, f"poll, {k} changed: ServiceNow requests", cycle.snow, None, "grows with k / page, not N"),
            row(scenario, f"poll, {k} changed: time (s)", cycle.seconds, None, "reported"),
        ]
        _settle(client)
    return rows


def _severity(stack, incident_id: str) -> str:
    return stack.arm.incident(incident_id)["properties"]["severity"]


def _expected(k: int) -> str:
    """The Sentinel severity of impact 3 and urgency 1 + k % 3 (the default mapping)."""
    return {"1": "Medium", "2": "Low", "3": "Informational"}[str(1 + k % 3)]


def _burst(stack, client: SyncClient, scenario: str, cap: int) -> list[dict]:
    pairs = _link(client, 5 * cap)
    _settle(client)
    for _, _, ticket in pairs:  # within a second or two: an analyst's bulk update
        stack.snow.update_as(ticket["sys_id"], "megan.bowen", impact="3", urgency="3")
    runs = 0
    while runs < 20 and not all(_severity(stack, i) == "Informational" for _, i, _ in pairs):
        client.poll()
        runs += 1
    applied = sum(_severity(stack, i) == "Informational" for _, i, _ in pairs)
    return [row(scenario, BURST, applied, len(pairs), f"= {len(pairs)}"),
            row(scenario, "poll burst: runs to apply every change", runs, None, f"reported (cap {cap} per run)")]


def _update_burst(stack, client: SyncClient, scenario: str, n: int) -> list[dict]:
    """An incident-updated burst: every incident's severity changes, each Updated trigger runs once;
    then the same triggers again with nothing new (a second automation rule, a retry)."""
    pairs = _link(client, n)
    bodies = [body for body, _, _ in pairs]
    for body in bodies:
        body["object"]["properties"]["severity"] = "Low"
        stack.arm.touch(body["object"]["id"], severity="Low")

    def updates() -> int:
        return len(stack.snow.requests_to("PATCH", r"/table/incident/")) + len(
            stack.snow.requests_to("PUT", r"/table/incident/"))

    before = updates()
    with ThreadPoolExecutor(CALLERS) as pool:
        first = list(pool.map(lambda body: client.outbound(body).status_code, bodies))
    middle = updates()
    with ThreadPoolExecutor(CALLERS) as pool:
        second = list(pool.map(lambda body: client.outbound(body).status_code, bodies))
    after = updates()
    return [
        row(scenario, f"ticket updates for {n} Updated triggers (severity changed)", middle - before, n, f"= {n}"),
        row(scenario, f"ticket updates for the same {n} triggers again", after - middle, None, "0"),
        row(scenario, "failed Updated triggers", sum(s != 200 for s in first + second), None, "0"),
    ]


def goals_missed(rows: list[dict]) -> list[str]:
    """The count goals of this scenario that ``rows`` miss."""
    problems = []
    for r in rows:
        metric, value, reference = r["metric"], r["value"], r["reference"]
        if metric == CREATE and value > 9:
            problems.append(f"a create made {value} calls (goal 9)")
        elif metric == CLOSE and value > 4:
            problems.append(f"close-incident made {value} calls (goal 4)")
        elif metric == IDLE and value != 1:
            problems.append(f"an idle poll cycle made {value} ServiceNow requests (goal 1)")
        elif metric == IDLE_WRITES and value:
            problems.append(f"an idle poll cycle wrote {value} time(s) to Table Storage (goal 0)")
        elif metric.endswith("calls per changed ticket") and r["goal"] == "<= 5" and value > 5:
            problems.append(f"{metric}: {value} (goal 5)")
        elif ("changes applied" in metric or metric == BURST) and value != reference:
            problems.append(f"{metric}: {value} of {reference}")
        elif metric.startswith("ticket updates for ") and value != (reference or 0):
            problems.append(f"{metric}: {value}, goal {reference or 0}")
        elif metric == "failed Updated triggers" and value:
            problems.append(f"{value} Updated triggers failed")
    return problems


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = run(quick)
    for r in result:
        print(f"{r['metric']:<64} {r['value']:>10} {r['reference'] if r['reference'] is not None else '':>6}  "
              f"{r['goal']}")
    missed = goals_missed(result)
    for problem in missed:
        print(f"GOAL MISSED: {problem}", file=sys.stderr)
    sys.exit(1 if missed else 0)
