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

"Its imports" (``LAZY_IMPORTS_MEASURED``, the response rows): an area loads its SDKs on first use, not at cold start
(msgraph-sdk, kiota and httpx for Entra: ~840 modules), so the first call also pays their import. Those rows measure
it apart, in a second fresh process per sample that imports the very modules the first process's first call loaded
(in their order) and times that, then makes its own first call; the goal is then first <= its imports + 1.5 x warm,
and the row says so, with the first call after the imports beside it.
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
LAZY_IMPORTS_MEASURED = ("response/",)  # routes whose rows measure the first call's imports apart (module doc)


def _child(spec: dict) -> dict:
    """In the fresh process: import the app, then call one function ``len(bodies)`` times."""
    os.environ.update(spec["env"])
    started = time.perf_counter()
    import azure.functions as func

    import function_app

    imported = time.perf_counter()
    preloaded = _preload(spec.get("preload") or [])
    (target,) = [f.get_user_function() for f in function_app.app.get_functions()
                 if f.get_trigger().type == "httpTrigger" and f.get_trigger().route == spec["route"]]
    times, statuses, loaded = [], [], []
    for body in spec["bodies"]:
        request = func.HttpRequest("POST", f"http://localhost/api/{spec['route']}", body=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
        before = set(sys.modules)
        began = time.perf_counter()
        response = target(request)
        times.append(time.perf_counter() - began)
        statuses.append(response.status_code)
        if not loaded:  # the modules the first call imported, in their order
            loaded = [name for name in list(sys.modules) if name not in before]
    return {"imports": imported - started, "calls": times, "statuses": statuses, "loaded": loaded,
            "preloaded": preloaded}


def _preload(names: list[str]) -> float:
    """Import ``names`` (modules another process's first call loaded) in their order; the seconds it took."""
    import contextlib
    import importlib

    started = time.perf_counter()
    for name in names:
        with contextlib.suppress(Exception):  # a module only its parent can create (an alias): the call loads it
            importlib.import_module(name)
    return time.perf_counter() - started


def _fresh_process(stack, action, env: dict, warm_calls: int, preload: list[str] | None = None) -> dict:
    with latency_off(stack):
        bodies = [action.make(stack) for _ in range(1 + warm_calls)]
    spec = {"env": env, "route": action.route, "bodies": bodies, "preload": preload or []}
    done = subprocess.run([sys.executable, "-m", "bench.cold"], input=json.dumps(spec), capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cold start of {action.route} failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if any(s >= 400 for s in result["statuses"]):
        raise RuntimeError(f"cold start of {action.route}: answers {result['statuses']}")
    return result


def measure(stack, action, processes: int, warm_calls: int = 3) -> dict:
    """Median over ``processes`` fresh interpreters of (imports, first call, warm call); for the routes of
    ``LAZY_IMPORTS_MEASURED`` also the first call's own imports and the first call after them (module doc)."""
    env = stack.env(LOCAL_LOG_LEVEL="ERROR")
    split = action.route.startswith(LAZY_IMPORTS_MEASURED)
    imports, firsts, warms, lazies, after = [], [], [], [], []
    for _ in range(processes):
        result = _fresh_process(stack, action, env, warm_calls)
        imports.append(result["imports"])
        firsts.append(result["calls"][0])
        warms.append(statistics.median(result["calls"][1:]))
        if split:
            again = _fresh_process(stack, action, env, 0, preload=result["loaded"])
            lazies.append(again["preloaded"])
            after.append(again["calls"][0])
    measured = {"imports": statistics.median(imports), "first": statistics.median(firsts),
                "warm": statistics.median(warms), "processes": processes}
    if split:
        measured |= {"lazy_imports": statistics.median(lazies), "first_after_imports": statistics.median(after)}
    return measured


def cold_row(action_name: str, measured: dict) -> dict:
    imports, first, warm = measured["imports"], measured["first"], measured["warm"]
    lazy = measured.get("lazy_imports")
    bound = imports + (lazy or 0.0) + FIRST_CALL_FACTOR * warm
    cold = imports + first
    problems = []
    if cold > bound and lazy is None:
        problems.append(f"first call {first:.2f} s vs warm {warm:.2f} s: {first / warm:.1f}x (goal <= "
                        f"{FIRST_CALL_FACTOR:g}x)")
    elif cold > bound:
        problems.append(f"first call {first:.2f} s = its imports {lazy:.2f} s + {first - lazy:.2f} s vs warm "
                        f"{warm:.2f} s: {(first - lazy) / warm:.1f}x after its imports "
                        f"(goal <= {FIRST_CALL_FACTOR:g}x)")
    if "entra" in action_name and first - warm > ENTRA_EXTRA_SECONDS:
        problems.append(f"the first Entra call costs {first - warm:.2f} s more than a warm one (goal <= "
                        f"{ENTRA_EXTRA_SECONDS:g} s)")
    row = {"kind": "cold", "scenario": f"cold first request: {action_name}", "metric": "imports + first call (s)",
           "value": round(cold, 3), "imports": round(imports, 3), "first": round(first, 3), "warm": round(warm, 3),
           "limit": round(bound, 3), "chain": f"imports + {FIRST_CALL_FACTOR:g} x warm call",
           "ratio": round(cold / bound, 2), "reference": None,
           "goal": f"<= imports + {FIRST_CALL_FACTOR:g}x warm", "met": not problems, "problems": problems,
           "note": f"median of {measured['processes']} fresh processes", "load": round(os.getloadavg()[0], 1)}
    if lazy is not None:
        after = measured["first_after_imports"]
        row |= {"lazy_imports": round(lazy, 3), "first_after_imports": round(after, 3),
                "chain": f"imports + the first call's imports + {FIRST_CALL_FACTOR:g} x warm call",
                "goal": f"<= imports + its imports ({lazy:.2f} s) + {FIRST_CALL_FACTOR:g}x warm"}
        row["note"] += (f"; the first call imports its SDKs ({lazy:.2f} s, timed in another fresh process importing "
                        f"the same modules, whose first call then took {after:.2f} s): "
                        f"{(first - lazy) / warm:.2f}x warm after them")
    return row


def run(stack, processes: int) -> list[dict]:
    from bench.overhead import ACTIONS

    return [cold_row(action.name, measure(stack, action, processes)) for action in ACTIONS]


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
