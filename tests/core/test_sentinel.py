"""Sentinel ARM client against the ARM emulator (and, when present, the official spec)."""

from __future__ import annotations

import pytest

from core.credentials import TokenProvider
from core.errors import Busy, Forbidden, NotFound
from core.http import build_session
from core.sentinel import COMMENT_MAX_CHARS, SentinelClient, comment_id
from localdev.emulators.entra import EntraEmulator
from localdev.emulators.sentinel_arm import SentinelArmEmulator
from tests.fixtures import INCIDENT_4711, sample
from tests.sentinel_spec import SPEC_AVAILABLE, requires_spec, stack_validator, validate_request


class EmulatorCredential:
    """azure-identity's ManagedIdentityCredential pointed at the emulator (real token requests)."""

    def __init__(self, entra: EntraEmulator) -> None:
        import os

        from azure.identity import ManagedIdentityCredential

        os.environ.update(entra.env())
        self.inner = ManagedIdentityCredential()

    def get_token(self, *scopes, **kw):
        return self.inner.get_token(*scopes, **kw)


@pytest.fixture(scope="module")
def servers():
    with EntraEmulator() as entra, SentinelArmEmulator(authority=entra, validator=stack_validator()) as arm:
        yield entra, arm


@pytest.fixture
def arm(servers):
    _entra, arm = servers
    arm.reset()
    arm.seed_from_trigger(sample("incident-trigger.json"))
    return arm


@pytest.fixture(scope="module")
def client(servers):
    entra, arm = servers
    session = build_session(timeout=2, retries=2, backoff=0.01)
    return SentinelClient(session, TokenProvider(EmulatorCredential(entra)), arm.url)


def test_get_incident_and_lists(arm, client):
    incident = client.get_incident(INCIDENT_4711)
    assert incident["properties"]["incidentNumber"] == 4711
    kinds = [entity["kind"] for entity in client.list_entities(INCIDENT_4711)]
    assert kinds.count("Ip") == 4 and "Host" in kinds
    assert client.list_alerts(INCIDENT_4711)[0]["kind"] == "SecurityAlert"


def test_one_token_request_for_many_calls(servers, arm, client):
    entra, _ = servers
    for _ in range(5):
        client.get_incident(INCIDENT_4711)
    assert len(entra.requests_to("GET", "/msi/token")) <= 1


def test_comment_with_deterministic_id_is_written_once(arm, client):
    cid = comment_id(INCIDENT_4711, "test", "run-1")
    assert cid == comment_id(INCIDENT_4711.upper(), "test", "run-1")
    client.put_comment(INCIDENT_4711, cid, "<p>first</p>")
    client.put_comment(INCIDENT_4711, cid, "<p>second</p>")
    comments = arm.comments(INCIDENT_4711)
    assert len(comments) == 1 and comments[0]["properties"]["message"] == "<p>second</p>"


def test_comment_over_the_limit_is_refused_before_sending(arm, client):
    with pytest.raises(ValueError):
        client.put_comment(INCIDENT_4711, comment_id(INCIDENT_4711, "big"), "x" * (COMMENT_MAX_CHARS + 1))
    assert arm.requests_to("PUT") == []


def test_update_retries_after_a_concurrent_edit(arm, client):
    seen = []

    def change(properties):
        seen.append(properties["severity"])
        if len(seen) == 1:
            arm.touch(INCIDENT_4711, severity="Low")  # someone edits between our GET and PUT
        properties["labels"] = [{"labelName": "checked", "labelType": "User"}]
        return True

    client.update_incident(INCIDENT_4711, change)
    props = arm.incident(INCIDENT_4711)["properties"]
    assert seen == ["High", "Low"]
    assert props["severity"] == "Low" and props["labels"][0]["labelName"] == "checked"


def test_update_gives_up_after_the_bound(arm, client):
    arm.fail(409, times=10, method="PUT", body={"error": {"code": "Conflict", "message": "etag"}})
    with pytest.raises(Busy) as busy:
        client.add_labels(INCIDENT_4711, "x")
    assert busy.value.status == 429 and busy.value.retry_after  # the Logic App never retries a 409
    assert len(arm.requests_to("PUT")) == client.max_conflict_retries + 1


def test_add_labels_is_idempotent(arm, client):
    client.add_labels(INCIDENT_4711, "VirusTotal: malicious")
    client.add_labels(INCIDENT_4711, "virustotal: MALICIOUS")
    assert len(arm.requests_to("PUT")) == 1


def test_errors_map_to_the_error_model(arm, client):
    missing = INCIDENT_4711.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    with pytest.raises(NotFound):
        client.get_incident(missing)
    arm.fail(403, body={"error": {"code": "AuthorizationFailed", "message": "no"}})
    with pytest.raises(Forbidden, match="Sentinel Responder"):
        client.get_incident(INCIDENT_4711)


@requires_spec
def test_every_request_the_client_sent_conforms_to_the_spec(arm, client):
    client.get_incident(INCIDENT_4711)
    client.list_entities(INCIDENT_4711)
    client.put_comment(INCIDENT_4711, comment_id(INCIDENT_4711, "spec"), "<p>hi</p>")
    client.add_labels(INCIDENT_4711, "spec-check")
    assert SPEC_AVAILABLE and len(arm.received) >= 4
    for request in arm.received:
        assert validate_request(request.method, request.path, request.query, request.json) == []


@pytest.mark.parametrize(("ci", "outcome"), [("true", "error"), ("", "skipped")])
def test_a_missing_spec_fails_in_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    """A clone without ../shared/contracts skips the conformance checks; CI must not pass by skipping them."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CI": ci, "CONTRACTS_DIR": str(tmp_path / "nowhere")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/core/test_sentinel.py::test_every_request_the_client_sent_conforms_to_the_spec"],
                         env=env, capture_output=True, text=True, timeout=120)
    summary = run.stdout.strip().splitlines()[-1]
    assert outcome in summary, run.stdout[-2000:]
    assert (run.returncode != 0) == (outcome == "error")
    if ci:
        assert "Sentinel spec not found" in run.stdout and "CI=true" in run.stdout


# -- paging (issue 15.5), pinning, the incident read once ----------------------------------------------
def test_every_page_of_comments_is_read(arm, client):
    arm.page_size = 2
    for i in range(7):
        client.put_comment(INCIDENT_4711, comment_id(INCIDENT_4711, "page", str(i)), f"<p>{i}</p>")
    assert [c["properties"]["message"] for c in client.list_comments(INCIDENT_4711)] == [
        f"<p>{i}</p>" for i in range(7)]
    assert len(arm.requests_to("GET", r"/comments$")) == 4


def test_tasks_relations_and_incidents_follow_next_link(arm, client):
    arm.page_size = 1
    for i in range(3):
        arm_task = {"properties": {"title": f"task {i}", "status": "New"}}
        client._request("PUT", f"{INCIDENT_4711}/tasks/task-{i}", arm_task)
    assert [t["properties"]["title"] for t in client.list_tasks(INCIDENT_4711)] == ["task 0", "task 1", "task 2"]
    assert client.list_relations(INCIDENT_4711) == []
    arm.seed_incident("second-incident", {"title": "t", "severity": "Low", "status": "New"})
    workspace = INCIDENT_4711.split("/providers/Microsoft.SecurityInsights")[0]
    assert len(client.list_incidents(workspace)) == 2


def test_a_next_link_to_another_host_is_not_followed(arm, client):
    """The token goes to the ARM endpoint only: a nextLink elsewhere (a compromised or confused answer) stops."""
    from core.errors import DownstreamError

    arm.fail(200, path=r"/comments$", body={"value": [], "nextLink": "https://evil.example/subscriptions/x/comments"})
    with pytest.raises(DownstreamError, match="nextLink"):
        client.list_comments(INCIDENT_4711)


def test_the_client_refuses_paths_outside_the_pinned_workspaces(servers):
    from core.workspace import Pinning, WorkspaceNotAllowed

    entra, arm = servers
    other = INCIDENT_4711.split("/providers/Microsoft.SecurityInsights")[0].replace("law-sentinel-prod", "law-x")
    pinned = SentinelClient(build_session(timeout=2, retries=0), TokenProvider(EmulatorCredential(entra)), arm.url,
                            pinning=Pinning.from_values([other], local_mode=False))
    arm.reset()
    with pytest.raises(WorkspaceNotAllowed):
        pinned.get_incident(INCIDENT_4711)
    assert arm.received == []


def test_an_update_with_the_incident_just_read_sends_one_put(arm, client):
    incident = client.get_incident(INCIDENT_4711)
    arm.reset()
    arm.seed_from_trigger(sample("incident-trigger.json"))
    client.add_labels(INCIDENT_4711, "once", current=incident)
    assert [r.method for r in arm.received] == ["PUT"]
    arm.touch(INCIDENT_4711, severity="Low")  # the incident read earlier is now stale: 409, read, PUT again
    client.add_labels(INCIDENT_4711, "twice", current=incident)
    assert [r.method for r in arm.received] == ["PUT", "PUT", "GET", "PUT"]
    assert client.get_comment(INCIDENT_4711, "no-such-comment") is None


def test_an_update_never_stands_in_for_a_create(arm, client):
    """A trigger body of an incident that does not exist: ARM's PUT would create it (create-or-update); the update
    says NotFound instead of answering as if it had updated the incident (the enrichment's label, issue #16)."""
    incident = client.get_incident(INCIDENT_4711)
    gone = {**incident, "id": incident["id"].rsplit("/", 1)[0] + "/11111111-2222-3333-4444-555555555555"}
    with pytest.raises(NotFound, match="did not exist"):
        client.add_labels(gone["id"], "phantom", current=gone)
    assert [r.method for r in arm.requests_to(path=r"/11111111-")] == ["PUT"]
