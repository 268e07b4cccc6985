"""Duplicate triggers at once (two automation rules, a Logic App retry racing the first run):
each target gets exactly one write request, not one accepted and others refused by the service.
A copy that finds the target leased answers 429 at once; under the Logic App's retry policy every copy
completes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.response.helpers import (
    account_entity,
    fresh_ips,
    host_entity,
    incident,
    ip_entity,
    machine_id,
    with_retry_policy,
)

COPIES = 8
pytestmark = pytest.mark.e2e


def _machine(stack) -> dict:
    device, name = machine_id(), f"ws-{uuid.uuid4().hex[:8]}"
    stack.mde.add_machine(device, f"{name}.corp.contoso.com")
    return incident(stack, host_entity(name, device_id=device))


def _user(stack) -> dict:
    oid, name = str(uuid.uuid4()), f"u-{uuid.uuid4().hex[:8]}"
    stack.graph.add_user(oid, f"{name}@contoso.com", name)
    return incident(stack, account_entity(name, aad_id=oid))


CASES: dict[str, tuple[str, Callable, str, str]] = {
    "isolate": ("response/mde/isolate", _machine, "mde", r"/isolate$"),
    "block-ip": ("response/block-ip", lambda stack: incident(stack, ip_entity(fresh_ips(1)[0])), "mde",
                 r"/api/indicators$"),
    "disable-user": ("response/entra/disable-user", _user, "graph", r"/users/[^/]+$"),
    "revoke-sessions": ("response/entra/revoke-sessions", _user, "graph", r"/revokeSignInSessions$"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_concurrent_duplicates_send_one_write(clean_stack, host, name):
    route, make, service, path = CASES[name]
    body = make(clean_stack)
    with ThreadPoolExecutor(COPIES) as pool:
        answers = list(pool.map(lambda _: with_retry_policy(lambda: host.post(route, body)), range(COPIES)))
    statuses = [answer.status_code for answer, _ in answers]
    assert all(status in (200, 202) for status in statuses), statuses
    emulator = getattr(clean_stack, service)
    writes = [r for r in emulator.received if r.method in ("POST", "PATCH") and re.search(path, r.path)]
    assert len(writes) == 1, [(r.method, r.path, r.status) for r in writes]
    assert len(clean_stack.arm.comments(body["object"]["id"])) == 1  # one audit comment too


# -- leases: taken or refused at once, never polled -----------------------------------------------
def hold_lease(stack, host, kind: str, target: str, seconds: float = 60):
    """Another run's lease on ``target`` (as a run in flight leaves it), in the host's own table."""
    import time

    from core.radius import PARTITION, TABLE
    from core.state import StateStore

    store = StateStore(connection_string=stack.azurite.connection_string, prefix=host.host.env["STATE_TABLE_PREFIX"])
    row = f"lease|{kind}|{target.lower()}"
    store.upsert(TABLE, {"PartitionKey": PARTITION, "RowKey": row, "until": time.time() + seconds})
    return lambda: store.delete(TABLE, PARTITION, row)


def test_a_leased_target_that_still_needs_a_write_answers_429_at_once(clean_stack, host):
    stack = clean_stack
    body = _machine(stack)
    device = body["object"]["properties"]["relatedEntities"][0]["properties"]["additionalData"]["MdatpDeviceId"]
    release = hold_lease(stack, host, "machine", device)
    try:
        busy = host.post("response/mde/isolate", body)
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "Busy"
        assert int(busy.headers["Retry-After"]) >= 1
        assert stack.mde.requests_to("POST") == [] and stack.arm.comments(body["object"]["id"]) == []
    finally:
        release()
    assert host.post("response/mde/isolate", body).status_code == 202  # the retry, once the holder is done


def test_a_duplicate_finding_the_work_done_answers_without_writing(clean_stack, host):
    """A retry arriving while another copy still holds the lease, after that copy's write: it reports the state
    (here: the user already disabled) instead of a 429, writes nothing, and leaves the comment to the holder."""
    stack = clean_stack
    body = _user(stack)
    oid = body["object"]["properties"]["relatedEntities"][0]["properties"]["aadUserId"]
    assert host.post("response/entra/disable-user", body).status_code == 200
    writes, comments = len(stack.graph.requests_to("PATCH")), stack.arm.comments(body["object"]["id"])
    release = hold_lease(stack, host, "user", oid)  # users are leased by the entity's key: its object id
    try:
        again = host.post("response/entra/disable-user", body)
    finally:
        release()
    assert again.status_code == 200 and again.json()["observedConcurrentRun"] is True
    assert [r["outcome"] for r in again.json()["results"]] == ["already"]
    assert len(stack.graph.requests_to("PATCH")) == writes and stack.arm.comments(body["object"]["id"]) == comments


def test_targets_of_one_call_and_of_other_incidents_do_not_conflict(clean_stack, host):
    bodies = [_machine(clean_stack) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        statuses = [r.status_code for r in pool.map(lambda b: host.post("response/mde/isolate", b), bodies)]
    assert statuses == [202] * 4
    assert len(clean_stack.mde.actions(type_="Isolate")) == 4
