"""Fixtures of the sync tests: a host configured for ServiceNow, and the calls a playbook, a
ServiceNow business rule and the Functions timer make."""

from __future__ import annotations

import json
import uuid
from functools import cached_property
from typing import Any

import pytest
import requests

from localdev.emulators.entra import ARM_AUDIENCE
from localdev.emulators.sentinel_arm import API_VERSION
from localdev.emulators.servicenow import ServiceNowEmulator
from tests.conftest import HostClient, wait_for
from tests.fixtures import incident_with

MEGAN = "megan.bowen@contoso.com"
MEGAN_SYS_ID = ServiceNowEmulator.user_sys_id("megan.bowen")
CALLER = "c81f47a2d9e35b60a4f7c19e2b8d6a53"
GROUP = "e47c2a9b1d5f38e60c2b9a7d4f1e3c58"
OUTBOUND, INBOUND = "sync/servicenow/outbound", "sync/servicenow/inbound"


def sync_settings(**overrides: str) -> dict[str, str]:
    settings = {
        "SERVICENOW_MAPPING": json.dumps({"owners": {MEGAN: MEGAN_SYS_ID}}),
        "SERVICENOW_CALLER_ID": CALLER,
        "SERVICENOW_ASSIGNMENT_GROUP": GROUP,
        "SERVICENOW_CATEGORY": "security",
        "SERVICENOW_POLL_BATCH": "5",
    }
    settings.update(overrides)
    return settings


class SyncClient(HostClient):
    """The host, called as the playbook, the business rule and the timer would call it."""

    def __init__(self, host, stack, *, state_connection: str | None = None) -> None:
        super().__init__(host)
        self.stack = stack
        # Where the test reads the host's state: its own storage, unless a counting proxy stands in the way.
        self.state_connection = state_connection or host.env["STATE_STORAGE_CONNECTION"]

    def outbound(self, body: dict) -> requests.Response:
        return self.post(OUTBOUND, body)

    def push(self, payload: Any, *, secret: str | None = None, signature: str | None = None,
             raw: bytes | None = None, key: str | None = "default") -> requests.Response:
        from localdev.stack import SNOW_WEBHOOK_SECRET
        from sync.webhook import SIGNATURE_HEADER, sign

        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: signature if signature is not None else sign(body, secret or SNOW_WEBHOOK_SECRET)}
        if key == "default":
            key = self.host.function_key
        if key is not None:
            headers["x-functions-key"] = key
        return self.http.post(f"{self.host.url}/api/{INBOUND}", data=body, headers=headers, timeout=60)

    def push_ticket(self, sys_id: str) -> requests.Response:
        """What the business rule sends after an update of the ticket."""
        record = self.stack.snow.record(sys_id)
        return self.push({"sys_id": sys_id, "number": record["number"], "sys_mod_count": record["sys_mod_count"],
                          "sys_updated_on": record["sys_updated_on"]})

    def status(self) -> dict:
        """The host's poll runs (GET sync/servicenow/status): idle runs write nothing anywhere else."""
        response = self.http.get(f"{self.host.url}/api/sync/servicenow/status",
                                 headers={"x-functions-key": self.host.function_key}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["poll"]

    def poll_runs(self) -> int:
        return int(self.status()["runs"])

    def poll(self) -> dict:
        """Fire the timer as the Functions admin API does (202 at once), then wait until the run finished."""
        before = self.poll_runs()
        response = self.http.post(f"{self.host.url}/admin/functions/servicenow_poll", json={"input": ""},
                                  headers={"x-functions-key": self.host.master_key}, timeout=30)
        assert response.status_code == 202, response.status_code
        status = wait_for(lambda: (lambda s: s if s["runs"] > before else None)(self.status()), timeout=120,
                          interval=0.05)
        return status["last"]

    def poll_until(self, done, *, runs: int = 40) -> list[dict]:
        """Poll until ``done()`` holds (at most ``runs`` runs); the summaries of the runs made."""
        summaries = []
        for _ in range(runs):
            if done():
                return summaries
            summaries.append(self.poll())
        assert done(), f"not done after {runs} poll runs: {summaries[-3:]}"
        return summaries

    @cached_property
    def state(self):
        from core.state import StateStore

        return StateStore(connection_string=self.state_connection, prefix=self.host.env["STATE_TABLE_PREFIX"])


@pytest.fixture(scope="module")
def sync_host(stack):
    process = stack.host(**sync_settings())
    try:
        yield SyncClient(process, stack)
    finally:
        process.stop()


@pytest.fixture
def snow(clean_stack):
    return clean_stack.snow


def fresh_incident(stack, **properties: Any) -> tuple[dict, str]:
    """A new incident (own GUID) seeded in the ARM emulator, and its trigger body."""
    body = incident_with(uuid.uuid4().int % 100000, ["203.0.113.45", "10.0.0.5"], name=str(uuid.uuid4()))
    body["object"]["properties"].update(properties)
    stack.arm.seed_from_trigger(body)
    return body, body["object"]["id"]


def linked_ticket(sync_host) -> tuple[str, dict]:
    """A fresh incident whose ticket the outbound sync created: (incident id, ticket record)."""
    body, incident_id = fresh_incident(sync_host.stack)
    response = sync_host.outbound(body)
    assert response.status_code == 200, response.text
    return incident_id, ticket_of(sync_host.stack, incident_id)


def guid(incident_id: str) -> str:
    return incident_id.rsplit("/", 1)[-1].lower()


def ticket_of(stack, incident_id: str) -> dict:
    [ticket] = stack.snow.records(correlation_id=guid(incident_id))
    return ticket


def add_sentinel_comment(stack, incident_id: str, message: str) -> str:
    """An analyst comments in the Sentinel portal (a real ARM PUT with a fresh comment id)."""
    name = str(uuid.uuid4())
    response = requests.put(f"{stack.arm.url}{incident_id}/comments/{name}", params={"api-version": API_VERSION},
                            json={"properties": {"message": message}}, timeout=5,
                            headers={"Authorization": f"Bearer {stack.entra.issue(ARM_AUDIENCE)}"})
    assert response.status_code == 201, response.text
    return name


def writes(stack) -> dict[str, int]:
    """Writes each side received so far (what "no echo" is measured on)."""
    return {"servicenow": len([r for r in stack.snow.received if r.method in ("POST", "PUT", "PATCH", "DELETE")]),
            "sentinel": len(stack.arm.requests_to("PUT"))}
