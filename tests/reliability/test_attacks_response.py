"""What an attacker with a function key (or a forged Host header) could do to the response actions, tried
on the local stack; each test failed on main before the fix (issue #14, items 4 and 8).

- 14.4: the 202 ``Location`` of isolate / release was built from the request's Host and carried the caller's
  key (``?code=<master key>`` for a call made with the master key). It is now ``PUBLIC_BASE_URL`` + the
  operation + an HMAC signature bound to that operation and its expiry, on an anonymous route.
- 14.8: the blast-radius cap was per call (two calls of two users disabled four with a cap of three). It now
  counts distinct targets per incident and action within a window, in one etag-guarded row; past it the
  call answers 409 and audits the refusal. ``DISABLED_ACTIONS`` switches an action off; enable-user undoes
  disable-user under the same guardrails.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from core.links import LinkSigner
from core.radius import BlastRadius
from core.settings import Settings
from core.state import StateStore
from localdev.emulators.defender import WS_FIN_0042
from localdev.emulators.sentinel_arm import DEFAULT_WORKSPACE
from localdev.stack import APPROVAL_SIGNING_KEY
from tests.conftest import HostClient
from tests.response.helpers import account_entity, comments, host_entity, incident, outcomes

# Outside LOCAL_MODE the deployment pins the pack to its workspace (issue 14.5): the samples' one.
HOME_WORKSPACE = ("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}"
                  .format(*DEFAULT_WORKSPACE))

pytestmark = pytest.mark.e2e

PUBLIC = "https://soc-playbooks.azurewebsites.example"
ISOLATE, DISABLE, ENABLE = "response/mde/isolate", "response/entra/disable-user", "response/entra/enable-user"


# Outside LOCAL_MODE the pack acts only on the workspaces it is pinned to (issue 14.5): the samples' workspace.
HOME = "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}".format(
    *DEFAULT_WORKSPACE)


@pytest.fixture(scope="module")
def deployed(stack):
    """A host configured as in Azure: not LOCAL_MODE, PUBLIC_BASE_URL set."""
    process = stack.host(LOCAL_MODE="false", SENTINEL_WORKSPACES=HOME_WORKSPACE, PUBLIC_BASE_URL=PUBLIC)
    try:
        yield HostClient(process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def unconfigured(stack):
    """A host outside LOCAL_MODE whose PUBLIC_BASE_URL was forgotten."""
    process = stack.host(LOCAL_MODE="false", SENTINEL_WORKSPACES=HOME_WORKSPACE)
    try:
        yield HostClient(process)
    finally:
        process.stop()


def isolate_body(stack) -> dict:
    return incident(stack, host_entity("ws-fin-0042", device_id=WS_FIN_0042))


# -- 14.4: the 202 Location ----------------------------------------------------------------------
def test_a_master_key_call_gets_no_key_in_its_location(clean_stack, deployed):
    host = deployed.host
    answer = requests.post(f"{host.url}/api/{ISOLATE}", json=isolate_body(clean_stack), timeout=60,
                           headers={"x-functions-key": host.master_key, "Host": "approvals.evil.example"})
    assert answer.status_code == 202, answer.text
    location = answer.headers["Location"]
    assert location.startswith(f"{PUBLIC}/api/response/mde/actions/")  # not the Host the caller sent
    assert host.master_key not in location and host.function_key not in location
    assert set(parse_qs(urlsplit(location).query)) == {"expires", "sig"}


def test_without_public_base_url_nothing_is_done_and_the_setting_is_named(clean_stack, unconfigured):
    answer = requests.post(f"{unconfigured.host.url}/api/{ISOLATE}", json=isolate_body(clean_stack), timeout=60,
                           headers={"x-functions-key": unconfigured.host.function_key,
                                    "Host": "approvals.evil.example"})
    assert answer.status_code == 500 and "PUBLIC_BASE_URL" in answer.json()["error"]["message"]
    assert "evil.example" not in answer.headers.get("Location", "")
    assert clean_stack.mde.requests_to("POST") == []  # checked before acting: no machine isolated unpollably


def _local(location: str, host: HostClient) -> str:
    """The Location with the public base swapped for the local host (what the Logic App would reach)."""
    return host.host.url + location[len(PUBLIC):]


def test_the_status_link_opens_its_operation_only_until_it_expires(clean_stack, deployed):
    answer = deployed.post(ISOLATE, isolate_body(clean_stack))
    location = _local(answer.headers["Location"], deployed)
    operation = answer.json()["operation"]
    query = parse_qs(urlsplit(location).query)
    expires, sig = query["expires"][0], query["sig"][0]
    assert requests.get(location, timeout=30).status_code in (200, 202)  # anonymous, as the Logic App polls

    signer = LinkSigner(APPROVAL_SIGNING_KEY)
    other = uuid.uuid4().hex
    base = f"{deployed.host.url}/api/response/mde/actions"
    past = int(time.time()) - 1
    refused = {
        "no signature": f"{base}/{operation}",
        "signature of another operation": f"{base}/{other}?expires={expires}&sig={sig}",
        "expiry moved later": f"{base}/{operation}?expires={int(expires) + 3600}&sig={sig}",
        "expired": f"{base}/{operation}?expires={past}&sig={signer.sign('mde-status', operation, expires=past)}",
        "function key instead": f"{base}/{operation}?code={deployed.host.function_key}",
        "another link's purpose": f"{base}/{operation}?expires={expires}&sig="
                                  f"{signer.sign('approval', operation, expires=int(expires))}",
    }
    seen = len(clean_stack.mde.received)
    for what, url in refused.items():
        response = requests.get(url, timeout=30)
        assert response.status_code == 403, (what, response.status_code)
        assert response.json()["error"]["code"] == "InvalidStatusLink", what
    assert len(clean_stack.mde.received) == seen  # nothing was read for a refused link


# -- 14.8: the blast radius across calls ----------------------------------------------------------
@pytest.fixture(scope="module")
def capped(stack):
    process = stack.host(RESPONSE_MAX_TARGETS="3", DISABLED_ACTIONS="entra_revoke_sessions, mde-release")
    try:
        yield HostClient(process)
    finally:
        process.stop()


def users(stack, n: int) -> list[tuple[str, dict]]:
    made = []
    for _ in range(n):
        oid, name = str(uuid.uuid4()), f"u-{uuid.uuid4().hex[:8]}"
        stack.graph.add_user(oid, f"{name}@contoso.com", name)
        made.append((oid, account_entity(name, aad_id=oid)))
    return made


def one_incident(stack, *entities: dict, incident_id: str | None = None) -> dict:
    """A trigger body for ``entities``, on a given incident (several calls of one incident)."""
    body = incident(stack, *entities)
    if incident_id:
        body["object"]["id"] = incident_id
        body["object"]["name"] = incident_id.rsplit("/", 1)[-1]
        stack.arm.seed_from_trigger(body)
    return body


def test_two_calls_of_two_users_cannot_disable_four_with_a_cap_of_three(clean_stack, capped):
    stack = clean_stack
    (a, ea), (b, eb), (c, ec), (d, ed) = users(stack, 4)
    first = one_incident(stack, ea, eb)
    incident_id = first["object"]["id"]
    assert capped.post(DISABLE, first).status_code == 200
    second = capped.post(DISABLE, one_incident(stack, ec, ed, incident_id=incident_id))
    assert second.status_code == 409 and second.json()["error"]["code"] == "BlastRadiusExceeded"
    assert "RESPONSE_MAX_TARGETS=3" in second.json()["error"]["message"]
    assert [stack.graph.user(u)["accountEnabled"] for u in (a, b, c, d)] == [False, False, True, True]
    refusal = [m["properties"]["message"] for m in comments(stack, first) if "refused" in m["properties"]["message"]]
    assert refusal and "blast-radius cap" in refusal[0]  # the refusal is audited on the incident
    # A retry of the first call is no new target: it still answers, and one more user still fits.
    assert capped.post(DISABLE, one_incident(stack, ea, eb, incident_id=incident_id)).status_code == 200
    third = capped.post(DISABLE, one_incident(stack, ec, incident_id=incident_id))
    assert third.status_code == 200 and outcomes(third.json()) == {f"{stack.graph.user(c)['userPrincipalName']}":
                                                                   "done"}


def test_concurrent_calls_share_one_budget(clean_stack, capped):
    stack = clean_stack
    made = users(stack, 4)
    incident_id = one_incident(stack)["object"]["id"]
    bodies = [one_incident(stack, *(e for _, e in made[i:i + 2]), incident_id=incident_id) for i in (0, 2)]
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda b: capped.post(DISABLE, b), bodies))
    assert statuses == [200, 409]
    assert sum(1 for oid, _ in made if stack.graph.user(oid)["accountEnabled"] is False) == 2


def test_the_budget_is_per_action_and_readable_for_approvals(clean_stack, capped):
    stack = clean_stack
    (_, e1), (_, e2) = users(stack, 2)
    body = one_incident(stack, e1, e2)
    assert capped.post(DISABLE, body).status_code == 200
    store = StateStore(connection_string=stack.azurite.connection_string,
                       prefix=capped.host.env["STATE_TABLE_PREFIX"])
    radius = BlastRadius(store, Settings.from_env({"RESPONSE_MAX_TARGETS": "3"}))
    assert radius.remaining(body["object"]["id"], "entra-disable-user") == 1
    assert radius.remaining(body["object"]["id"], "entra-enable-user") == 3  # another action, its own budget


def test_a_disabled_action_answers_409_and_touches_nothing(clean_stack, capped):
    stack = clean_stack
    (_, entity), = users(stack, 1)
    body = one_incident(stack, entity)
    for route in ("response/entra/revoke-sessions", "response/mde/release"):
        answer = capped.post(route, body)
        assert answer.status_code == 409, route
        assert answer.json()["error"]["code"] == "ActionDisabled" and "DISABLED_ACTIONS" in answer.json()["error"][
            "message"]
    assert stack.graph.received == [] and stack.mde.received == []
    assert capped.post(DISABLE, body).status_code == 200  # the others still run


def test_enable_user_undoes_disable_with_the_same_guardrails(clean_stack, guarded):
    stack = clean_stack
    (oid, entity), = users(stack, 1)
    body = one_incident(stack, entity)
    assert guarded.post(DISABLE, body).status_code == 200 and stack.graph.user(oid)["accountEnabled"] is False
    enabled = guarded.post(ENABLE, body)
    assert enabled.status_code == 200 and set(outcomes(enabled.json()).values()) == {"done"}
    assert stack.graph.user(oid)["accountEnabled"] is True
    again = guarded.post(ENABLE, body)
    assert set(outcomes(again.json()).values()) == {"already"}
    assert len([r for r in stack.graph.requests_to("PATCH") if r.json == {"accountEnabled": True}]) == 1
    texts = [c["properties"]["message"] for c in comments(stack, body)]
    assert any("enable user accounts" in t and "done" in t for t in texts)
    stack.graph.add_user("c0ffee00-0000-4000-8000-0000000b1a55", "breakglass@contoso.com", enabled=False)
    protected = guarded.post(ENABLE, one_incident(stack, account_entity(
        "breakglass", aad_id="c0ffee00-0000-4000-8000-0000000b1a55")))
    assert protected.status_code == 409 and "PROTECTED_ACCOUNTS" in protected.text
    assert stack.graph.user("c0ffee00-0000-4000-8000-0000000b1a55")["accountEnabled"] is False


@pytest.fixture(scope="module")
def guarded(stack):
    from tests.response.conftest import PROTECTED_ACCOUNTS

    process = stack.host(PROTECTED_ACCOUNTS=PROTECTED_ACCOUNTS)
    try:
        yield HostClient(process)
    finally:
        process.stop()
