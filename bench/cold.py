"""``make bench``: the cold first request of each area in a fresh process, imports plus first call.

A Flex Consumption instance that scales out starts a new Python worker: it imports the app (every
blueprint) and then serves a first request, which builds clients, fetches tokens, creates tables and
imports whatever the area loads lazily (msgraph-sdk's models, pysnow). This scenario starts a fresh
interpreter per area (``python -m bench.cold <stdin JSON>``), with the stack's settings and latency
profile, and times
- ``imports``: ``import function_app``;
- ``first``: the area's first call (the function called as the worker calls it, no HTTP in between);
- ``warm``: the median of the next calls on fresh incidents.
Goal (issue #16): imports + first <= imports + 1.5 x warm, i.e. the first call costs at most half a warm
call more; for Entra also the first call at most 1.5 s over a warm one (issue #16 item 5).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import latency_off  # noqa: E402

FIRST_CALL_FACTOR = 1.5
ENTRA_EXTRA_SECONDS = 1.5


def _child(spec: dict) -> dict:
    """In the fresh process: import the app, then call one function ``len(bodies)`` times."""
    os.environ.update(spec["env"])
    started = time.perf_counter()
    import azure.functions as func

    import function_app

    imported = time.perf_counter()
    (target,) = [f.get_user_function() for f in function_app.app.get_functions()
                 if f.get_trigger().type == "httpTrigger" and f.get_trigger().route == spec["route"]]
    times, statuses = [], []
    for body in spec["bodies"]:
        request = func.HttpRequest("POST", f"http://localhost/api/{spec['route']}", body=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
        began = time.perf_counter()
        response = target(request)
        times.append(time.perf_counter() - began)
        statuses.append(response.status_code)
    return {"imports": imported - started, "calls": times, "statuses": statuses}


def measure(stack, action, processes: int, warm_calls: int = 3) -> dict:
    """Median over ``processes`` fresh interpreters of (imports, first call, warm call)."""
    env = stack.env(LOCAL_LOG_LEVEL="ERROR")
    imports, firsts, warms = [], [], []
    for _ in range(processes):
        with latency_off(stack):
            bodies = [action.make(stack) for _ in range(1 + warm_calls)]
        spec = {"env": env, "route": action.route, "bodies": bodies}
        done = subprocess.run([sys.executable, "-m", "bench.cold"], input=json.dumps(spec), capture_output=True,
                              text=True, cwd=ROOT, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cold start of {action.route} failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        bad = [s for s in result["statuses"] if s >= 400]
        if bad:
            raise RuntimeError(f"cold start of {action.route}: answers {result['statuses']}")
        imports.append(result["imports"])
        firsts.append(result["calls"][0])
        warms.append(statistics.median(result["calls"][1:]))
    return {"imports": statistics.median(imports), "first": statistics.median(firsts),
            "warm": statistics.median(warms), "processes": processes}


def cold_row(action_name: str, measured: dict) -> dict:
    imports, first, warm = measured["imports"], measured["first"], measured["warm"]
    bound = imports + FIRST_CALL_FACTOR * warm
    cold = imports + first
    problems = []
    if cold > bound:
        problems.append(f"first call {first:.2f} s vs warm {warm:.2f} s: {first / warm:.1f}x (goal <= "
                        f"{FIRST_CALL_FACTOR:g}x)")
    if "entra" in action_name and first - warm > ENTRA_EXTRA_SECONDS:
        problems.append(f"the first Entra call costs {first - warm:.2f} s more than a warm one (goal <= "
                        f"{ENTRA_EXTRA_SECONDS:g} s)")
    return {"kind": "cold", "scenario": f"cold first request: {action_name}", "metric": "imports + first call (s)",
            "value": round(cold, 3), "imports": round(imports, 3), "first": round(first, 3), "warm": round(warm, 3),
            "limit": round(bound, 3), "chain": f"imports + {FIRST_CALL_FACTOR:g} x warm call",
            "ratio": round(cold / bound, 2), "reference": None,
            "goal": f"<= imports + {FIRST_CALL_FACTOR:g}x warm", "met": not problems, "problems": problems,
            "note": f"median of {measured['processes']} fresh processes", "load": round(os.getloadavg()[0], 1)}


def run(stack, processes: int) -> list[dict]:
    from bench.overhead import ACTIONS

    return [cold_row(action.name, measure(stack, action, processes)) for action in ACTIONS]


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
