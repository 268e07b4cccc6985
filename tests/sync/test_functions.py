"""ServiceNow <-> Sentinel sync end to end: local host -> emulators over real HTTP, state in Azurite."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from localdev.stack import SNOW_WEBHOOK_SECRET
from sync.links import LinkStore
from tests.conftest import HostClient
from tests.fixtures import INCIDENT_4711, sample
from tests.response.helpers import with_retry_policy
from tests.sync.conftest import (
    CALLER,
    GROUP,
    MEGAN,
    MEGAN_SYS_ID,
    OUTBOUND,
    SyncClient,
    add_sentinel_comment,
    fresh_incident,
    guid,
    sync_settings,
    ticket_of,
    writes,
)

pytestmark = pytest.mark.e2e
OVERLAP = 10  # SERVICENOW_POLL_OVERLAP_SECONDS (default)


def linked(sync_host, stack, **properties):
    """A fresh incident with its ticket, both sides in step."""
    body, incident_id = fresh_incident(stack, **properties)
    response = sync_host.outbound(body)
    assert response.status_code == 200, response.text
    return body, incident_id, ticket_of(stack, incident_id)


def props(stack, incident_id):
    return stack.arm.incident(incident_id)["properties"]


# -- create -----------------------------------------------------------------------------------
def test_incident_created_makes_one_ticket_and_links_back(snow, sync_host):
    stack = sync_host.stack
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)
    enrichment = add_sentinel_comment(stack, INCIDENT_4711, "<p><b>VirusTotal</b>: 203.0.113.45 malicious</p>")

    response = sync_host.outbound(body)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["created"] is True and summary["ticket"]["number"].startswith("INC")

    ticket = ticket_of(stack, INCIDENT_4711)
    assert ticket["short_description"] == ("[Sentinel #4711] Sign-in from anonymizing proxy followed by mass "
                                           "file download")
    description = ticket["description"]
    assert "Microsoft Sentinel incident 4711 (High)" in description
    assert "203.0.113.45, 198.51.100.23, 10.0.0.5, ws-fin-0042, adele.vance@contoso.com" in description
    assert "Portal: https://portal.azure.com/#asset/Microsoft_Azure_Security_Insights/Incident/" in description
    assert (ticket["impact"], ticket["urgency"], ticket["priority"], ticket["state"]) == ("1", "2", "2", "1")
    assert ticket["correlation_id"] == "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e"
    assert ticket["correlation_display"] == "Microsoft Sentinel"
    assert (ticket["caller_id"], ticket["assignment_group"], ticket["category"]) == (CALLER, GROUP, "security")

    # Back in Sentinel: a comment naming the ticket, a label, and the mapping in the state store.
    comments = stack.arm.comments(INCIDENT_4711)
    link_comment = [c for c in comments if ticket["number"] in c["properties"]["message"]]
    assert len(link_comment) == 1 and summary["ticket"]["url"] in link_comment[0]["properties"]["message"]
    labels = [label["labelName"] for label in props(stack, INCIDENT_4711)["labels"]]
    assert labels == [f"ServiceNow: {ticket['number']}"]
    # The comment that was already there (enrichment) went over as one work note; ours did not.
    [note] = snow.journal(ticket["sys_id"])
    assert note["element"] == "work_notes" and "VirusTotal" in note["value"] and enrichment in note["value"]
    assert note["value"].startswith("[code]<p>Synced from Microsoft Sentinel incident 4711")


def test_a_create_on_a_trigger_the_incident_has_moved_past_writes_nothing_stale(snow, sync_host):
    """The new ticket's label goes out on the trigger's etag, without reading the incident first: an analyst's change
    made after the trigger fired makes that a 409, the incident is read again, the change stays, and it reaches the
    ticket in the same run (the trigger's older fields are never written back)."""
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack, severity="High")
    stack.arm.touch(incident_id, severity="Low", title="Renamed by an analyst")  # after the trigger fired
    response = sync_host.outbound(body)
    assert response.status_code == 200, response.text
    incident = props(stack, incident_id)
    assert (incident["title"], incident["severity"]) == ("Renamed by an analyst", "Low")
    ticket = ticket_of(stack, incident_id)
    assert [label["labelName"] for label in incident["labels"]] == [f"ServiceNow: {ticket['number']}"]
    assert (ticket["impact"], ticket["urgency"]) == ("2", "3")  # Low (High is 1, 2), written after the create
    puts = stack.arm.requests_to("PUT", rf"{incident_id.rsplit('/', 1)[-1]}$")
    assert [r.status for r in puts] == [409, 200]


def test_a_trigger_copy_arm_would_refuse_is_not_written_back(snow, sync_host):
    """The trigger's copy of the incident is written back with the label only if ARM takes it: one it refuses (here
    a time that is not a date-time) means reading the incident and writing the label on that."""
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack, severity="High")
    body["object"]["properties"]["firstActivityTimeUtc"] = "yesterday"  # not what the incident says, nor a time
    response = sync_host.outbound(body)
    assert response.status_code == 200, response.text
    incident = props(stack, incident_id)
    ticket = ticket_of(stack, incident_id)
    assert incident["firstActivityTimeUtc"] != "yesterday"
    assert [label["labelName"] for label in incident["labels"]] == [f"ServiceNow: {ticket['number']}"]
    puts = stack.arm.requests_to("PUT", rf"{incident_id.rsplit('/', 1)[-1]}$")
    assert [r.status for r in puts] == [400, 200]


def test_ten_concurrent_triggers_make_one_ticket(snow, sync_host):
    """A trigger that finds the pair leased answers 429 + Retry-After at once (no lock polling, issue #16); each copy
    under the Logic App's retry policy ends in 200, with one ticket."""
    body, incident_id = fresh_incident(sync_host.stack)
    sent = []

    def send():
        answer = sync_host.outbound(body)
        sent.append(answer)
        return answer

    with ThreadPoolExecutor(10) as pool:
        answers = [a for a, _ in pool.map(lambda _: with_retry_policy(send), range(10))]
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers if a.status_code != 200]
    busy = [a for a in sent if a.status_code == 429]
    assert all(a.json()["error"]["code"] == "SyncBusy" and int(a.headers["Retry-After"]) > 0 for a in busy)
    assert sum(a.json()["created"] for a in answers) == 1
    assert len({a.json()["ticket"]["sysId"] for a in answers}) == 1
    assert len(snow.records(correlation_id=guid(incident_id))) == 1
    assert len(snow.requests_to("POST", r"/table/incident$")) == 1
    assert len(sync_host.stack.arm.comments(incident_id)) == 1


def test_trigger_fired_twice_later_makes_no_second_ticket(snow, sync_host):
    body, _, ticket = linked(sync_host, sync_host.stack)
    again = sync_host.outbound(body).json()
    assert again["created"] is False and again["ticket"]["sysId"] == ticket["sys_id"]
    assert len(snow.records()) == 1


def test_on_demand_run_with_only_the_incident_id(snow, sync_host):
    stack = sync_host.stack
    _, incident_id = fresh_incident(stack)
    created = sync_host.outbound({"incidentArmId": incident_id})  # entities are read through ARM
    assert created.status_code == 200 and created.json()["created"] is True
    assert "Entities: 203.0.113.45, 10.0.0.5" in ticket_of(stack, incident_id)["description"]
    stack.arm.touch(incident_id, severity="Medium")
    again = sync_host.outbound({"incidentArmId": incident_id}).json()
    assert again["servicenow"]["fields"] == ["impact", "urgency"]
    assert ticket_of(stack, incident_id)["priority"] == "3"


def test_alert_without_incident_is_a_400_naming_the_problem(snow, sync_host):
    response = sync_host.outbound(sample("alert-trigger.json"))
    assert response.status_code == 400
    assert "needs an incident" in response.json()["error"]["message"]
    assert snow.received == []


# -- updates both ways ------------------------------------------------------------------------
def test_sentinel_update_reaches_the_ticket(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    stack.arm.touch(incident_id, severity="Low", status="Active",
                    owner={"objectId": None, "email": MEGAN, "assignedTo": "Megan Bowen", "userPrincipalName": MEGAN})
    comment = add_sentinel_comment(stack, incident_id, "Looked at the sign-in logs: <b>not</b> the user.")
    summary = sync_host.outbound(sample("incident-trigger-updated.json") | {"object": body["object"]}).json()
    assert summary["servicenow"] == {"fields": ["assigned_to", "impact", "state", "urgency"], "workNotes": 1}
    after = snow.record(ticket["sys_id"])
    assert (after["state"], after["impact"], after["urgency"], after["priority"]) == ("2", "2", "3", "4")
    assert after["assigned_to"] == MEGAN_SYS_ID
    [note] = snow.journal(ticket["sys_id"])
    assert comment in note["value"] and "not</b> the user" in note["value"]


def test_servicenow_update_reaches_the_incident_by_push(snow, sync_host):
    stack = sync_host.stack
    _, incident_id, ticket = linked(sync_host, stack)
    snow.update_as(ticket["sys_id"], "megan.bowen", urgency="3", impact="2", assigned_to=MEGAN_SYS_ID, state="3",
                   work_notes="Called Adele: the 09:41 sign-in was not hers.")
    response = sync_host.push_ticket(ticket["sys_id"])
    assert response.status_code == 200, response.text
    assert response.json()["sentinel"] == {"fields": ["owner", "severity", "status"], "comments": 1}
    incident = props(stack, incident_id)
    assert incident["severity"] == "Low" and incident["status"] == "Active"  # P4 -> Low; On Hold -> Active
    assert incident["owner"]["userPrincipalName"] == MEGAN
    copied = [c for c in stack.arm.comments(incident_id) if "Called Adele" in c["properties"]["message"]]
    assert len(copied) == 1 and "work note by megan.bowen" in copied[0]["properties"]["message"]


# -- close and reopen both ways ---------------------------------------------------------------
def test_closing_in_sentinel_resolves_the_ticket_with_the_mapped_code(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    stack.arm.touch(incident_id, status="Closed", classification="FalsePositive",
                    classificationReason="IncorrectAlertLogic", classificationComment="Rule fires on our VPN egress.")
    assert sync_host.outbound(body).status_code == 200
    after = snow.record(ticket["sys_id"])
    assert after["state"] == "6" and after["close_code"] == "No resolution provided"
    assert after["close_notes"] == "Rule fires on our VPN egress." and after["resolved_at"]


def test_a_close_code_the_instance_lacks_is_named_with_its_mapping_entry(snow, sync_host):
    """ServiceNow drops an unknown close code without an error and then refuses the resolve: the answer names the
    SERVICENOW_MAPPING entry to change instead of a bare 403."""
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    snow.set_choices("close_code", [("Solved (Permanently)", "Solved (Permanently)")])  # an instance of its own
    stack.arm.touch(incident_id, status="Closed", classification="FalsePositive",
                    classificationReason="IncorrectAlertLogic", classificationComment="VPN egress.")
    answer = sync_host.outbound(body)
    assert answer.status_code == 500, answer.text
    error = answer.json()["error"]
    assert error["code"] == "ServiceNowUnknownCloseCode"
    assert "SERVICENOW_MAPPING classification_to_close_code.FalsePositive" in error["message"]
    assert "No resolution provided" in error["message"]
    assert snow.record(ticket["sys_id"])["state"] == "1"


def test_closing_in_servicenow_closes_the_incident_by_poll(snow, sync_host):
    stack = sync_host.stack
    _, incident_id, ticket = linked(sync_host, stack)
    snow.update_as(ticket["sys_id"], "megan.bowen", state="6", close_code="Resolved by caller",
                   close_notes="Expected: the user was travelling.")
    sync_host.poll()
    incident = props(stack, incident_id)
    assert incident["status"] == "Closed"
    assert (incident["classification"], incident["classificationReason"]) == ("BenignPositive",
                                                                              "SuspiciousButExpected")
    assert incident["classificationComment"] == "Expected: the user was travelling."


def test_reopen_both_ways(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    snow.update_as(ticket["sys_id"], state="6", close_code="Solution provided", close_notes="Password reset.")
    assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200
    assert props(stack, incident_id)["classification"] == "TruePositive"

    snow.update_as(ticket["sys_id"], state="2", work_notes="Reopened: the user saw it again.")
    assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200
    assert props(stack, incident_id)["status"] == "Active"  # ticket reopened -> incident reopened

    stack.arm.touch(incident_id, status="Closed", classification="TruePositive",
                    classificationReason="SuspiciousActivity", classificationComment="Contained.")
    assert sync_host.outbound(body).status_code == 200
    assert snow.record(ticket["sys_id"])["state"] == "6"
    stack.arm.touch(incident_id, status="Active")  # incident reopened -> ticket reopened
    assert sync_host.outbound(body).status_code == 200
    after = snow.record(ticket["sys_id"])
    assert after["state"] == "2" and after["reopen_count"] == "2"


# -- comments once each way, and no echo --------------------------------------------------------
def test_comments_are_copied_once_each_way_and_nothing_echoes(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    sentinel_comment = add_sentinel_comment(stack, incident_id, "From the SOC in Sentinel.")
    assert sync_host.outbound(body).status_code == 200
    snow.update_as(ticket["sys_id"], "megan.bowen", comments="From the service desk in ServiceNow.")
    sync_host.poll()

    def counts():
        journal = [e["value"] for e in snow.journal(ticket["sys_id"])]
        messages = [c["properties"]["message"] for c in stack.arm.comments(incident_id)]
        return (sum(sentinel_comment in v for v in journal), sum("From the service desk" in v for v in journal),
                sum("From the service desk" in m for m in messages), len(messages), len(journal))

    assert counts() == (1, 1, 1, 3, 2)  # link comment + SOC comment + copied note; work note + desk comment
    before = writes(stack)
    for _ in range(3):  # every trigger there is, with nothing new on either side
        assert sync_host.outbound(body).status_code == 200
        sync_host.poll()
        assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200
    assert counts() == (1, 1, 1, 3, 2)
    assert writes(stack) == before


def test_idle_poll_cycles_write_nothing_and_make_one_request(snow, sync_host):
    stack = sync_host.stack
    _, incident_id, ticket = linked(sync_host, stack)
    snow.update_as(ticket["sys_id"], "megan.bowen", urgency="3", work_notes="lowering")
    sync_host.poll()
    assert props(stack, incident_id)["severity"] == "Medium"
    snow.advance(OVERLAP + 2)  # past the window in which that change could still have been committing
    sync_host.poll()  # the one look back at that window
    before, requests_before = writes(stack), len(snow.received)
    for _ in range(5):
        sync_host.poll()
    assert writes(stack) == before
    assert len(snow.received) - requests_before == 5  # one ServiceNow request per idle cycle


def test_push_of_our_own_update_is_ignored_without_reading(snow, sync_host):
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    stack.arm.touch(incident_id, severity="Medium")
    assert sync_host.outbound(body).status_code == 200  # the sync PATCHes the ticket...
    received = len(snow.received)
    echo = sync_host.push_ticket(ticket["sys_id"])  # ...and the business rule fires on that update
    assert echo.status_code == 200 and echo.json()["changed"] is False and "already synced" in echo.json()["ignored"]
    assert len(snow.received) == received


# -- conflicts --------------------------------------------------------------------------------
@pytest.mark.parametrize("servicenow_later", [True, False])
def test_conflict_newest_change_wins(snow, sync_host, servicenow_later):
    stack = sync_host.stack
    body, incident_id, ticket = linked(sync_host, stack)
    if servicenow_later:
        stack.arm.touch(incident_id, severity="Low")
        snow.advance(5)
        snow.update_as(ticket["sys_id"], impact="3", urgency="3")  # Informational, 5 s later
    else:
        # The instance clock may run ahead of the real one (earlier tests advanced it): stamp 10 s before now.
        back = (snow.clock() - datetime.now(UTC)).total_seconds() + 10
        snow.advance(-back)
        snow.update_as(ticket["sys_id"], impact="3", urgency="3")  # stamped 10 s in the past
        stack.arm.touch(incident_id, severity="Low")
        snow.advance(back)
    summary = sync_host.outbound(body).json()
    [conflict] = summary["conflicts"]
    assert conflict["field"] == "severity"
    if servicenow_later:
        assert conflict["winner"] == "servicenow"
        assert props(stack, incident_id)["severity"] == "Informational"
        assert snow.record(ticket["sys_id"])["priority"] == "5"
    else:
        assert conflict["winner"] == "sentinel"
        assert props(stack, incident_id)["severity"] == "Low"
        assert snow.record(ticket["sys_id"])["priority"] == "4"
    before = writes(stack)
    assert sync_host.outbound(body).json()["conflicts"] == []  # settled: the next run writes nothing
    assert writes(stack) == before


# -- polling ----------------------------------------------------------------------------------
def test_more_changes_than_one_page_in_one_run(snow, sync_host):
    stack = sync_host.stack
    pairs = [linked(sync_host, stack) for _ in range(12)]  # page size is 5
    snow.advance(2)
    for _, _, ticket in pairs:
        snow.update_as(ticket["sys_id"], "megan.bowen", urgency="3", impact="3")
    snow.seed_incident(short_description="not ours", correlation_display="Another tool", urgency="1")
    summary = sync_host.poll()
    assert summary["synced"] == 12 and summary["pages"] >= 3 and summary["stopped"] is None  # one run
    assert all(props(stack, incident_id)["severity"] == "Informational" for _, incident_id, _ in pairs)


def test_tickets_not_created_by_the_pack_are_left_alone(snow, sync_host):
    stack = sync_host.stack
    linked(sync_host, stack)
    foreign = snow.seed_incident(short_description="printer", correlation_display="Microsoft Sentinel",
                                 correlation_id="00000000-0000-0000-0000-000000000000")
    snow.update_as(foreign["sys_id"], "system", state="7", close_code="Solution provided", close_notes="x")
    before = writes(stack)
    sync_host.poll()
    assert writes(stack) == before


def test_poll_cursor_survives_a_restart(stack):
    stack.reset()
    prefix = "w" + str(int(time.time() * 1000) % 10**8)
    first = SyncClient(stack.host(**sync_settings(STATE_TABLE_PREFIX=prefix)), stack)
    try:
        _, incident_id, ticket = linked(first, stack)
        first.poll()
        saved = LinkStore(first.state).cursor()
    finally:
        first.host.stop()
    stack.snow.advance(30)
    stack.snow.update_as(ticket["sys_id"], state="2", urgency="3")
    stack.snow.received.clear()
    second = SyncClient(stack.host(**sync_settings(STATE_TABLE_PREFIX=prefix)), stack)
    try:
        second.poll()
    finally:
        second.host.stop()
    assert props(stack, incident_id)["severity"] == "Medium"
    [query] = [r.query["sysparm_query"] for r in stack.snow.requests_to("GET", r"/table/incident$")]
    assert saved.stamp >= ticket["sys_created_on"]
    start = saved.recheck if saved.complete and saved.recheck else saved.stamp
    assert f"sys_updated_on>={start}" in query or f"sys_updated_on>{start}" in query  # went on from the saved cursor


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 429, "retry_after": 120}])
def test_servicenow_down_or_throttled_is_retried_later_with_nothing_lost(snow, sync_host, fault):
    stack = sync_host.stack
    _, incident_id, ticket = linked(sync_host, stack)
    snow.update_as(ticket["sys_id"], "megan.bowen", state="2", urgency="3", work_notes="still investigating")
    snow.fail(times=100, **fault)
    sync_host.poll()
    assert props(stack, incident_id)["severity"] == "High"  # nothing applied, nothing lost
    snow.clear_faults()
    sync_host.poll()
    assert props(stack, incident_id)["severity"] == "Medium"
    assert len([c for c in stack.arm.comments(incident_id) if "still investigating" in c["properties"]["message"]]) == 1


@pytest.mark.parametrize(("fault", "status"), [({"status": 503}, 502), ({"status": 429, "retry_after": 120}, 429)])
def test_outbound_when_servicenow_fails_answers_retryable_then_completes(snow, sync_host, fault, status):
    body, incident_id = fresh_incident(sync_host.stack)
    snow.fail(times=100, **fault)
    response = sync_host.outbound(body)
    assert response.status_code == status and int(response.headers["Retry-After"]) > 0
    snow.clear_faults()
    assert sync_host.outbound(body).status_code == 200
    assert len(snow.records(correlation_id=guid(incident_id))) == 1


def test_create_that_failed_after_servicenow_wrote_adopts_the_ticket(snow, sync_host):
    body, incident_id = fresh_incident(sync_host.stack)
    sync_host.stack.arm.fail(503, times=20, path=r"/comments/")  # ticket created, write-back fails
    assert sync_host.outbound(body).status_code == 502
    sync_host.stack.arm.clear_faults()
    summary = sync_host.outbound(body).json()
    assert summary["created"] is False  # found by correlation id, not created twice
    assert len(snow.records(correlation_id=guid(incident_id))) == 1


def test_deleted_ticket_is_opened_again(snow, sync_host):
    body, _, ticket = linked(sync_host, sync_host.stack)
    snow.delete_incident(ticket["sys_id"])
    summary = sync_host.outbound(body).json()
    assert summary["created"] is True and summary["ticket"]["sysId"] != ticket["sys_id"]


# -- inbound: authentication and payload ------------------------------------------------------
def test_bad_signature_or_payload_is_4xx_and_changes_nothing(snow, sync_host):
    stack = sync_host.stack
    _, incident_id, ticket = linked(sync_host, stack)
    snow.update_as(ticket["sys_id"], urgency="3")
    payload = {"sys_id": ticket["sys_id"], "sys_mod_count": "1"}
    received, before = len(snow.received), writes(stack)
    cases = [
        (sync_host.push(payload, secret="not-the-secret"), 401, "SignatureMismatch"),
        (sync_host.push(payload, signature=""), 401, "SignatureMissing"),
        (sync_host.push(None, raw=b"{not json"), 400, "MalformedJson"),
        (sync_host.push({"number": "INC0010001"}), 400, "BadRequest"),
        (sync_host.push({"sys_id": ticket["sys_id"], "sys_mod_count": "x"}), 400, "BadRequest"),
        (sync_host.push({"sys_id": "f" * 32}), 404, "UnknownTicket"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert SNOW_WEBHOOK_SECRET not in response.text
    assert sync_host.push(payload, key=None).status_code == 401  # no function key: the host refuses
    assert len(snow.received) == received and writes(stack) == before
    assert props(stack, incident_id)["severity"] == "High"


def test_missing_webhook_secret_is_named(stack):
    process = stack.host(**sync_settings(SERVICENOW_WEBHOOK_SECRET=""))
    try:
        response = SyncClient(process, stack).push({"sys_id": "a" * 32})
        assert response.status_code == 500
        assert "SERVICENOW_WEBHOOK_SECRET" in response.json()["error"]["message"]
    finally:
        process.stop()


def test_rejected_credentials_are_named_and_never_echoed(stack):
    process = stack.host(**sync_settings(SERVICENOW_PASSWORD="wrong-snow-password-9"))
    try:
        body, _ = fresh_incident(stack)
        response = HostClient(process).post(OUTBOUND, body)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "ServiceNowCredentialsRejected" and "SERVICENOW_PASSWORD" in error["message"]
        assert "wrong-snow-password-9" not in response.text
    finally:
        process.stop()


def test_malformed_mapping_setting_is_named(stack):
    process = stack.host(**sync_settings(SERVICENOW_MAPPING=json.dumps({"status_to_state": {"Closed": "9"}})))
    try:
        body, _ = fresh_incident(stack)
        response = HostClient(process).post(OUTBOUND, body)
        assert response.status_code == 500 and "SERVICENOW_MAPPING" in response.json()["error"]["message"]
    finally:
        process.stop()
