"""``make bench`` scenario: isolating the 5 machines of one incident with Defender for Endpoint.

One incident names 5 hosts (by MdatpDeviceId, as Defender alerts do). The isolate action is
called once, then its status route is polled the way the Logic App's HTTP action follows a 202
(the emulator moves each machine action one step per read: Pending -> InProgress -> Succeeded).
Counted from the Defender emulator's own request log:
- Defender calls in all, and of them writes (goal: one isolate per machine, 5);
- the same trigger again (a Logic App retry or a second automation rule) while the actions are
  pending and after they succeeded: Defender writes (goal: 0);
- polls until the final state, and the time to it with immediate polls. In Azure each poll
  waits the Retry-After the action answers (POLL_SECONDS), so that is reported too.
Reference for the calls: a playbook without the pack's look-ups (per machine: read, isolate, and
one read per poll per machine) makes at least ``machines * (2 + polls)`` calls but cannot tell an
isolated machine from a new one, so its retry would isolate again.
"""

from __future__ import annotations

import time
import uuid

from bench.common import Caller, row
from localdev.stack import Stack
from tests.response.helpers import host_entity, incident

MACHINES = 5
WRITES = "Defender writes (isolate requests)"
RERUN = "Defender writes on two re-runs of the same trigger"


def run(quick: bool) -> list[dict]:
    from response.isolation import POLL_SECONDS

    scenario = f"response: isolate {MACHINES} machines of one incident"
    with Stack() as stack:
        hosts = []
        for n in range(MACHINES):
            device = uuid.uuid4().hex + uuid.uuid4().hex[:8]
            name = f"ws-bench-{n:02d}"
            stack.mde.add_machine(device, f"{name}.corp.contoso.com")
            hosts.append(host_entity(name, device_id=device))
        body = incident(stack, *hosts, title="Ransomware spreading across finance workstations")
        process = stack.host(RESPONSE_MAX_TARGETS=str(MACHINES))
        try:
            caller = Caller(process)
            started = time.perf_counter()
            first = caller.post("response/mde/isolate", body)
            assert first.status_code == 202, first.text
            location = first.headers["Location"].split("/api/", 1)[1]
            after_first = len(stack.mde.received)
            writes_before = _writes(stack)
            retried, before_retry = time.perf_counter(), len(stack.mde.received)
            caller.post("response/mde/isolate", body)  # a retry while the actions are pending (not counted)
            started += time.perf_counter() - retried
            retry_calls = len(stack.mde.received) - before_retry
            polls, status = 0, 202
            while status == 202 and polls < 20:
                polls += 1
                status = caller.get(location).status_code
            elapsed = time.perf_counter() - started
            first_and_polls = len(stack.mde.received) - retry_calls
            caller.post("response/mde/isolate", body)  # and once more after they succeeded
            rerun_writes = _writes(stack) - writes_before
            isolated = sum(1 for h in hosts if stack.mde.isolation(h["properties"]["additionalData"]["MdatpDeviceId"]))
        finally:
            process.stop()
    naive = MACHINES * (2 + polls)
    return [
        row(scenario, "Defender calls, first run", after_first, None,
            "reported: per machine a read, two action-history reads, the isolate"),
        row(scenario, WRITES, writes_before, MACHINES, f"= {MACHINES}"),
        row(scenario, "Defender calls, first run and polls", first_and_polls, naive,
            "reported; reference: a playbook without idempotency checks (retries isolate again)"),
        row(scenario, RERUN, rerun_writes, None, "0"),
        row(scenario, "machines isolated", isolated, MACHINES, f"= {MACHINES}"),
        row(scenario, "status polls to the final state", polls, None, "reported (the emulator's progression)"),
        row(scenario, "time to final state, immediate polls (s)", elapsed, None, "reported"),
        row(scenario, "time to final state in Azure at Retry-After (s)", polls * POLL_SECONDS, None,
            f"reported: {POLL_SECONDS} s per poll"),
    ]


def _writes(stack) -> int:
    return len(stack.mde.requests_to("POST", r"/(isolate|unisolate)$"))


def goals_missed(rows: list[dict]) -> list[str]:
    problems = []
    for r in rows:
        if r["metric"] in (WRITES, "machines isolated") and r["value"] != MACHINES:
            problems.append(f"{r['metric']}: {r['value']}, goal {MACHINES}")
        elif r["metric"] == RERUN and r["value"]:
            problems.append(f"{r['metric']}: {r['value']}, goal 0")
    return problems
