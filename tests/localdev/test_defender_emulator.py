"""The Defender for Endpoint emulator over real HTTP: the documented contract, its errors and faults."""

from __future__ import annotations

import pytest
import requests

from localdev.emulators.defender import WS_FIN_0042 as WS
from localdev.emulators.defender import DefenderEmulator
from localdev.emulators.entra import ARM_AUDIENCE, MDE_AUDIENCE, EntraEmulator


@pytest.fixture(scope="module")
def entra():
    with EntraEmulator() as server:
        yield server


@pytest.fixture(scope="module")
def server(entra):
    with DefenderEmulator(authority=entra) as emulator:
        yield emulator


@pytest.fixture
def mde(server):
    server.reset()
    return server


@pytest.fixture
def http(entra):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {entra.issue(MDE_AUDIENCE)}"
    return session


def get(http, mde, path, **params):
    return http.get(mde.url + path, params=params, timeout=5)


def isolate(http, mde, machine=WS, body=None):
    body = body if body is not None else {"Comment": "incident 4711", "IsolationType": "Full"}
    return http.post(f"{mde.url}/api/machines/{machine}/isolate", json=body, timeout=5)


def test_token_for_another_api_is_401(mde, entra):
    assert requests.get(f"{mde.url}/api/machines", timeout=5).status_code == 401
    other = requests.get(f"{mde.url}/api/machines", headers={"Authorization": f"Bearer {entra.issue(ARM_AUDIENCE)}"},
                         timeout=5)
    assert other.status_code == 401 and other.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_machines_filter_is_exact_and_prefix_is_explicit(mde, http):
    mde.add_machine("a" * 40, "ws-fin-00420.corp.contoso.com")
    exact = get(http, mde, "/api/machines", **{"$filter": "computerDnsName eq 'ws-fin-0042.corp.contoso.com'"})
    assert exact.status_code == 200 and [m["id"] for m in exact.json()["value"]] == [WS]
    assert exact.json()["@odata.context"].endswith("$metadata#Machines")
    prefix = get(http, mde, "/api/machines", **{"$filter": "startswith(computerDnsName,'ws-fin-0042')"})
    assert sorted(m["id"] for m in prefix.json()["value"]) == sorted([WS, "a" * 40])
    combined = get(http, mde, "/api/machines",
                   **{"$filter": "startswith(computerDnsName,'ws-fin') and healthStatus eq 'Active'", "$top": "1"})
    assert len(combined.json()["value"]) == 1


@pytest.mark.parametrize("bad", ["contains(computerDnsName,'ws')", "computerDnsName eq ws", "title eq 'x'",
                                 "computerDnsName eq 'a' or id eq 'b'"])
def test_unsupported_filter_is_odata_error(mde, http, bad):
    response = get(http, mde, "/api/machines", **{"$filter": bad})
    assert response.status_code == 400 and response.json()["error"]["code"] == "ODataError"
    assert response.json()["error"]["target"]  # every error carries a correlation id


def test_quote_escape_in_filter(mde, http):
    mde.add_machine("b" * 40, "o'brien-pc.corp.contoso.com")
    response = get(http, mde, "/api/machines", **{"$filter": "computerDnsName eq 'o''brien-pc.corp.contoso.com'"})
    assert [m["id"] for m in response.json()["value"]] == ["b" * 40]


def test_unknown_machine_is_resource_not_found(mde, http):
    response = get(http, mde, "/api/machines/" + "f" * 40)
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "ResourceNotFound", "message": f"Machine {'f' * 40} was not found",
                                        "target": response.json()["error"]["target"]}


def test_isolate_creates_a_pending_action_that_progresses_when_polled(mde, http):
    created = isolate(http, mde)
    assert created.status_code == 201
    action = created.json()
    assert (action["type"], action["scope"], action["status"]) == ("Isolate", "Full", "Pending")
    assert action["machineId"] == WS
    assert action["requestorComment"] == "incident 4711" and action["computerDnsName"] == "ws-fin-0042.corp.contoso.com"
    assert mde.isolation(WS) is None
    statuses = [get(http, mde, f"/api/machineactions/{action['id']}").json()["status"] for _ in range(3)]
    assert statuses == ["InProgress", "Succeeded", "Succeeded"]
    assert mde.isolation(WS) == "Full"


def test_duplicate_while_pending_is_active_request_already_exists(mde, http):
    assert isolate(http, mde).status_code == 201
    again = isolate(http, mde)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "ActiveRequestAlreadyExists"
    assert again.json()["error"]["message"] == "Action is already in progress"
    assert len(mde.actions(WS, "Isolate")) == 1


def test_isolate_of_an_isolated_machine_is_accepted_as_the_service_does(mde, http):
    mde.set_isolated(WS)
    assert isolate(http, mde).status_code == 201
    assert len(mde.actions(WS, "Isolate")) == 2


def test_body_parameters_are_case_sensitive(mde, http):
    missing = isolate(http, mde, body={"comment": "lower-case is not the parameter"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingRequiredParameter"
    wrong = isolate(http, mde, body={"Comment": "x", "IsolationType": "Partial"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "InvalidInput"


def test_outcome_hold_and_unisolate(mde, http):
    mde.set_outcome(WS, "Failed")
    failed = isolate(http, mde).json()
    for _ in range(2):
        get(http, mde, f"/api/machineactions/{failed['id']}")
    assert mde.actions(WS)[0]["status"] == "Failed" and mde.isolation(WS) is None
    mde.set_outcome(WS, "Succeeded")
    mde.hold = True
    held = isolate(http, mde).json()
    assert get(http, mde, f"/api/machineactions/{held['id']}").json()["status"] == "Pending"
    mde.complete(held["id"])
    assert mde.isolation(WS) == "Full"
    mde.hold = False
    released = http.post(f"{mde.url}/api/machines/{WS}/unisolate", json={"Comment": "release"}, timeout=5).json()
    assert released["type"] == "Unisolate" and released["scope"] is None
    mde.complete(released["id"])
    assert mde.isolation(WS) is None


def test_machineactions_filter_by_machine_and_type_newest_first(mde, http):
    first = isolate(http, mde).json()
    mde.complete(first["id"])
    second = http.post(f"{mde.url}/api/machines/{WS}/unisolate", json={"Comment": "x"}, timeout=5).json()
    listed = get(http, mde, "/api/machineactions", **{"$filter": f"machineId eq '{WS}'"}).json()["value"]
    assert [a["id"] for a in listed] == [second["id"], first["id"]]
    only = get(http, mde, "/api/machineactions", **{"$filter": f"machineId eq '{WS}' and type eq 'Isolate'"})
    assert [a["id"] for a in only.json()["value"]] == [first["id"]]


def test_indicator_submit_is_an_upsert_and_delete_is_204_then_404(mde, http):
    body = {"indicatorValue": "203.0.113.45", "indicatorType": "IpAddress", "action": "AlertAndBlock",
            "title": "t", "description": "d", "expirationTime": "2030-01-01T00:00:00Z", "severity": "High"}
    first = http.post(f"{mde.url}/api/indicators", json=body, timeout=5)
    assert first.status_code == 200
    second = http.post(f"{mde.url}/api/indicators", json=body | {"title": "t2"}, timeout=5).json()
    assert second["id"] == first.json()["id"] and second["title"] == "t2" and len(mde.indicators()) == 1
    listed = get(http, mde, "/api/indicators", **{"$filter": "indicatorValue eq '203.0.113.45'"}).json()["value"]
    assert [i["id"] for i in listed] == [second["id"]]
    assert http.delete(f"{mde.url}/api/indicators/{second['id']}", timeout=5).status_code == 204
    assert http.delete(f"{mde.url}/api/indicators/{second['id']}", timeout=5).status_code == 404


SHA256 = "9f" * 32


@pytest.mark.parametrize(("change", "code"), [
    ({"indicatorValue": "10.0.0.0/8"}, "InvalidIpAddress"),
    ({"action": "Nuke"}, "InvalidInput"),
    ({"title": ""}, "MissingRequiredParameter"),
    # Each type's value, with the documented error codes ("Handling REST API errors").
    ({"indicatorType": "FileSha256", "indicatorValue": SHA256[:-2]}, "InvalidHashValue"),
    ({"indicatorType": "FileSha256", "indicatorValue": "zz" * 32}, "InvalidHashValue"),
    ({"indicatorType": "FileSha1", "indicatorValue": SHA256}, "InvalidHashValue"),
    ({"indicatorType": "FileMd5", "indicatorValue": "ab" * 20}, "InvalidHashValue"),
    ({"indicatorType": "DomainName", "indicatorValue": "*.evil.example"}, "InvalidDomainName"),
    ({"indicatorType": "DomainName", "indicatorValue": "https://evil.example/"}, "InvalidDomainName"),
    ({"indicatorType": "DomainName", "indicatorValue": "203.0.113.45"}, "InvalidDomainName"),
    ({"indicatorType": "Url", "indicatorValue": "evil.example/login"}, "InvalidUrl"),
    ({"indicatorType": "Url", "indicatorValue": "ftp://evil.example/x"}, "InvalidUrl"),
    # Block and remediate is a file (and certificate) action; Audit must alert; a time must be a time.
    ({"action": "BlockAndRemediate"}, "InvalidInput"),
    ({"indicatorType": "Url", "indicatorValue": "https://evil.example/a", "action": "BlockAndRemediate"},
     "InvalidInput"),
    ({"action": "Audit"}, "InvalidInput"),
    ({"expirationTime": "next tuesday"}, "InvalidInput"),
])
def test_indicator_validation(mde, http, change, code):
    body = {"indicatorValue": "203.0.113.45", "indicatorType": "IpAddress", "action": "AlertAndBlock",
            "title": "t", "description": "d"} | change
    response = http.post(f"{mde.url}/api/indicators", json=body, timeout=5)
    assert response.status_code == 400 and response.json()["error"]["code"] == code


@pytest.mark.parametrize("body", [
    {"indicatorType": "FileSha256", "indicatorValue": SHA256, "action": "BlockAndRemediate"},
    {"indicatorType": "FileSha1", "indicatorValue": "a1" * 20, "action": "Block"},
    {"indicatorType": "FileMd5", "indicatorValue": "B2" * 16, "action": "Allowed"},
    {"indicatorType": "DomainName", "indicatorValue": "evil.example", "action": "Block"},
    {"indicatorType": "Url", "indicatorValue": "https://evil.example/login/", "action": "Block"},
    {"indicatorType": "Url", "indicatorValue": "http://203.0.113.45:8080/x", "action": "Audit",
     "generateAlert": True},
])
def test_every_type_the_pack_blocks_is_accepted(mde, http, body):
    answer = http.post(f"{mde.url}/api/indicators", json={"title": "t", "description": "d", **body}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["indicatorType"] == body["indicatorType"]


def test_application_is_kept_from_the_first_writer(mde, http):
    """Submit Indicator API, ``application``: "This field only works for new indicators. It doesn't update the
    value on an existing indicator." """
    body = {"indicatorValue": "evil.example", "indicatorType": "DomainName", "action": "Block", "title": "t",
            "description": "d", "application": "first"}
    first = http.post(f"{mde.url}/api/indicators", json=body, timeout=5).json()
    second = http.post(f"{mde.url}/api/indicators", json=body | {"application": "second", "title": "t2"},
                       timeout=5).json()
    assert second["id"] == first["id"] and second["application"] == "first" and second["title"] == "t2"


def test_an_import_over_500_is_maximum_batch_size_exceeded(mde, http):
    too_many = http.post(f"{mde.url}/api/indicators/import", json={"Indicators": [BLOCK_BODY] * 501}, timeout=5)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "MaximumBatchSizeExceeded" and "Received: 501" in too_many.text


def test_faults_use_the_defender_error_shape(mde, http):
    mde.fail(429, retry_after=7)
    throttled = get(http, mde, "/api/machines")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert get(http, mde, "/api/machines").status_code == 200


def test_reset_restores_the_seed(mde, http):
    isolate(http, mde)
    mde.add_machine("c" * 40, "extra.corp.contoso.com")
    mde.reset()
    assert mde.actions() == [] and get(http, mde, "/api/machines/" + "c" * 40).status_code == 404
    assert get(http, mde, f"/api/machines/{WS}").status_code == 200


# -- indicators belong to the application that created them (List Indicators API) ------------------
SOC_PORTAL = "9e1d2c3b-0000-4000-8000-00000000a11f"  # another application: the SOC's own tooling
BLOCK_BODY = {"indicatorValue": "203.0.113.66", "indicatorType": "IpAddress", "action": "AlertAndBlock",
              "title": "t", "description": "d"}


def as_app(entra, app_id: str, *roles: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {entra.issue(MDE_AUDIENCE, app_id=app_id, roles=roles)}"
    return session


def values(session, mde, **params) -> list[str]:
    answer = session.get(f"{mde.url}/api/indicators", params=params, timeout=5)
    assert answer.status_code == 200, answer.text
    return [i["indicatorValue"] for i in answer.json()["value"]]


def test_ti_readwrite_sees_only_its_own_indicators_ti_readwrite_all_sees_all(mde, entra):
    soc = as_app(entra, SOC_PORTAL, "Ti.ReadWrite")
    allow = {**BLOCK_BODY, "indicatorValue": "203.0.113.77", "action": "Allowed", "title": "SOC exclusion"}
    created = soc.post(f"{mde.url}/api/indicators", json=allow, timeout=5).json()
    assert created["createdBy"] == SOC_PORTAL
    mine = as_app(entra, "0a1b2c3d-0000-4000-8000-0000000000b1", "Ti.ReadWrite")
    assert mine.post(f"{mde.url}/api/indicators", json=BLOCK_BODY, timeout=5).status_code == 200
    assert values(mine, mde) == ["203.0.113.66"]  # the SOC's exclusion is invisible
    assert values(mine, mde, **{"$filter": "indicatorValue eq '203.0.113.77'"}) == []
    assert values(soc, mde) == ["203.0.113.77"]
    everything = as_app(entra, "0a1b2c3d-0000-4000-8000-0000000000b1", "Ti.ReadWrite.All")
    assert sorted(values(everything, mde)) == ["203.0.113.66", "203.0.113.77"]
    # The function app's managed identity holds what the deployment grants, Ti.ReadWrite.All among it.
    identity = requests.Session()
    identity.headers["Authorization"] = f"Bearer {entra.issue(MDE_AUDIENCE)}"
    assert sorted(values(identity, mde)) == ["203.0.113.66", "203.0.113.77"]


def test_each_api_needs_its_application_permission(mde, entra):
    reader = as_app(entra, SOC_PORTAL, "Machine.Read.All")
    assert get(reader, mde, "/api/machines").status_code == 200
    denied = isolate(reader, mde)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Forbidden"
    assert "required application permissions (Machine.Isolate)" in denied.json()["error"]["message"]
    assert get(reader, mde, "/api/indicators").status_code == 403
    nothing = as_app(entra, SOC_PORTAL)
    assert get(nothing, mde, "/api/machineactions").status_code == 403
    assert mde.actions() == []  # the refused isolate created nothing


def test_import_submits_or_updates_a_batch_and_fails_items_alone(mde, http):
    batch = [BLOCK_BODY, {**BLOCK_BODY, "indicatorValue": "198.51.100.0/24"},
             {**BLOCK_BODY, "indicatorValue": "2001:db8::66", "severity": "High"}]
    answer = http.post(f"{mde.url}/api/indicators/import", json={"Indicators": batch}, timeout=5)
    assert answer.status_code == 200
    results = answer.json()["value"]
    assert [(r["indicator"], r["isFailed"]) for r in results] == [("203.0.113.66", False), ("198.51.100.0/24", True),
                                                                 ("2001:db8::66", False)]
    assert "invalid" in results[1]["failureReason"] and results[1]["id"] is None
    again = http.post(f"{mde.url}/api/indicators/import", json={"Indicators": [BLOCK_BODY]}, timeout=5)
    assert again.json()["value"][0]["id"] == results[0]["id"]  # same value and type: updated, not duplicated
    assert len(mde.indicators()) == 2
    too_many = http.post(f"{mde.url}/api/indicators/import", json={"Indicators": [BLOCK_BODY] * 501}, timeout=5)
    assert too_many.status_code == 400
    assert http.post(f"{mde.url}/api/indicators/import", json={"indicators": []}, timeout=5).status_code == 400
