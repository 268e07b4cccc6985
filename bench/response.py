"""``make bench`` scenarios of the response actions, under the ``real`` latency profile (localdev/latency.py).

1. Calls and time of one action: isolate 1 and 5 machines, block 3 IPs, block a file, a URL and a domain the
   enrichment rated (rated before the measured call), disable 1 user. Calls are counted
   where they land: each emulator's recorded requests, and Table Storage requests as the rest of the host's
   downstream calls (its ``Server-Timing`` header counts every outbound request, localdev/timing.py).
   Goals: isolate one machine <= 8 calls, block-ip for 3 IPs <= 12 (issue #16: 11 and 24 before),
   block-indicators for a file, a URL and a domain <= 11.
2. Isolating the 5 machines of one incident to the end: the status route polled as a Logic App follows a
   202 (the emulator moves each action one step per read), Defender writes (goal: one per machine), and the
   same trigger again while pending and after success (goal: 0 writes).
3. The first Entra action in a fresh process against a warm one (imports, msgraph-sdk, first token and
   connections): goal, cold - warm <= 1.5 s (medians over fresh host processes).
4. 200 triggers at once per action (50 incidents, 4 copies each, as duplicate automation rules and retries
   send them), every copy under the Logic App's Default retry policy (tests/response/helpers.py; its waits
   compressed by ``SPEED``): all must complete, with 0 duplicate side effects; retries, 429s and Table Storage
   requests per trigger are reported (before: lock polling was 62-74% of the Table requests).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.common import Caller, row
from localdev.stack import Stack
from localdev.timing import ENV as SERVER_TIMING
from localdev.timing import parse as parse_timing
from tests.response.helpers import (
    account_entity,
    dns_entity,
    file_entity,
    fresh_domain,
    fresh_ips,
    fresh_sha256,
    host_entity,
    incident,
    ip_entity,
    url_entity,
    with_retry_policy,
)

PROFILE = "real"
MACHINES = 5
WRITES = "Defender writes (isolate requests)"
RERUN = "Defender writes on two re-runs of the same trigger"
CALL_GOALS = {"isolate 1 machine": 8, "block-ip 3 IPs": 12,
              # Defender: 4 reads side by side (the URL's host too) and 1 import; 1 comment; 5 Table requests.
              "block-indicators 1 file, 1 URL, 1 domain": 11}
COLD_GOAL_SECONDS = 1.5
COPIES = 4


def _machine(stack: Stack) -> dict:
    device, name = uuid.uuid4().hex + uuid.uuid4().hex[:8], f"ws-{uuid.uuid4().hex[:10]}"
    stack.mde.add_machine(device, f"{name}.corp.contoso.com")
    return host_entity(name, device_id=device)


def _user(stack: Stack) -> dict:
    oid, name = str(uuid.uuid4()), f"user-{uuid.uuid4().hex[:10]}"
    stack.graph.add_user(oid, f"{name}@contoso.com", name)
    return account_entity(name, aad_id=oid)


def _rated_indicators(stack: Stack, caller: Caller) -> list[dict]:
    """A file, a URL and a domain VirusTotal calls malicious, rated by the enrichment (the verdict cache the block
    reads); the rating is not part of the measured call."""
    digest, name, url = fresh_sha256(), fresh_domain(), f"https://{fresh_domain()}/login/"
    for value in (digest, name, url):
        stack.vt.set_report(value, malicious=9)
    entities = [file_entity(digest), url_entity(url), dns_entity(name)]
    caller.post("enrichment/reputation", incident(stack, *entities))
    return entities


def _received(stack: Stack) -> dict[str, int]:
    return {e.name: len(e.received) for e in stack.emulators}


def measured_call(stack: Stack, caller: Caller, route: str, body: dict) -> tuple[int, dict[str, int], float, object]:
    """One call: (status, calls by service incl. "table", seconds, response)."""
    before = _received(stack)
    started = time.perf_counter()
    response = caller.post(route, body)
    elapsed = time.perf_counter() - started
    after = _received(stack)
    calls = {name: after[name] - before[name] for name in after if after[name] - before[name]}
    total = int(parse_timing(response.headers.get("Server-Timing", "")).get("calls", 0))
    calls["table"] = total - sum(calls.values())
    return response.status_code, calls, elapsed, response


# -- 1. calls and time per action --------------------------------------------------------------
def single_calls(stack: Stack, caller: Caller, runs: int) -> list[dict]:
    cases: dict[str, tuple[str, Callable[[], list[dict]]]] = {
        "isolate 1 machine": ("response/mde/isolate", lambda: [_machine(stack)]),
        f"isolate {MACHINES} machines": ("response/mde/isolate", lambda: [_machine(stack) for _ in range(MACHINES)]),
        "block-ip 3 IPs": ("response/block-ip", lambda: [ip_entity(ip) for ip in fresh_ips(3)]),
        "block-indicators 1 file, 1 URL, 1 domain": ("response/block-indicators",
                                                      lambda: _rated_indicators(stack, caller)),
        "disable-user 1 user": ("response/entra/disable-user", lambda: [_user(stack)]),
    }
    rows = []
    for name, (route, entities) in cases.items():
        caller.post(route, incident(stack, *entities()))  # warm: tokens, clients, connections
        totals, times, split = [], [], {}
        for _ in range(runs):
            status, calls, elapsed, response = measured_call(stack, caller, route, incident(stack, *entities()))
            if status >= 400:
                raise RuntimeError(f"{route} answered {status}: {response.text[:300]}")  # type: ignore[attr-defined]
            totals.append(sum(calls.values()))
            times.append(elapsed)
            split = calls
        scenario = f"response: {name}, latency profile {PROFILE!r}"
        goal = CALL_GOALS.get(name)
        rows += [
            row(scenario, "downstream calls", statistics.median(totals), goal,
                f"<= {goal}" if goal else "reported"),
            row(scenario, "calls by service (last run)", sum(split.values()), None,
                "reported: " + ", ".join(f"{k} {v}" for k, v in sorted(split.items()))),
            row(scenario, "time (s, median)", statistics.median(times), None, "reported"),
        ]
    return rows


# -- 2. isolating 5 machines to the end ---------------------------------------------------------
def isolate_to_the_end(stack: Stack, caller: Caller) -> list[dict]:
    from response.isolation import POLL_SECONDS

    scenario = f"response: isolate {MACHINES} machines of one incident, polled to the end"
    hosts = [_machine(stack) for _ in range(MACHINES)]
    body = incident(stack, *hosts, title="Ransomware spreading across finance workstations")
    earlier = _writes(stack)
    started = time.perf_counter()
    first = caller.post("response/mde/isolate", body)
    assert first.status_code == 202, first.text
    location = first.headers["Location"]
    writes_before = _writes(stack)
    retried = time.perf_counter()
    caller.post("response/mde/isolate", body)  # a retry while the actions are pending (not timed)
    started += time.perf_counter() - retried
    polls, status = 0, 202
    while status == 202 and polls < 20:
        polls += 1
        status = caller.http.get(location, timeout=60).status_code  # anonymous: the signed Location
    elapsed = time.perf_counter() - started
    caller.post("response/mde/isolate", body)  # and once more after they succeeded
    rerun_writes = _writes(stack) - writes_before
    isolated = sum(1 for h in hosts if stack.mde.isolation(h["properties"]["additionalData"]["MdatpDeviceId"]))
    return [
        row(scenario, WRITES, writes_before - earlier, MACHINES, f"= {MACHINES}"),
        row(scenario, RERUN, rerun_writes, None, "0"),
        row(scenario, "machines isolated", isolated, MACHINES, f"= {MACHINES}"),
        row(scenario, "status polls to the final state", polls, None, "reported (the emulator's progression)"),
        row(scenario, "time to final state, immediate polls (s)", elapsed, None, "reported"),
        row(scenario, "time to final state in Azure at Retry-After (s)", polls * POLL_SECONDS, None,
            f"reported: {POLL_SECONDS} s per poll"),
    ]


def _writes(stack: Stack) -> int:
    return len(stack.mde.requests_to("POST", r"/(isolate|unisolate)$"))


# -- 3. the first Entra action in a fresh process ------------------------------------------------
def cold_entra(stack: Stack, processes: int) -> list[dict]:
    cold, warm = [], []
    for _ in range(processes):
        process = stack.host(**{SERVER_TIMING: "1"})
        try:
            caller = Caller(process)
            for sample in (cold, warm):
                started = time.perf_counter()
                response = caller.post("response/entra/disable-user", incident(stack, _user(stack)))
                sample.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        finally:
            process.stop()
    scenario = f"response: first Entra action (disable-user) in a fresh process, median of {processes}"
    extra = statistics.median(cold) - statistics.median(warm)
    return [
        row(scenario, "first call in a fresh process (s)", statistics.median(cold), None, "reported"),
        row(scenario, "second call, warm (s)", statistics.median(warm), None, "reported"),
        row(scenario, "cold - warm (s)", extra, COLD_GOAL_SECONDS, f"<= {COLD_GOAL_SECONDS} s"),
    ]


# -- 4. 200 triggers at once under the Logic App retry policy -----------------------------------
def _isolations(stack: Stack, bodies: list[dict]) -> tuple[int, int]:
    return len(stack.mde.actions(type_="Isolate")), len(bodies)


def _indicators(stack: Stack, bodies: list[dict]) -> tuple[int, int]:
    return len(stack.mde.indicators()), len(bodies)


def _disabled(stack: Stack, bodies: list[dict]) -> tuple[int, int]:
    accepted = sum(1 for r in stack.graph.requests_to("PATCH", r"/users/") if 200 <= r.status < 300)
    return accepted, len(bodies)


STORM = (
    ("mde isolate (1 machine)", "response/mde/isolate", lambda stack: [_machine(stack)], _isolations),
    ("block-ip (1 IP)", "response/block-ip", lambda stack: [ip_entity(fresh_ips(1)[0])], _indicators),
    ("entra disable-user", "response/entra/disable-user", lambda stack: [_user(stack)], _disabled),
)


def storm(stack: Stack, caller: Caller, triggers: int, speed: float) -> list[dict]:
    rows = []
    for name, route, entities, effects in STORM:
        rows += storm_one(stack, caller, name, route, entities, effects, triggers, speed)
    return rows


def storm_one(stack: Stack, caller: Caller, name: str, route: str, entities: Callable[[Stack], list[dict]],
              effects: Callable[[Stack, list[dict]], tuple[int, int]], triggers: int, speed: float) -> list[dict]:
    stack.reset()
    bodies = [incident(stack, *entities(stack)) for _ in range(triggers // COPIES)]
    sends = [b for b in bodies for _ in range(COPIES)]
    gate = threading.Barrier(len(sends))
    attempts: list[tuple[int, int]] = []  # (status, Server-Timing calls) of every attempt
    guard = threading.Lock()

    def once(body: dict):
        response = caller.post(route, body, timeout=300)
        with guard:
            attempts.append((response.status_code,
                             int(parse_timing(response.headers.get("Server-Timing", "")).get("calls", 0))))
        return response

    def send(body: dict) -> tuple[int, int]:
        gate.wait()
        answer, retries = with_retry_policy(lambda: once(body), speed=speed)
        return answer.status_code, retries

    started = time.perf_counter()
    with ThreadPoolExecutor(len(sends)) as pool:
        outcomes = list(pool.map(send, sends))
    wall = time.perf_counter() - started
    done, wanted = effects(stack, bodies)
    service_calls = sum(len(e.received) for e in stack.emulators)
    table = sum(calls for _, calls in attempts) - service_calls
    scenario = (f"concurrency: response {name}, {len(sends)} triggers at once ({COPIES} per incident), "
                f"Logic App Default retry policy (waits x{speed:g}), latency profile {PROFILE!r}")
    return [
        row(scenario, "duplicate side effects", done - wanted, None, "0"),
        row(scenario, "side effects", done, wanted, "= one per incident"),
        row(scenario, "failed triggers (after the retries)", sum(1 for s, _ in outcomes if s >= 400), None, "0"),
        row(scenario, "429 answers (a retry followed)", sum(1 for s, _ in attempts if s == 429), None, "reported"),
        row(scenario, "retries, most for one trigger", max(r for _, r in outcomes), None, "reported (at most 4)"),
        row(scenario, "Table Storage requests per trigger", table / len(sends), None,
            "reported (no polling: leases are taken or refused in one request)"),
        row(scenario, "wall time (s)", wall, None, "reported"),
    ]


def run(quick: bool) -> list[dict]:
    runs, processes, triggers, speed = (1, 1, 20, 0.2) if quick else (5, 3, 200, 1.0)
    rows: list[dict] = []
    with Stack(latency=PROFILE) as stack:
        process = stack.host(**{SERVER_TIMING: "1", "RESPONSE_MAX_TARGETS": str(MACHINES)})
        try:
            caller = Caller(process)
            rows += single_calls(stack, caller, runs)
            rows += isolate_to_the_end(stack, caller)
            rows += storm(stack, caller, triggers, speed)
        finally:
            process.stop()
        rows += cold_entra(stack, processes)
    return rows


def goals_missed(rows: list[dict]) -> list[str]:
    """Count goals always; the cold-start goal is a timing goal: reported by make bench, asserted only there."""
    problems = []
    for r in rows:
        metric, value = r["metric"], r["value"]
        if metric in (WRITES, "machines isolated") and value != MACHINES:
            problems.append(f"{r['scenario']}: {metric}: {value}, goal {MACHINES}")
        elif metric in (RERUN, "duplicate side effects", "failed triggers (after the retries)") and value:
            problems.append(f"{r['scenario']}: {metric}: {value}, goal 0")
        elif metric == "side effects" and value != r["reference"]:
            problems.append(f"{r['scenario']}: {value} side effects for {r['reference']} wanted")
        elif metric == "downstream calls" and r["reference"] is not None and value > r["reference"]:
            problems.append(f"{r['scenario']}: {value} calls, goal <= {r['reference']}")
    return problems
