"""``make bench``: what users pay, measured side by side in one run.

Scenarios:
1. incident storm, enrichment: N incidents sharing U unique public IPs with private IPs mixed
   in, sent through the local host by 8 concurrent callers. VirusTotal calls made vs what a
   one-call-per-IP-entity playbook makes; comments per incident; wall time.
2. ServiceNow sync (bench/sync.py): requests per poll cycle when idle and with k changed
   tickets among many; tickets created per incident; ticket updates for an Updated burst.
3. response (bench/response.py): isolating 5 machines: Defender calls, writes, re-runs, polls
   and time to the final state.
4. cold start: ``import function_app`` in fresh processes (median) vs a bare
   ``import azure.functions, requests``.
5. overhead (bench/overhead.py): p50/p95 latency and own time of every action; 200 triggers at
   once with 0 duplicate side effects.
Results go to ``bench/results.json`` as rows {scenario, metric, value, reference, ratio}.
``--quick`` (CI) uses small sizes and asserts the count goals, never timing goals.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import overhead as bench_overhead  # noqa: E402
from bench import response as bench_response  # noqa: E402
from bench import sync as bench_sync  # noqa: E402
from bench.common import row  # noqa: E402
from localdev.stack import Stack  # noqa: E402
from tests.fixtures import incident_with  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"


def incident_storm(incidents: int, unique_ips: int, callers: int = 8) -> list[dict]:
    rng = random.Random(4711)
    public = [f"203.0.113.{i}" if i < 200 else f"2001:db8::{i:x}" for i in range(1, unique_ips + 1)]
    private = ["10.0.0.5", "192.168.1.20", "172.16.4.4", "100.64.1.1", "127.0.0.1"]
    bodies = []
    for n in range(incidents):
        ips = rng.sample(public, k=min(len(public), rng.randint(2, 5))) + rng.sample(private, k=rng.randint(0, 2))
        bodies.append(incident_with(10_000 + n, ips, name=str(uuid.UUID(int=rng.getrandbits(128)))))
    entity_occurrences = sum(
        sum(1 for e in b["object"]["properties"]["relatedEntities"] if e["kind"] == "Ip") for b in bodies)

    with Stack() as stack:
        for body in bodies:
            stack.arm.seed_from_trigger(body)
        host = stack.host()
        try:
            http = requests.Session()
            url = f"{host.url}/api/enrichment/ip-reputation"

            def send(body: dict) -> int:
                return http.post(url, json=body, headers={"x-functions-key": host.function_key},
                                 timeout=120).status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(callers) as pool:
                statuses = list(pool.map(send, bodies))
            wall = time.perf_counter() - started
        finally:
            host.stop()
        calls = len(stack.vt.lookups())
        per_incident = [len(stack.arm.comments(b["object"]["id"])) for b in bodies]
    failures = sum(1 for status in statuses if status != 200)
    scenario = f"storm: {incidents} incidents, {unique_ips} unique public IPs, {callers} callers"
    return [
        row(scenario, "VirusTotal calls", calls, entity_occurrences, "= unique public IPs; reference: one call "
            "per IP entity occurrence"),
        row(scenario, "VirusTotal calls vs unique public IPs", calls, len({ip for ip in public if any(
            ip in json.dumps(b) for b in bodies)}), "ratio 1.0"),
        row(scenario, "comments per incident (max)", max(per_incident), 1, "1"),
        row(scenario, "failed requests", failures, None, "0"),
        row(scenario, "wall time (s)", wall, None, "reported"),
        row(scenario, "incidents per second", incidents / wall, None, "reported"),
    ]


def _import_seconds(statement: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cold_start(runs: int) -> list[dict]:
    bare = _import_seconds("import azure.functions, requests", runs)
    app = _import_seconds("import function_app", runs)
    return [row(f"cold start: median of {runs} fresh processes", "import function_app (s)", app, bare,
                "<= 1.3x of bare import azure.functions, requests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; assert count goals (CI)")
    args = parser.parse_args()
    rows = incident_storm(20, 10) if args.quick else incident_storm(200, 50)
    sync_rows = bench_sync.run(args.quick)
    response_rows = bench_response.run(args.quick)
    overhead_rows = bench_overhead.run(args.quick)
    rows += sync_rows + response_rows
    rows += cold_start(3 if args.quick else 10)
    rows += overhead_rows

    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>10}  {'reference':>10}  {'ratio':>7}  goal")
    scenario = None
    for r in rows:
        if r["scenario"] != scenario:
            scenario = r["scenario"]
            print(f"-- {scenario}")
        print(f"{r['metric']:<{width}}  {r['value']:>10}  {r['reference'] if r['reference'] is not None else '':>10}"
              f"  {r['ratio'] if r['ratio'] is not None else '':>7}  {r['goal']}")
    if not args.quick:
        RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")

    by_metric = {r["metric"]: r for r in rows}
    problems = []
    if by_metric["VirusTotal calls vs unique public IPs"]["ratio"] != 1.0:
        problems.append("VirusTotal calls != unique public IPs")
    if by_metric["comments per incident (max)"]["value"] != 1:
        problems.append("an incident got more than one comment")
    if by_metric["failed requests"]["value"]:
        problems.append("some requests failed")
    problems += bench_sync.goals_missed(sync_rows)
    problems += bench_response.goals_missed(response_rows)
    problems += bench_overhead.goals_missed(overhead_rows)
    for problem in problems:
        print(f"GOAL MISSED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
