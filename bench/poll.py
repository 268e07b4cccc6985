"""``make bench``: how long the ServiceNow poll takes to bring changes into Sentinel, under the profile.

The timer is fired through the host's admin API as the real host fires it; a run is done when the host
counts it (``GET sync/servicenow/status``: an idle run writes nothing to Table Storage, so that count lives
in the host's memory). Phases:
- idle: the cursor read and one ServiceNow page, nothing written (goal: 1 ServiceNow request, 0 Table writes);
- 1 / 10 / 100 / 1,000 tickets changed by an analyst among the synced ones (page 100);
- a burst: five times what one run may read (``SERVICENOW_POLL_MAX_PAGES`` pages) changed within a second,
  page 10, applied over several runs.
Each phase changes tickets no earlier phase touched and reports the time from the first run until every change
is in Sentinel (runs fired back to back: the real timer waits two minutes between runs, which is not the
pack's time), how many runs that took and what each cost (median seconds per run), the calls per changed
ticket (ARM, ServiceNow and Table Storage requests, counted where they arrive: the emulators' logs and a
counting proxy in front of Table Storage) and whether every change arrived, beside the chain of calls the poll
must make (bench/limits.py ``poll``). The tickets are reconciled ``pool`` at a time
(``SERVICENOW_SYNC_CONCURRENCY`` is set to the bench's pool, so the limit and the run assume the same pool).

Between phases the ServiceNow instance clock moves past the overlap window (``advance``, no sleeping) and one
run at loopback speed does the look-back, so the next phase starts from a settled cursor and measures only its
own changes. A phase that runs past its budget (5x its limit, at least 30 s) is stopped and reported as a lower
bound; a fresh host catches up at loopback speed so the next phase is not charged for it.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench import limits
from bench.common import latency_off, timed_row
from tests.fixtures import incident_with
from tests.sync.counting import StorageCounter

PAGE = 100
BURST_PAGE = 10
MAX_PAGES = 20  # SERVICENOW_POLL_MAX_PAGES (default): what one run may read
OVERLAP = 10  # SERVICENOW_POLL_OVERLAP_SECONDS (default)
SIZES = (1, 10, 100, 1000)
BURST = 5 * MAX_PAGES * BURST_PAGE  # five runs' worth of changes


class Poller:
    """Fires the timer of one host and waits for the run to finish, within a deadline."""

    def __init__(self, host) -> None:
        self.host = host
        self.http = requests.Session()
        self.last: dict = {}

    def _status(self) -> dict:
        response = self.http.get(f"{self.host.url}/api/sync/servicenow/status",
                                 headers={"x-functions-key": self.host.function_key}, timeout=30)
        response.raise_for_status()
        return response.json()["poll"]

    def once(self, deadline: float) -> float | None:
        """One run: its seconds from the timer's firing to the run's end as the host recorded it (its clock is
        this machine's, so the bench's status polling is not counted), or None when it did not finish before
        ``deadline`` (monotonic seconds)."""
        before = self._status()["runs"]
        fired = time.time()
        self.http.post(f"{self.host.url}/admin/functions/servicenow_poll", json={"input": ""},
                       headers={"x-functions-key": self.host.master_key}, timeout=30).raise_for_status()
        while time.monotonic() < deadline:
            status = self._status()
            if status["runs"] > before:
                self.last = status["last"]
                return max(0.0, float(status["finishedAt"]) - fired)
            time.sleep(0.02)
        return None


class Calls:
    """Requests ARM, ServiceNow and Table Storage received during a ``with`` block."""

    def __init__(self, stack, counter: StorageCounter) -> None:
        self.stack, self.counter = stack, counter

    def __enter__(self) -> Calls:
        self._arm, self._snow = len(self.stack.arm.received), len(self.stack.snow.received)
        self._table = self.counter.snapshot()
        return self

    def __exit__(self, *exc) -> None:
        self.arm = len(self.stack.arm.received) - self._arm
        self.snow = len(self.stack.snow.received) - self._snow
        table = self.counter.counts(self._table)
        self.table, self.table_writes = table["calls"], table["writes"]
        self.total = self.arm + self.snow + self.table


class Bench:
    """The stack, the counting proxy and the host the phases share."""

    def __init__(self, stack, counter: StorageCounter, profile: dict[str, float], pool: int) -> None:
        self.stack, self.counter, self.profile, self.pool = stack, counter, profile, pool
        self.connection = StorageCounter.connection_string(stack.azurite.connection_string, counter.port)
        self.prefix = ""
        self.host = None
        self.poller: Poller | None = None

    def start(self, page: int) -> None:
        settings = {"STATE_STORAGE_CONNECTION": self.connection, "SERVICENOW_POLL_BATCH": str(page),
                    "SERVICENOW_SYNC_CONCURRENCY": str(self.pool), "LOCAL_LOG_LEVEL": "ERROR"}
        if self.prefix:
            settings["STATE_TABLE_PREFIX"] = self.prefix
        self.host = self.stack.host(**settings)
        self.prefix = self.host.env["STATE_TABLE_PREFIX"]
        self.poller = Poller(self.host)

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None

    def settle(self) -> None:
        """Past the overlap window of everything so far, then runs at loopback speed until one finds nothing (the
        rest of a capped run and the look-back are done): the next phase starts from a settled cursor."""
        self.stack.snow.advance(OVERLAP + 2)
        with latency_off(self.stack):
            for _ in range(50):
                if self.poller.once(time.monotonic() + 300) is not None and not self.poller.last.get("examined"):
                    return
        raise RuntimeError(f"the poll did not settle: {self.poller.last}")

    def applied(self, changed: list[str], by_ticket: dict[str, str]) -> int:
        return sum(1 for sys_id in changed
                   if self.stack.arm.incident(by_ticket[sys_id])["properties"]["severity"] == "Informational")

    def phase(self, changed: list[str], by_ticket: dict[str, str], page: int, label: str) -> dict:
        """Change ``changed`` tickets, then run the poll until Sentinel has them all (or the budget is spent)."""
        with latency_off(self.stack):
            for sys_id in changed:
                self.stack.snow.update_as(sys_id, "megan.bowen", impact="3", urgency="3")
        chain = limits.poll(len(changed), page, self.pool, max_pages=MAX_PAGES)
        limit = chain.seconds(self.profile)
        budget = max(30.0, 5 * limit)
        deadline, per_run, finished, applied = time.monotonic() + budget, [], True, 0
        with Calls(self.stack, self.counter) as calls:
            while True:
                seconds = self.poller.once(deadline)
                if seconds is None:
                    finished = False
                    break
                per_run.append(seconds)
                applied = self.applied(changed, by_ticket)
                if applied == len(changed) or time.monotonic() >= deadline:
                    break
        total = sum(per_run) if finished else budget
        note = (f"{len(per_run)} run(s), median {statistics.median(per_run) if per_run else 0:.2f} s per run; "
                f"{applied} of {len(changed)} applied; per changed ticket {calls.total / len(changed):.2f} calls "
                f"(ARM {calls.arm}, ServiceNow {calls.snow}, Table Storage {calls.table}, "
                f"{calls.table_writes} writes)")
        row = timed_row(label, [total], chain, self.profile, note=note)
        row.update(runs=len(per_run), applied=applied, changed=len(changed),
                   calls_per_ticket=round(calls.total / len(changed), 2),
                   calls={"arm": calls.arm, "servicenow": calls.snow, "storage": calls.table,
                          "storage_writes": calls.table_writes})
        if calls.total / len(changed) > 5 and len(changed) >= 10:
            row["problems"].append(f"{calls.total / len(changed):.1f} calls per changed ticket (goal <= 5)")
            row["met"] = False
        if applied < len(changed) or not finished:
            row["problems"].append(f"stopped after {budget:.0f} s with {applied} of {len(changed)} changes applied "
                                   "(the time is a lower bound)")
            row["met"], row["lower_bound"] = False, True
        return row

    def idle(self, tickets: int, repeat: int) -> dict:
        seconds, snow, writes, table = [], [], [], []
        for _ in range(repeat):
            with Calls(self.stack, self.counter) as calls:
                took = self.poller.once(time.monotonic() + 60)
            if took is None:
                raise RuntimeError("an idle poll run did not finish within 60 s")
            seconds.append(took)
            snow.append(calls.snow)
            writes.append(calls.table_writes)
            table.append(calls.table)
        row = timed_row(f"poll idle ({tickets} synced tickets)", seconds, limits.poll(0, PAGE, self.pool),
                        self.profile, note=f"per run: ServiceNow requests {sorted(set(snow))}, Table Storage calls "
                                           f"{sorted(set(table))}, of them writes {sorted(set(writes))}")
        if max(snow) != 1:
            row["problems"].append(f"an idle run made {max(snow)} ServiceNow requests (goal 1)")
        if max(writes):
            row["problems"].append(f"an idle run wrote {max(writes)} time(s) to Table Storage (goal 0)")
        row["met"] = not row["problems"]
        return row

    def catch_up(self, changed: list[str], by_ticket: dict[str, str], bound: float = 300) -> None:
        """A fresh host at loopback speed brings in every change of a stopped phase (or ``bound`` passes)."""
        self.stop()
        self.start(PAGE)
        deadline = time.monotonic() + bound
        with latency_off(self.stack):
            while self.applied(changed, by_ticket) < len(changed) and time.monotonic() < deadline:
                self.poller.once(deadline)


def _link_tickets(bench: Bench, count: int) -> dict[str, str]:
    """``count`` new incidents, each given its ticket by the outbound sync at loopback speed: sys_id -> incident id."""
    rng = random.Random(4711)
    bodies = [incident_with(30_000 + n, ["203.0.113.7"], name=str(uuid.UUID(int=rng.getrandbits(128))))
              for n in range(count)]
    http = requests.Session()
    host = bench.host

    def create(body: dict) -> None:
        http.post(f"{host.url}/api/sync/servicenow/outbound", json=body,
                  headers={"x-functions-key": host.function_key}, timeout=120).raise_for_status()

    with latency_off(bench.stack):
        for body in bodies:
            bench.stack.arm.seed_from_trigger(body)
        with ThreadPoolExecutor(8) as workers:
            list(workers.map(create, bodies))
    by_name = {body["object"]["name"].lower(): body["object"]["id"] for body in bodies}
    return {t["sys_id"]: by_name[t["correlation_id"].lower()] for t in bench.stack.snow.records()
            if t.get("correlation_id", "").lower() in by_name}


def run(stack, profile: dict[str, float], pool: int, repeat: int, sizes: tuple[int, ...] = SIZES,
        burst: int = BURST) -> list[dict]:
    """Every phase changes tickets no earlier phase touched, so ``sum(sizes) + burst`` are synced first."""
    tickets = sum(sizes) + burst
    rows: list[dict] = []
    with StorageCounter(StorageCounter.table_port(stack.azurite.connection_string)) as counter:
        bench = Bench(stack, counter, profile, pool)
        bench.start(PAGE)
        try:
            by_ticket = _link_tickets(bench, tickets)
            untouched = sorted(by_ticket)
            random.Random(4711).shuffle(untouched)
            bench.settle()
            rows.append(bench.idle(len(by_ticket), repeat))
            for k in sizes:
                changed = [untouched.pop() for _ in range(min(k, len(untouched)))]
                rows.append(bench.phase(changed, by_ticket, PAGE,
                                        f"poll, {k} changed ticket{'s' if k > 1 else ''}"))
                if rows[-1].get("lower_bound"):
                    bench.catch_up(changed, by_ticket)
                bench.settle()
            if burst:
                bench.stop()
                bench.start(BURST_PAGE)
                bench.settle()
                changed = untouched[:burst]
                rows.append(bench.phase(changed, by_ticket, BURST_PAGE,
                                        f"poll burst, {len(changed)} changes in one second, page {BURST_PAGE} "
                                        f"({MAX_PAGES} pages per run)"))
        finally:
            bench.stop()
    return rows
