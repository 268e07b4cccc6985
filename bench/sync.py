"""``make bench`` scenario: ServiceNow requests per poll cycle of the incident sync.

N incidents get their tickets through the outbound function (8 concurrent callers), the poller
catches up once, then each measured cycle fires the real timer through the host's admin API and
counts the requests the ServiceNow emulator received:
- idle (nothing changed): goal 1 request, whatever N is;
- k tickets changed by an analyst among N: goal, the count grows with k, not with N.
A poller that re-read every ticket would make ``ceil(N / page)`` requests per cycle: that is the
reference. Between phases the bench waits past the poller's look-back (6.5 s; the real timer runs
every two minutes) and lets one run settle it, so a phase counts only its own changes.

``run(quick)`` returns rows shaped like ``bench/run.py``'s ``row(...)``; ``goals_missed(rows)``
names the count goals a run missed (timings are reported, never asserted).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row  # noqa: E402
from localdev.stack import Stack  # noqa: E402
from tests.fixtures import incident_with  # noqa: E402

PAGE = 100
IDLE = "ServiceNow requests per idle poll cycle"
WRITES = "writes per idle poll cycle (ServiceNow + Sentinel)"


def _links(host):
    from core.state import StateStore
    from sync.links import LinkStore

    return LinkStore(StateStore(connection_string=host.env["STATE_STORAGE_CONNECTION"],
                                prefix=host.env["STATE_TABLE_PREFIX"]))


def _poll(host, links, http: requests.Session) -> dict:
    """One timer run through the admin API; waits for the run's record (the API answers 202 at once)."""
    before = (links.last_poll() or {}).get("runs", 0)
    http.post(f"{host.url}/admin/functions/servicenow_poll", json={"input": ""},
              headers={"x-functions-key": host.master_key}, timeout=30).raise_for_status()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        last = links.last_poll() or {}
        if last.get("runs", 0) > before:
            return last["summary"]
        time.sleep(0.02)
    raise RuntimeError("the poll run did not finish in 300 s")


def _cycle(stack, host, links, http) -> tuple[int, int, dict]:
    """(ServiceNow requests, writes on both sides, summary) of one poll cycle."""
    snow_before = len(stack.snow.received)
    writes_before = _writes(stack)
    summary = _poll(host, links, http)
    return len(stack.snow.received) - snow_before, _writes(stack) - writes_before, summary


def _writes(stack) -> int:
    return (sum(1 for r in stack.snow.received if r.method in ("POST", "PUT", "PATCH", "DELETE"))
            + len(stack.arm.requests_to("PUT")))


def run(quick: bool) -> list[dict]:
    from sync.service import LOOKBACK_SECONDS

    tickets = int(os.environ.get("BENCH_SYNC_TICKETS", "0")) or (200 if quick else 1000)
    changes = (1, 10) if quick else (1, 10, 100)
    scenario = f"servicenow poll: {tickets} tickets, page {PAGE}"
    full_scan = math.ceil(tickets / PAGE)
    rng = random.Random(4711)
    bodies = [incident_with(20_000 + n, ["203.0.113.7"], name=str(uuid.UUID(int=rng.getrandbits(128))))
              for n in range(tickets)]
    settle = LOOKBACK_SECONDS + 1.5  # the timer runs every 2 minutes; waiting past the look-back is enough here
    rows: list[dict] = []
    with Stack() as stack:
        for body in bodies:
            stack.arm.seed_from_trigger(body)
        host = stack.host(SERVICENOW_POLL_BATCH=str(PAGE))
        http = requests.Session()
        try:
            links = _links(host)
            url = f"{host.url}/api/sync/servicenow/outbound"

            def create(body: dict) -> int:
                return http.post(url, json=body, headers={"x-functions-key": host.function_key},
                                 timeout=120).status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(create, bodies))
            wall = time.perf_counter() - started
            rows += [
                row(scenario, "tickets created (one per incident)", len(stack.snow.records()), tickets,
                    "= incidents"),
                row(scenario, "failed outbound calls", sum(s != 200 for s in statuses), None, "0"),
                row(scenario, "incidents linked per second (8 callers)", tickets / wall, None, "reported"),
            ]

            time.sleep(settle)
            first, _, _ = _cycle(stack, host, links, http)
            rows.append(row(scenario, "ServiceNow requests, first poll after the creations", first, full_scan,
                            "reported: reads each new ticket once"))
            idle, wrote, _ = _cycle(stack, host, links, http)
            rows.append(row(scenario, IDLE, idle, full_scan, "1"))
            rows.append(row(scenario, WRITES, wrote, None, "0"))

            untouched = [t["sys_id"] for t in stack.snow.records()]
            rng.shuffle(untouched)
            by_ticket = {stack.snow.records(sys_id=s)[0]["correlation_id"]: s for s in untouched}
            for k in changes:
                picked = [untouched.pop() for _ in range(k)]
                for sys_id in picked:
                    stack.snow.update_as(sys_id, "megan.bowen", impact="3", urgency="3")
                used, _, _ = _cycle(stack, host, links, http)
                applied = sum(1 for body in bodies if by_ticket[body["object"]["name"].lower()] in picked
                              and stack.arm.incident(body["object"]["id"])["properties"]["severity"]
                              == "Informational")
                rows.append(row(scenario, f"ServiceNow requests per poll cycle, {k} changed", used, full_scan,
                                f"<= {_bound(k)}: grows with k, not with N"))
                rows.append(row(scenario, f"changes applied to Sentinel, {k} changed", applied, k, f"= {k}"))
                time.sleep(settle)
                _cycle(stack, host, links, http)  # the next run re-reads the look-back once
            rows += _update_burst(stack, create, bodies[: 20 if quick else 100], scenario)
        finally:
            host.stop()
    return rows


def _update_burst(stack, send, bodies: list[dict], scenario: str) -> list[dict]:
    """An incident-updated burst: every incident's severity changes, each Updated trigger runs once;
    then the same triggers again with nothing new (a second automation rule, a retry)."""
    for body in bodies:
        body["object"]["properties"]["severity"] = "Low"
        stack.arm.touch(body["object"]["id"], severity="Low")
    writes = r"/table/incident/"
    before = len(stack.snow.requests_to("PATCH", writes)) + len(stack.snow.requests_to("PUT", writes))
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(send, bodies))
    middle = len(stack.snow.requests_to("PATCH", writes)) + len(stack.snow.requests_to("PUT", writes))
    with ThreadPoolExecutor(8) as pool:
        second = list(pool.map(send, bodies))
    after = len(stack.snow.requests_to("PATCH", writes)) + len(stack.snow.requests_to("PUT", writes))
    n = len(bodies)
    return [
        row(scenario, f"ticket updates for {n} Updated triggers (severity changed)", middle - before, n, f"= {n}"),
        row(scenario, f"ticket updates for the same {n} triggers again", after - middle, None, "0"),
        row(scenario, "failed Updated triggers", sum(s != 200 for s in first + second), None, "0"),
    ]


def _bound(k: int) -> int:
    """Requests a cycle with k changes may make: a page read and a journal read per page, one short page."""
    return 2 * (k // PAGE + 1) + 1


def goals_missed(rows: list[dict]) -> list[str]:
    """The count goals of this scenario that ``rows`` miss."""
    problems = []
    for r in rows:
        metric, value, reference = r["metric"], r["value"], r["reference"]
        if metric == IDLE and value != 1:
            problems.append(f"an idle poll cycle made {value} ServiceNow requests (goal 1)")
        elif metric == WRITES and value:
            problems.append(f"an idle poll cycle wrote {value} time(s) (goal 0)")
        elif metric == "tickets created (one per incident)" and value != reference:
            problems.append(f"{value} tickets for {reference} incidents")
        elif metric.startswith("ticket updates for ") and value != (reference or 0):
            problems.append(f"{metric}: {value}, goal {reference or 0}")
        elif metric in ("failed outbound calls", "failed Updated triggers") and value:
            problems.append(f"{value} outbound calls failed")
        elif metric.startswith("changes applied") and value != reference:
            problems.append(f"{metric}: {value} of {reference}")
        elif metric.startswith("ServiceNow requests per poll cycle, "):
            k = int(metric.rsplit(", ", 1)[1].split()[0])
            if value > _bound(k):
                problems.append(f"{metric}: {value} requests, more than {_bound(k)}")
    return problems


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    result = run(quick)
    for r in result:
        print(f"{r['metric']:<70} {r['value']:>10} {r['reference'] if r['reference'] is not None else '':>6}  "
              f"{r['goal']}")
    missed = goals_missed(result)
    for problem in missed:
        print(f"GOAL MISSED: {problem}", file=sys.stderr)
    sys.exit(1 if missed else 0)
