"""Entra ID user actions end to end: local host -> msgraph-sdk -> Graph emulator over real HTTP."""

from __future__ import annotations

import uuid

import pytest

from localdev.emulators.graph import ADELE
from tests.fixtures import sample
from tests.response.helpers import account_entity, assert_never_edited, comments, incident, outcomes

CONFIRM, REVOKE, DISABLE = ("response/entra/confirm-compromised", "response/entra/revoke-sessions",
                            "response/entra/disable-user")
ADELE_UPN = "adele.vance@contoso.com"
pytestmark = pytest.mark.e2e


def new_user(stack, name: str, **kw) -> str:
    object_id = str(uuid.uuid4())
    stack.graph.add_user(object_id, f"{name}@contoso.com", **kw)
    return object_id


def graph_writes(stack) -> list:
    return [r for r in stack.graph.received if r.method in ("PATCH", "POST")]


def test_sample_incident_runs_the_three_actions_once_each(clean_stack, host):
    stack = clean_stack
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)
    for route in (CONFIRM, REVOKE, DISABLE):
        response = host.post(route, body)
        assert response.status_code == 200, response.text
        assert outcomes(response.json()) == {ADELE_UPN: "done"}
    assert stack.graph.risky_user(ADELE)["riskState"] == "confirmedCompromised"
    assert stack.graph.user(ADELE)["accountEnabled"] is False
    # The object id Sentinel carries is what Graph is asked for; the token is Graph's.
    assert stack.graph.requests_to("GET", rf"/v1\.0/users/{ADELE}$")
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in stack.graph.received)
    writes = len(graph_writes(stack))
    assert writes == 3

    for route, detail in ((CONFIRM, "already confirmed"), (REVOKE, "already revoked"), (DISABLE, "already disabled")):
        again = host.post(route, body)  # the Logic App retries, or the playbook runs again
        assert again.status_code == 200 and outcomes(again.json()) == {ADELE_UPN: "already"}
        assert detail in again.json()["results"][0]["detail"]
    assert len(graph_writes(stack)) == writes  # nothing sent twice
    texts = [c["properties"]["message"] for c in comments(stack, body)]
    assert len(texts) == 3 and all("done" in t and "already in place" not in t for t in texts)


def test_alert_trigger_acts_without_a_comment(clean_stack, host):
    response = host.post(DISABLE, sample("alert-trigger-entities-string.json"))
    assert response.status_code == 200 and outcomes(response.json()) == {ADELE_UPN: "done"}
    assert response.json()["auditComment"] is None and clean_stack.arm.requests_to("PUT") == []


def test_upn_is_used_when_there_is_no_object_id(clean_stack, host):
    stack = clean_stack
    new_user(stack, "megan.bowen")
    response = host.post(DISABLE, incident(stack, account_entity("megan.bowen")))
    assert response.status_code == 200, response.text
    assert stack.graph.requests_to("GET", r"/v1\.0/users/megan\.bowen@contoso\.com$")
    assert stack.graph.user("megan.bowen@contoso.com")["accountEnabled"] is False


def test_unidentifiable_and_unknown_accounts_are_refused(clean_stack, host):
    stack = clean_stack
    body = incident(stack, account_entity("jdoe", suffix=None), account_entity("ghost"))
    response = host.post(DISABLE, body)
    assert response.status_code == 409 and response.json()["error"]["code"] == "ResponseRefused"
    message = response.json()["error"]["message"]
    assert "neither an Entra object id" in message and "no Entra ID user 'ghost@contoso.com'" in message
    assert graph_writes(stack) == []
    assert "refused" in comments(stack, body)[0]["properties"]["message"]


def test_protected_accounts_are_never_touched(clean_stack, guarded):
    stack = clean_stack
    breakglass = new_user(stack, "breakglass")
    new_user(stack, "ops-admin")
    body = incident(stack, account_entity("ops-admin"), account_entity("anything", aad_id=breakglass),
                    account_entity("adele.vance", aad_id=ADELE))
    response = guarded.post(DISABLE, body)
    assert response.status_code == 200, response.text
    result = outcomes(response.json())
    assert result == {"ops-admin@contoso.com": "refused", "breakglass@contoso.com": "refused", ADELE_UPN: "done"}
    assert [r.path for r in graph_writes(stack)] == [f"/v1.0/users/{ADELE}"]
    assert stack.graph.user(breakglass)["accountEnabled"] is True
    # ops-admin is protected by the entity's own UPN: Graph is not even asked about it.
    assert not stack.graph.requests_to("GET", r"ops-admin")
    assert "PROTECTED_ACCOUNTS" in comments(stack, body)[0]["properties"]["message"]


def test_without_p2_confirm_is_reported_and_the_rest_goes_on(clean_stack, host):
    stack = clean_stack
    stack.graph.licensed = False
    body = incident(stack, account_entity("adele.vance", aad_id=ADELE))
    confirm = host.post(CONFIRM, body)
    assert confirm.status_code == 200, confirm.text
    (result,) = confirm.json()["results"]
    assert result["outcome"] == "unavailable" and "Entra ID P2" in result["detail"]
    assert "not available" in comments(stack, body)[0]["properties"]["message"]
    assert host.post(REVOKE, body).status_code == 200 and host.post(DISABLE, body).status_code == 200
    assert stack.graph.user(ADELE)["accountEnabled"] is False


def test_privileged_account_refused_by_graph_is_a_clear_403(clean_stack, host):
    stack = clean_stack
    admin = new_user(stack, "global.admin", privileged=True)
    body = incident(stack, account_entity("global.admin", aad_id=admin))
    response = host.post(DISABLE, body)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "Authorization_RequestDenied" and "Insufficient privileges" in error["message"]
    assert "failed" in comments(stack, body)[0]["properties"]["message"]


def test_blast_radius_cap(clean_stack, host):
    stack = clean_stack
    body = incident(stack, *(account_entity(f"user{i}", aad_id=new_user(stack, f"user{i}")) for i in range(4)))
    response = host.post(REVOKE, body)
    assert response.status_code == 409 and response.json()["error"]["code"] == "BlastRadiusExceeded"
    assert graph_writes(stack) == []


def test_dry_run_changes_nothing(clean_stack, host):
    stack = clean_stack
    body = incident(stack, account_entity("adele.vance", aad_id=ADELE))
    for route in (CONFIRM, REVOKE, DISABLE):
        response = host.post(route + "?dryRun=true", body)
        assert response.status_code == 200 and outcomes(response.json()) == {ADELE_UPN: "would"}
    assert graph_writes(stack) == [] and stack.graph.user(ADELE)["accountEnabled"] is True
    assert all("DRY RUN" in c["properties"]["message"] for c in comments(stack, body))


def test_throttling_and_server_errors_are_retried_by_the_sdk(clean_stack, host):
    stack = clean_stack
    stack.graph.fail(429, retry_after=1, method="GET")
    stack.graph.fail(503, times=2, method="PATCH")
    response = host.post(DISABLE, incident(stack, account_entity("adele.vance", aad_id=ADELE)))
    assert response.status_code == 200, response.text
    assert stack.graph.faults_served == 3 and stack.graph.user(ADELE)["accountEnabled"] is False


def test_long_throttling_is_answered_429_and_the_retry_completes(clean_stack, host):
    stack = clean_stack
    body = incident(stack, account_entity("adele.vance", aad_id=ADELE))
    stack.graph.fail(429, retry_after=90, times=10, method="POST")
    response = host.post(REVOKE, body)
    assert response.status_code == 429 and response.headers["Retry-After"] == "90"
    stack.graph.clear_faults()
    assert host.post(REVOKE, body).status_code == 200
    # The retry's outcome is new information: a new comment, after the one saying Graph throttled (kept as it
    # was: the Defender portal does not show edits, issue #15.11).
    first, second = (c["properties"]["message"] for c in comments(stack, body))
    assert "throttled" in first and "sessions revoked" not in first and "sessions revoked" in second
    assert_never_edited(stack, body)
    assert len(stack.graph.requests_to("POST", r"/revokeSignInSessions$")) == 2  # the throttled one and the retry
    assert host.post(REVOKE, body).json()["results"][0]["outcome"] == "already"
    assert len(comments(stack, body)) == 2  # the same content again: the same comment, not a third


def test_entity_trigger_on_an_account(clean_stack, host):
    stack = clean_stack
    body = incident(stack, account_entity("adele.vance", aad_id=ADELE))
    entity = {"Entity": body["object"]["properties"]["relatedEntities"][0], "IncidentArmID": body["object"]["id"]}
    response = host.post(REVOKE, entity)
    assert response.status_code == 200 and outcomes(response.json()) == {ADELE_UPN: "done"}
    assert host.post(REVOKE, entity).json()["results"][0]["outcome"] == "already"  # same incident: ledger
    assert len(stack.graph.requests_to("POST", r"/revokeSignInSessions$")) == 1 and len(comments(stack, body)) == 1


# -- what a later run reads is stored before the leases are given back (issue #16: concurrency) ---------------------
def _lease_held(stack, host, key: str) -> bool:
    from core.radius import PARTITION, TABLE
    from core.state import StateStore

    store = StateStore(connection_string=stack.azurite.connection_string, prefix=host.host.env["STATE_TABLE_PREFIX"])
    return store.get(TABLE, PARTITION, f"lease|user|{key.lower()}") is not None


def test_a_duplicate_right_after_the_holder_released_finds_its_record_and_adds_no_comment(clean_stack, host):
    """The holder's comment is held until a duplicate has run to its end after the lease was given back: the duplicate
    finds the account disabled and the holder's audit entries (stored before the release, beside the comment), so its
    record is the holder's "done" and it writes the same comment, not a second one. Waits are events, not clocks."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import wait_for

    stack = clean_stack
    oid = new_user(stack, "race")
    body = incident(stack, account_entity("race", aad_id=oid))
    duplicate_done = threading.Event()
    held = stack.arm.hold(duplicate_done.is_set, method="PUT", path=r"/comments/", timeout=120)
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(host.post, DISABLE, body)
        wait_for(lambda: stack.graph.requests_to("PATCH") and not _lease_held(stack, host, oid), timeout=60)
        duplicate = host.post(DISABLE, body)
        duplicate_done.set()
        first = holder.result()
    assert (first.status_code, duplicate.status_code) == (200, 200), (first.text, duplicate.text)
    assert held.released == [True]
    assert len(stack.graph.requests_to("PATCH")) == 1
    assert list(outcomes(duplicate.json()).values()) == ["already"]
    (comment,) = comments(stack, body)  # the holder's "done", which the duplicate's record merged into the same comment
    assert "account disabled" in comment["properties"]["message"]


def test_a_call_refused_past_the_cap_leaves_no_note_a_retry_could_take_for_a_lost_write(clean_stack, host):
    """The budget is spent while the writes to come are noted (side by side); past the cap the notes are cancelled,
    so a later call of the case that finds the account disabled by someone else says "already", not "done by us"."""
    stack = clean_stack
    oids = [new_user(stack, f"capped{i}") for i in range(4)]  # RESPONSE_MAX_TARGETS=3
    body = incident(stack, *(account_entity(f"capped{i}", aad_id=oid) for i, oid in enumerate(oids)))
    refused = host.post(DISABLE, body)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "BlastRadiusExceeded"
    assert stack.graph.requests_to("PATCH") == []
    stack.graph.set_enabled(oids[0], False)  # an analyst disables the first account by hand
    one = {**body, "object": {**body["object"], "properties": {**body["object"]["properties"], "relatedEntities": [
        account_entity("capped0", aad_id=oids[0])]}}}
    later = host.post(DISABLE, one)
    assert later.status_code == 200 and [r["outcome"] for r in later.json()["results"]] == ["already"]
