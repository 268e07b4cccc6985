"""Enrichment under the ``real`` latency profile: wall time and calls per run, beside the longest chain.

    .venv/bin/python -m tests.enrichment.measure [--sizes 1,10,50,200] [--runs 3] [--pool 16]

For each size: a new incident of that many public addresses nobody looked up ("new"), then another new
incident holding the same addresses ("cached": the verdicts are in the cache). Prints the median wall
time of ``--runs`` runs at the caller and inside the function (the local host's Server-Timing total, which
leaves out the local host's own HTTP handling), the ratio of the latter to the chain, the calls each run
made (VirusTotal and Sentinel ARM from the emulators' records,
the rest of the outbound calls from the local host's Server-Timing ledger: Table Storage and the token
endpoint), and the longest chain of dependent calls under the profile given the pool size. Not a test:
timing goals are checked by ``make bench`` (helper H6's), never by timed unit tests.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
import uuid

import requests

from localdev.latency import PROFILES
from localdev.stack import Stack
from tests.fixtures import incident_with

ROUTE = "enrichment/ip-reputation"


def chain_seconds(n: int, pool: int, cached: bool, profile: dict[str, float], task: bool = False) -> float:
    """The longest chain of dependent calls of one run (the incident trigger carries the incident, so no read):
    the cache read, then per wave of ``pool`` look-ups a lease and a VirusTotal call, then the comment (its parts,
    the label and the cache writes run beside it) or, when something is malicious and the incident has no task
    yet, the task's read and write (a completed task must never be reopened, so it is read first)."""
    arm, vt, table = profile["sentinel-arm"], profile["virustotal"], profile["storage"]
    tail = 2 * arm if task else arm
    if cached:
        return tail  # verdicts in this process's memory
    return table + math.ceil(n / pool) * (table + vt) + tail


def fresh_ips(n: int) -> list[str]:
    base = uuid.uuid4().int
    return [f"2001:db8:{(base >> 16) % 0xFFFF:x}:{base % 0xFFFF:x}::{i + 1:x}" for i in range(n)]


def run_once(stack: Stack, http: requests.Session, host, ips: list[str]) -> dict:
    body = incident_with(uuid.uuid4().int % 100000, ips, name=str(uuid.uuid4()))
    stack.arm.seed_from_trigger(body)
    before = {"vt": len(stack.vt.received), "arm": len(stack.arm.received), "entra": len(stack.entra.received)}
    started = time.perf_counter()
    response = http.post(f"{host.url}/api/{ROUTE}", json=body, headers={"x-functions-key": host.function_key},
                         timeout=300)
    wall = time.perf_counter() - started
    assert response.status_code == 200, response.text[:500]
    created_task = any(t["result"] == "created" for t in response.json().get("tasks") or ())
    timing = response.headers.get("Server-Timing", "")
    match = re.search(r'desc="(\d+) calls"', timing)
    total = int(match[1]) if match else -1
    inside = re.search(r"total;dur=([\d.]+)", timing)
    vt = len(stack.vt.received) - before["vt"]
    arm = len(stack.arm.received) - before["arm"]
    token = len(stack.entra.received) - before["entra"]
    return {"wall": wall, "function": float(inside[1]) / 1000 if inside else float("nan"), "vt": vt, "arm": arm,
            "token": token, "storage": total - vt - arm - token if total >= 0 else None, "task": created_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50,200")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pool", type=int, default=16)
    args = parser.parse_args()
    profile = PROFILES["real"]
    with Stack(latency="real") as stack:
        host = stack.host(LOCAL_SERVER_TIMING="1", VIRUSTOTAL_POOL_SIZE=str(args.pool))
        try:
            http = requests.Session()
            run_once(stack, http, host, fresh_ips(1))  # warm-up: imports, token, tables created
            print(f"{'run':<14}{'wall s':>8}{'func s':>8}{'chain s':>9}{'ratio':>7}{'VT':>5}{'ARM':>5}{'table':>7}"
                  f"{'token':>7}")
            for n in (int(size) for size in args.sizes.split(",")):
                new, cached = [], []
                for _ in range(args.runs):
                    ips = fresh_ips(n)
                    new.append(run_once(stack, http, host, ips))
                    cached.append(run_once(stack, http, host, ips))
                for label, runs, is_cached in ((f"{n} new", new, False), (f"{n} cached", cached, True)):
                    wall = statistics.median(r["wall"] for r in runs)
                    inside = statistics.median(r["function"] for r in runs)
                    chain = chain_seconds(n, args.pool, is_cached, profile, task=any(r["task"] for r in runs))
                    last = runs[-1]
                    print(f"{label:<14}{wall:>8.2f}{inside:>8.2f}{chain:>9.2f}{inside / chain:>7.2f}{last['vt']:>5}"
                          f"{last['arm']:>5}{last['storage']!s:>7}{last['token']:>7}")
        finally:
            host.stop()


if __name__ == "__main__":
    main()
