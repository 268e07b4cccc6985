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
