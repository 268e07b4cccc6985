"""Defender for Endpoint isolation end to end: local host -> Defender, Sentinel ARM emulators over real HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from core.links import LinkSigner
from localdev.emulators.base import Emulator
from localdev.emulators.defender import SRV_APP_07
from localdev.emulators.defender import WS_FIN_0042 as WS
from localdev.stack import APPROVAL_SIGNING_KEY
from tests.fixtures import INCIDENT_4711, sample
from tests.response.helpers import (
    assert_never_edited,
    comments,
    host_entity,
    incident,
    machine_id,
    outcomes,
    with_retry_policy,
)

ISOLATE, RELEASE = "response/mde/isolate", "response/mde/release"
WS_LABEL = "ws-fin-0042.corp.contoso.com (7d3c9b2a1f0e…)"
pytestmark = pytest.mark.e2e


def poll(location: str, limit: int = 10) -> requests.Response:
    """Follow the Location as a Logic App does: a plain GET (no headers) until the answer is not 202."""
    for _ in range(limit):
        response = requests.get(location, timeout=30)
        if response.status_code != 202:
            return response
        assert int(response.headers["Retry-After"]) > 0 and response.headers["Location"] == location
    raise AssertionError("the operation did not finish")


def isolate_posts(stack) -> list:
    return stack.mde.requests_to("POST", r"/isolate$")


def test_incident_isolates_by_device_id_and_polls_to_succeeded(clean_stack, host):
    stack = clean_stack
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)

    response = host.post(ISOLATE, body)
    assert response.status_code == 202, response.text
    summary = response.json()
    assert outcomes(summary) == {WS_LABEL: "pending"} and summary["isolationType"] == "Full"
    location = response.headers["Location"]
    assert urlsplit(location).path == f"/api/response/mde/actions/{summary['operation']}"
    assert int(response.headers["Retry-After"]) >= 1
    # Resolved by the MdatpDeviceId Sentinel carries: a point read, no name search.
    assert stack.mde.requests_to("GET", rf"/api/machines/{WS}$") and not stack.mde.requests_to("GET", r"/api/machines$")
    (request,) = isolate_posts(stack)
    assert request.json["IsolationType"] == "Full" and "incident 4711" in request.json["Comment"]
    assert "Sign-in from anonymizing proxy" in request.json["Comment"]

    final = poll(location)
    assert final.status_code == 200 and final.json()["status"] == "Succeeded"
    assert stack.mde.isolation(WS) == "Full"
    texts = [c["properties"]["message"] for c in comments(stack, body)]
    assert len(texts) == 2  # the request and the outcome
    assert any("pending" in t and "ws-fin-0042" in t for t in texts)
    assert any("Succeeded" in t and stack.mde.actions(WS)[0]["id"] in t for t in texts)
    # The Logic App may poll once more (or retry): the outcome comment is not written twice.
    assert poll(location).json()["status"] == "Succeeded" and len(comments(stack, body)) == 2


def test_double_isolate_is_one_action_and_one_comment(clean_stack, host):
    stack = clean_stack
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)
    first = host.post(ISOLATE, body)
    second = host.post(ISOLATE, body)  # the Logic App retries while Defender still works
    assert first.status_code == second.status_code == 202
    assert first.json()["operation"] == second.json()["operation"]
    assert len(isolate_posts(stack)) == 1 and len(stack.mde.actions(WS, "Isolate")) == 1
    assert poll(second.headers["Location"]).json()["status"] == "Succeeded"

    third = host.post(ISOLATE, body)  # later: the machine is isolated
    assert third.status_code == 200 and outcomes(third.json()) == {WS_LABEL: "already"}
    assert len(isolate_posts(stack)) == 1
    request_comments = [c for c in comments(stack, body) if "Succeeded</b>" not in c["properties"]["message"]]
    assert len(request_comments) == 1
    # The retry did not overwrite the record of what the first call did.
    assert "requested" in request_comments[0]["properties"]["message"]


def test_action_already_in_progress_is_success(clean_stack, host):
    """An analyst isolated the machine between our read of its actions and our request."""
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    stack.mde.hold = True
    analyst = requests.post(f"{stack.mde.url}/api/machines/{WS}/isolate", json={"Comment": "by hand"}, timeout=5,
                            headers={"Authorization": f"Bearer {stack.entra.issue('https://api.securitycenter.microsoft.com')}"})
    stack.mde.fail(200, path=r"/api/machineactions$", times=1, body={"value": []})  # our first read misses it
    response = host.post(ISOLATE, body)
    assert response.status_code == 202, response.text
    (result,) = response.json()["results"]
    assert result["outcome"] == "pending" and "already in progress" in result["detail"]
    assert result["ids"] == [analyst.json()["id"]]
    assert len(stack.mde.actions(WS, "Isolate")) == 1  # nothing created twice
    stack.mde.hold = False
    assert poll(response.headers["Location"]).json()["status"] == "Succeeded"


def test_alert_trigger_resolves_the_exact_dns_name_and_has_no_comment(clean_stack, host):
    stack = clean_stack
    stack.mde.add_machine(machine_id(), "ws-fin-00420.corp.contoso.com")  # a longer name must not match
    response = host.post(ISOLATE, sample("alert-trigger.json"))
    assert response.status_code == 202, response.text
    summary = response.json()
    assert [r["machineId"] for r in summary["results"]] == [WS]
    assert summary["auditComment"] is None and "no incident id" in summary["commentSkipped"]
    (lookup,) = stack.mde.requests_to("GET", r"/api/machines$")
    assert lookup.query["$filter"] == "computerDnsName eq 'ws-fin-0042.corp.contoso.com'"
    assert stack.arm.requests_to("PUT") == []


def test_entity_trigger_outside_an_incident(clean_stack, host):
    response = host.post(ISOLATE, sample("entity-trigger-host.json"))
    assert response.status_code == 202 and response.json()["results"][0]["machineId"] == WS
    assert poll(response.headers["Location"]).json()["status"] == "Succeeded"


def test_bare_host_name_matches_its_own_label_only(clean_stack, host):
    stack = clean_stack
    stack.mde.add_machine(machine_id(), "ws-fin-00420.corp.contoso.com")
    found = host.post(ISOLATE, incident(stack, host_entity("ws-fin-0042", domain=None)))
    assert found.status_code == 202 and found.json()["results"][0]["machineId"] == WS
    filters = [r.query["$filter"] for r in stack.mde.requests_to("GET", r"/api/machines$")]
    assert filters == ["computerDnsName eq 'ws-fin-0042'", "startswith(computerDnsName,'ws-fin-0042.')"]

    missing = host.post(ISOLATE, incident(stack, host_entity("ws-fin-004", domain=None)))  # a prefix of both
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "ResponseRefused"
    assert "no Defender for Endpoint machine is named 'ws-fin-004'" in missing.json()["error"]["message"]
    assert len(isolate_posts(stack)) == 1


def test_ambiguous_name_is_refused_with_the_candidates(clean_stack, host):
    stack = clean_stack
    first, second = machine_id(), machine_id()
    stack.mde.add_machine(first, "kiosk-7.corp.contoso.com")
    stack.mde.add_machine(second, "kiosk-7.corp.contoso.com", health="Inactive")  # re-imaged, same name
    body = incident(stack, host_entity("kiosk-7"))
    response = host.post(ISOLATE, body)
    assert response.status_code == 409
    message = response.json()["error"]["message"]
    assert "ambiguous" in message and first in message and second in message
    assert isolate_posts(stack) == []
    (comment,) = comments(stack, body)
    assert "ambiguous" in comment["properties"]["message"] and "refused" in comment["properties"]["message"]


def test_unknown_device_id_and_contradicting_entity_are_refused(clean_stack, host):
    stack = clean_stack
    unknown = host.post(ISOLATE, incident(stack, host_entity("ws-x", device_id=machine_id())))
    assert unknown.status_code == 409 and "is not known to Defender" in unknown.json()["error"]["message"]
    contradicting = host.post(ISOLATE, incident(stack, host_entity("ceo-laptop", device_id=WS)))
    assert contradicting.status_code == 409 and "contradictory" in contradicting.json()["error"]["message"]
    assert isolate_posts(stack) == []


def test_protected_machines_are_never_touched(clean_stack, guarded):
    stack = clean_stack
    tier0 = machine_id()
    stack.mde.add_machine(tier0, "pki-01.corp.contoso.com", tags=("Tier0",))
    stack.mde.add_machine(machine_id(), "dc01.corp.contoso.com")
    body = incident(stack, host_entity("dc01"), host_entity("srv-app-07", device_id=SRV_APP_07), host_entity("pki-01"),
                    host_entity("ws-fin-0042", device_id=WS))
    response = guarded.post(ISOLATE, body)
    assert response.status_code == 202, response.text
    result = outcomes(response.json())
    assert result[WS_LABEL] == "pending"
    refused = {t: o for t, o in result.items() if o == "refused"}
    assert len(refused) == 3
    assert [r.path for r in isolate_posts(stack)] == [f"/api/machines/{WS}/isolate"]
    # dc01 and srv-app-07 are protected by the entity's own names: not even looked up.
    assert not stack.mde.requests_to("GET", r"/api/machines/2b4d6f8a")
    assert all("dc01" not in r.query.get("$filter", "") for r in stack.mde.requests_to("GET", r"/api/machines$"))
    text = comments(stack, body)[0]["properties"]["message"]
    assert "PROTECTED_MACHINES" in text and "tag:tier0" in text

    only_protected = guarded.post(ISOLATE, incident(stack, host_entity("dc01")))
    assert only_protected.status_code == 409 and "protected machine" in only_protected.json()["error"]["message"]


def test_blast_radius_cap_refuses_the_whole_call(clean_stack, host):
    stack = clean_stack
    hosts = []
    for i in range(4):  # RESPONSE_MAX_TARGETS defaults to 3
        stack.mde.add_machine(machine_id(), f"lab-{i}.corp.contoso.com")
        hosts.append(host_entity(f"lab-{i}"))
    body = incident(stack, *hosts)
    response = host.post(ISOLATE, body)
    assert response.status_code == 409 and response.json()["error"]["code"] == "BlastRadiusExceeded"
    assert "RESPONSE_MAX_TARGETS=3" in response.json()["error"]["message"]
    assert isolate_posts(stack) == []
    assert "blast-radius cap" in comments(stack, body)[0]["properties"]["message"]


def test_dry_run_reports_and_changes_nothing(clean_stack, host):
    stack = clean_stack
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)
    response = host.post(ISOLATE + "?dryRun=true", body)
    assert response.status_code == 200 and response.json()["dryRun"] is True
    assert outcomes(response.json()) == {WS_LABEL: "would"} and "Location" not in response.headers
    assert isolate_posts(stack) == [] and stack.mde.isolation(WS) is None
    assert "DRY RUN" in comments(stack, body)[0]["properties"]["message"]
    assert host.post(ISOLATE + "?dryRun=perhaps", body).status_code == 400


def test_throttling_and_server_errors_are_retried(clean_stack, host):
    stack = clean_stack
    stack.mde.fail(429, path=r"/isolate$", retry_after=1)
    stack.mde.fail(503, path=r"/api/machines/", method="GET", times=2)
    response = host.post(ISOLATE, incident(stack, host_entity("ws-fin-0042", device_id=WS)))
    assert response.status_code == 202, response.text
    assert stack.mde.faults_served == 3 and len(isolate_posts(stack)) == 2  # the throttled one and the retry
    assert len(stack.mde.actions(WS, "Isolate")) == 1


def test_long_throttling_goes_back_to_the_logic_app_and_its_retry_completes(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    stack.mde.fail(429, path=r"/isolate$", retry_after=120, times=10)
    response = host.post(ISOLATE, body)
    assert response.status_code == 429 and response.headers["Retry-After"] == "120"
    assert stack.mde.actions(WS) == []
    (failed,) = comments(stack, body)
    assert "failed" in failed["properties"]["message"] and "throttled" in failed["properties"]["message"]
    stack.mde.clear_faults()
    retried = host.post(ISOLATE, body)
    assert retried.status_code == 202
    # The result is a new comment; the first one still says what happened then (no edits, issue #15.11).
    kept, comment = comments(stack, body)
    assert kept == failed and comment["name"] != failed["name"] and "pending" in comment["properties"]["message"]
    assert retried.json()["auditComment"] == comment["name"]
    again = host.post(ISOLATE, body)  # the same trigger while pending: the same content, the same comment
    assert again.status_code == 202 and again.json()["auditComment"] == comment["name"]
    assert len(comments(stack, body)) == 2
    assert_never_edited(stack, body)


def test_final_state_failed_is_reported(clean_stack, host):
    stack = clean_stack
    stack.mde.set_outcome(WS, "TimeOut")
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    final = poll(host.post(ISOLATE, body).headers["Location"])
    assert final.status_code == 200 and final.json()["status"] == "TimeOut"
    assert stack.mde.isolation(WS) is None
    assert any("TimeOut" in c["properties"]["message"] for c in comments(stack, body))
    # A failed isolation changed nothing: the next call isolates again.
    stack.mde.set_outcome(WS, "Succeeded")
    assert host.post(ISOLATE, body).status_code == 202 and len(stack.mde.actions(WS, "Isolate")) == 2


def test_release_follows_the_same_pattern(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    not_isolated = host.post(RELEASE, body)
    assert not_isolated.status_code == 200 and outcomes(not_isolated.json()) == {WS_LABEL: "already"}
    assert poll(host.post(ISOLATE, body).headers["Location"]).json()["status"] == "Succeeded"
    released = host.post(RELEASE, body)
    assert released.status_code == 202
    assert stack.mde.requests_to("POST", r"/unisolate$")[0].json["Comment"].startswith("Released from isolation")
    assert poll(released.headers["Location"]).json()["status"] == "Succeeded"
    assert stack.mde.isolation(WS) is None


def test_selective_isolation_and_bad_type(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    assert host.post(ISOLATE + "?isolationType=Partial", body).status_code == 400
    response = host.post(ISOLATE + "?isolationType=selective", body)
    assert response.status_code == 202 and isolate_posts(stack)[0].json["IsolationType"] == "Selective"


def test_manual_run_reads_entities_through_arm(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    response = host.post(ISOLATE, {"incidentArmId": body["object"]["id"]})
    assert response.status_code == 202 and len(stack.arm.requests_to("POST", r"/entities$")) == 1


def signed(reference: str, expires: int | None = None) -> str:
    """The status route of ``reference`` with a valid signature (as the pack signs its Locations)."""
    expires = expires or int(time.time()) + 600
    sig = LinkSigner(APPROVAL_SIGNING_KEY).sign("mde-status", reference, expires=expires)
    return f"response/mde/actions/{reference}?expires={expires}&sig={sig}"


def test_status_route_errors(clean_stack, host):
    for reference in ("0" * 32, "not-an-id", "0b8c5d4e-0000-4000-8000-000000000000"):
        assert host.get(signed(reference), key=None).status_code == 404  # signed, anonymous: unknown
        seen = len(clean_stack.mde.received)
        assert host.get("response/mde/actions/" + reference).status_code == 403  # the key does not replace the link
        assert len(clean_stack.mde.received) == seen  # a refused link reads nothing


def test_no_host_entity_is_a_400_and_audited(clean_stack, host):
    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    response = host.post(ISOLATE, sample("entity-trigger-ip.json"))  # an IP entity run on incident 4711
    assert response.status_code == 400 and "no Host entity" in response.json()["error"]["message"]
    (comment,) = clean_stack.arm.comments(INCIDENT_4711)
    assert "no Host entity" in comment["properties"]["message"]


def test_unknown_incident_is_404(clean_stack, host):
    body = sample("incident-trigger.json")  # not seeded in the ARM emulator
    assert host.post(ISOLATE + "?dryRun=true", body).status_code == 404


def test_concurrent_calls_isolate_once(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    with ThreadPoolExecutor(4) as pool:  # each copy under the Logic App's retry policy: a busy target is a 429
        responses = [r for r, _ in pool.map(lambda _: with_retry_policy(lambda: host.post(ISOLATE, body)), range(4))]
    assert [r.status_code for r in responses] == [202] * 4
    assert len(stack.mde.actions(WS, "Isolate")) == 1 and len(comments(stack, body)) == 1
    assert len({r.json()["operation"] for r in responses}) == 1


def test_a_host_entity_without_a_name_is_a_skipped_row(clean_stack, host):
    stack = clean_stack
    nameless = {"kind": "Host", "properties": {"osFamily": "Linux"}}
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS), nameless)
    response = host.post(ISOLATE + "?dryRun=true", body)
    assert response.status_code == 200, response.text
    assert outcomes(response.json()) == {WS_LABEL: "would", "(host entity without a value)": "skipped"}
    assert "host entity without a host name" in comments(stack, body)[0]["properties"]["message"]
    only = host.post(ISOLATE, incident(stack, nameless))
    assert only.status_code == 400 and "no Host entity to act on" in only.json()["error"]["message"]


# -- the analyst task of an isolation (issue #18.3) --------------------------------------------------------------
def test_a_successful_isolation_adds_the_investigation_package_task_once(clean_stack, host, host_with):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    incident_id = body["object"]["id"]
    started = host.post(ISOLATE, body)
    assert started.status_code == 202 and "tasks" not in started.json()  # pending: not isolated yet
    assert stack.arm.tasks(incident_id) == []
    final = poll(started.headers["Location"])
    assert final.status_code == 200 and final.json()["status"] == "Succeeded"
    (task,) = stack.arm.tasks(incident_id)
    assert task["properties"]["title"] == "Collect an investigation package"
    assert task["properties"]["status"] == "New" and "ws-fin-0042.corp.contoso.com" in task["properties"]["description"]
    assert final.json()["tasks"] == [{"taskId": task["name"], "title": "Collect an investigation package",
                                      "result": "created"}]
    # The analyst collects the package and closes the task; a later isolate call never reopens it.
    stack.arm.analyst_task_change(incident_id, task["name"], status="Completed")
    puts = len(stack.arm.requests_to("PUT", r"/tasks/"))
    again = host.post(ISOLATE, body)
    assert again.status_code == 200 and outcomes(again.json()) == {WS_LABEL: "already"}
    # Written by this process with the same text: not even read again (core/tasks.py); another process reads it
    # and keeps it completed. Either way nothing is written.
    assert again.json()["tasks"][0]["result"] in ("unchanged", "kept-completed")
    assert len(stack.arm.requests_to("PUT", r"/tasks/")) == puts
    other = host_with().post(ISOLATE, body)  # another instance reads the task: completed, so it stays so
    assert other.json()["tasks"][0]["result"] == "kept-completed"
    assert len(stack.arm.requests_to("PUT", r"/tasks/")) == puts
    (kept,) = stack.arm.tasks(incident_id)
    assert kept["properties"]["status"] == "Completed"
    assert poll(started.headers["Location"]).status_code == 200 and len(stack.arm.tasks(incident_id)) == 1


def test_the_isolation_task_follows_incident_tasks(clean_stack, host_with):
    stack = clean_stack
    off = host_with(INCIDENT_TASKS="off")
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    final = poll(off.post(ISOLATE, body).headers["Location"])
    assert final.json()["status"] == "Succeeded" and "tasks" not in final.json()
    assert stack.arm.tasks(body["object"]["id"]) == []
    stack.reset()
    own = host_with(INCIDENT_TASKS='{"isolation": [{"title": "Image {machine}", "description": "Full disk image"}]}')
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    poll(own.post(ISOLATE, body).headers["Location"])
    (task,) = stack.arm.tasks(body["object"]["id"])
    assert task["properties"]["title"] == "Image ws-fin-0042.corp.contoso.com"


def test_a_release_adds_no_task_and_a_dry_run_none(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    stack.mde.set_isolated(WS)  # isolated in the portal before
    dry = host.post(ISOLATE + "?dryRun=true", body)
    assert outcomes(dry.json()) == {WS_LABEL: "already"} and "tasks" not in dry.json()
    poll(host.post(RELEASE, body).headers["Location"])
    assert stack.arm.tasks(body["object"]["id"]) == []


# -- machines named by device id: leased while they are looked up (issue #16: the isolate chain) -----------------
def _lease_rows(stack, host) -> list[str]:
    from core.radius import PARTITION, TABLE
    from core.state import StateStore

    store = StateStore(connection_string=stack.azurite.connection_string, prefix=host.host.env["STATE_TABLE_PREFIX"])
    return [row["RowKey"] for row in store.query(TABLE, "PartitionKey eq @p", {"p": PARTITION})
            if row["RowKey"].startswith("lease|machine|")]


def test_a_machine_named_by_device_id_is_leased_while_defender_is_asked_for_it(clean_stack, host):
    """The lease and the machine's look-up are independent: Defender's answer is held until the lease row exists, so
    the call completes only if it took the lease without waiting for the machine (an event, not a clock)."""
    stack = clean_stack
    device = machine_id()
    stack.mde.add_machine(device, "ws-lease.corp.contoso.com")
    # Emulator.hold: the Defender emulator's own ``hold`` attribute (actions kept pending) shadows the method.
    held = Emulator.hold(stack.mde, lambda: f"lease|machine|{device}" in _lease_rows(stack, host),
                         path=rf"/api/machines/{device}$", method="GET", timeout=60)
    response = host.post(ISOLATE, incident(stack, host_entity("ws-lease", device_id=device)))
    assert response.status_code == 202, response.text
    assert held.released == [True]
    assert len(stack.mde.actions(device, "Isolate")) == 1 and _lease_rows(stack, host) == []  # given back


def test_the_budget_counts_only_machines_defender_knows_and_the_guardrails_let_through(clean_stack, host):
    """Leased by device id before resolution, but the blast-radius budget (RESPONSE_MAX_TARGETS=3) is spent after it:
    an unknown device id refused in one call leaves room for a machine in the next; past the cap nothing is done."""
    stack = clean_stack
    known = [machine_id() for _ in range(4)]
    for n, device in enumerate(known):
        stack.mde.add_machine(device, f"lab-d{n}.corp.contoso.com")
    hosts = [host_entity(f"lab-d{n}", device_id=d) for n, d in enumerate(known)]
    body = incident(stack, hosts[0], hosts[1], host_entity("ws-ghost", device_id=machine_id()))
    first = host.post(ISOLATE, body)
    assert first.status_code == 202 and sorted(outcomes(first.json()).values()) == ["pending", "pending", "refused"]
    second = host.post(ISOLATE, {**body, "object": {**body["object"], "properties": {
        **body["object"]["properties"], "relatedEntities": [hosts[2]]}}})
    assert second.status_code == 202, second.text  # 3 of 3: the unknown machine did not count
    third = host.post(ISOLATE, {**body, "object": {**body["object"], "properties": {
        **body["object"]["properties"], "relatedEntities": [hosts[3]]}}})
    assert third.status_code == 409 and third.json()["error"]["code"] == "BlastRadiusExceeded"
    assert not stack.mde.requests_to("POST", rf"/machines/{known[3]}/isolate$")
    assert _lease_rows(stack, host) == []
