"""``make bench``: how long the ServiceNow poll takes to bring changes into Sentinel, under the profile.

The timer is fired through the host's admin API as the real host fires it; a run is done when the sync
records it (``LinkStore.last_poll``, read past the latency proxy so the observer is not slowed). Phases:
idle, then 1 / 10 / 100 / 1,000 tickets changed by an analyst among ``tickets`` synced ones (page 100),
then a burst: 1,000 changes within a second with a page of 10, five times what one run may read
(20 pages), applied over several runs. Each phase reports the time until every change is in Sentinel
(runs fired back to back: the real timer waits two minutes between runs, which is not the pack's time)
beside the chain of calls it needs (bench/limits.py). A phase that runs past its budget (5x its limit,
at least 30 s) is stopped and reported as a lower bound, so the bench stays bounded while the poll is slow.
The request counts per cycle are bench/sync.py's (the sync area's own scenario).
"""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench import limits
from bench.common import latency_off, timed_row
from tests.fixtures import incident_with

PAGE = 100
BURST_PAGE = 10
RUN_CAP_PAGES = 20  # sync/service.py MAX_PAGES_PER_RUN: what one run may read
SIZES = (1, 10, 100, 1000)


class Poller:
    """Fires the timer and waits for its run record, within a deadline."""

    def __init__(self, stack, host) -> None:
        from core.state import StateStore
        from sync.links import LinkStore

        self.host = host
        self.links = LinkStore(StateStore(connection_string=stack.azurite.direct_connection_string,
                                          prefix=host.env["STATE_TABLE_PREFIX"]))
        self.http = requests.Session()

    def runs(self) -> int:
        return (self.links.last_poll() or {}).get("runs", 0)

    def once(self, deadline: float) -> bool:
        """One run; False when it did not finish before ``deadline`` (monotonic seconds)."""
        before = self.runs()
        self.http.post(f"{self.host.url}/admin/functions/servicenow_poll", json={"input": ""},
                       headers={"x-functions-key": self.host.master_key}, timeout=30).raise_for_status()
        while time.monotonic() < deadline:
            if self.runs() > before:
                return True
            time.sleep(0.01)
        return False


def _settle(poller: Poller, stack) -> None:
    """Past the poll's look-back, one run at loopback speed: the next phase counts only its own changes."""
    from sync.service import LOOKBACK_SECONDS

    time.sleep(LOOKBACK_SECONDS + 1.5)
    with latency_off(stack):
        poller.once(time.monotonic() + 300)


def _phase(stack, poller: Poller, changed: list[str], chain, profile: dict[str, float], label: str,
           by_ticket: dict[str, str]) -> dict:
    """Change ``changed`` tickets, then run the poll until Sentinel has them all (or the budget is spent)."""
    with latency_off(stack):
        for sys_id in changed:
            stack.snow.update_as(sys_id, "megan.bowen", impact="3", urgency="3")
    limit = chain.seconds(profile)
    budget = max(30.0, 5 * limit)
    started = time.perf_counter()
    deadline, runs, finished = time.monotonic() + budget, 0, True
    while True:
        runs += 1
        if not poller.once(deadline):
            finished = False
            break
        if _applied(stack, changed, by_ticket) == len(changed) or time.monotonic() >= deadline:
            break
    elapsed = time.perf_counter() - started
    applied = _applied(stack, changed, by_ticket)
    row = timed_row(label, [elapsed], chain, profile, note=f"{runs} run(s); {applied} of {len(changed)} applied")
    if applied < len(changed) or not finished:
        row["problems"].append(f"stopped after {budget:.0f} s with {applied} of {len(changed)} changes applied "
                               "(the time is a lower bound)")
        row["met"] = False
        row["lower_bound"] = True
    return row


def _applied(stack, changed: list[str], by_ticket: dict[str, str]) -> int:
    wanted = set(changed)
    return sum(1 for sys_id, incident_id in by_ticket.items()
               if sys_id in wanted and stack.arm.incident(incident_id)["properties"]["severity"] == "Informational")


BURST = 5 * RUN_CAP_PAGES * BURST_PAGE


def run(stack, profile: dict[str, float], pool: int, repeat: int, sizes: tuple[int, ...] = SIZES,
        burst: int = BURST) -> list[dict]:
    """Every phase changes tickets no earlier phase touched, so ``sum(sizes) + burst`` are synced first."""
    tickets = sum(sizes) + burst
    rng = random.Random(4711)
    bodies = [incident_with(30_000 + n, ["203.0.113.7"], name=str(uuid.UUID(int=rng.getrandbits(128))))
              for n in range(tickets)]
    rows: list[dict] = []
    host = stack.host(SERVICENOW_POLL_BATCH=str(PAGE), LOCAL_LOG_LEVEL="ERROR")
    prefix = host.env["STATE_TABLE_PREFIX"]
    try:
        poller = Poller(stack, host)
        with latency_off(stack):
            for body in bodies:
                stack.arm.seed_from_trigger(body)
            http = requests.Session()

            def create(body: dict) -> None:
                http.post(f"{host.url}/api/sync/servicenow/outbound", json=body,
                          headers={"x-functions-key": host.function_key}, timeout=120).raise_for_status()

            with ThreadPoolExecutor(8) as workers:
                list(workers.map(create, bodies))
        by_ticket = {t["sys_id"]: next(b["object"]["id"] for b in bodies
                                       if b["object"]["name"].lower() == t["correlation_id"].lower())
                     for t in stack.snow.records() if t.get("correlation_id")}
        _settle(poller, stack)
        idle = []
        for _ in range(repeat):
            started = time.perf_counter()
            poller.once(time.monotonic() + 60)
            idle.append(time.perf_counter() - started)
        rows.append(timed_row(f"poll idle ({tickets} synced tickets)", idle, limits.poll(0, PAGE, pool), profile))
        untouched = list(by_ticket)
        rng.shuffle(untouched)
        for k in sizes:
            if k > len(untouched):
                break
            changed = [untouched.pop() for _ in range(k)]
            rows.append(_phase(stack, poller, changed, limits.poll(k, PAGE, pool), profile,
                               f"poll, {k} changed ticket{'s' if k > 1 else ''}", by_ticket))
            if rows[-1].get("lower_bound"):
                # A run may still be going: stop it, let a fresh instance catch up at loopback speed, so the
                # next phase measures only its own changes.
                host.stop()
                host = stack.host(SERVICENOW_POLL_BATCH=str(PAGE), STATE_TABLE_PREFIX=prefix, LOCAL_LOG_LEVEL="ERROR")
                poller = Poller(stack, host)
                _catch_up(poller, stack, changed, by_ticket)
            _settle(poller, stack)
    finally:
        host.stop()
    if burst:
        rows += _burst(stack, profile, pool, prefix, untouched[:burst], by_ticket)
    return rows


def _catch_up(poller: Poller, stack, changed: list[str], by_ticket: dict[str, str], bound: float = 300) -> None:
    """Runs at loopback speed until every change of a stopped phase is in Sentinel (or ``bound`` passes)."""
    deadline = time.monotonic() + bound
    with latency_off(stack):
        while _applied(stack, changed, by_ticket) < len(changed) and time.monotonic() < deadline:
            poller.once(deadline)


def _burst(stack, profile: dict[str, float], pool: int, prefix: str, tickets: list[str],
           by_ticket: dict[str, str]) -> list[dict]:
    """Five runs' worth of changes in one second, page 10: every change must arrive, over several runs."""
    host = stack.host(SERVICENOW_POLL_BATCH=str(BURST_PAGE), STATE_TABLE_PREFIX=prefix, LOCAL_LOG_LEVEL="ERROR")
    try:
        poller = Poller(stack, host)
        _settle(poller, stack)
        chain = limits.poll(len(tickets), BURST_PAGE, pool)
        return [_phase(stack, poller, tickets, chain, profile,
                       f"poll burst, {len(tickets)} changes in one second, page {BURST_PAGE}", by_ticket)]
    finally:
        host.stop()
