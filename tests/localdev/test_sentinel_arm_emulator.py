"""The Sentinel ARM emulator over real HTTP, and its conformance to the official spec."""

from __future__ import annotations

import pytest
import requests

from localdev.emulators.entra import ARM_AUDIENCE, GRAPH_AUDIENCE, EntraEmulator
from localdev.emulators.sentinel_arm import API_VERSION, SentinelArmEmulator
from tests.fixtures import INCIDENT_4711, sample
from tests.sentinel_spec import (
    REQUEST_VALIDATOR,
    example,
    example_request,
    operation_examples,
    requires_spec,
    validate_request,
    validate_response,
)

REST_ID = INCIDENT_4711.replace("/Incidents/", "/incidents/")  # how the REST reference spells it
QUERY = {"api-version": API_VERSION}


@pytest.fixture(scope="module")
def entra():
    with EntraEmulator() as server:
        yield server


@pytest.fixture(scope="module")
def arm_server(entra):
    with SentinelArmEmulator(authority=entra) as server:
        yield server


@pytest.fixture
def arm(arm_server):
    arm_server.reset()
    arm_server.seed_from_trigger(sample("incident-trigger.json"))
    return arm_server


@pytest.fixture
def http(entra):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {entra.issue(ARM_AUDIENCE)}"
    return session


def call(http, arm, method, path, body=None, query=QUERY, **kw):
    return http.request(method, arm.url + path, params=query, json=body, timeout=5, **kw)


def put_comment(http, arm, name, message="hello", incident=INCIDENT_4711):
    return call(http, arm, "PUT", f"{incident}/comments/{name}", {"properties": {"message": message}})


# -- incidents ------------------------------------------------------------------------------------
def test_get_seeded_incident_without_trigger_only_lists(arm, http):
    response = call(http, arm, "GET", REST_ID)
    assert response.status_code == 200
    incident = response.json()
    trigger = sample("incident-trigger.json")["object"]
    assert incident["id"] == trigger["id"]
    assert incident["etag"] == trigger["etag"]
    assert incident["properties"]["title"] == trigger["properties"]["title"]
    assert not {"relatedEntities", "alerts", "comments", "bookmarks"} & set(incident["properties"])
    assert call(http, arm, "GET", INCIDENT_4711).json() == incident  # trigger spelling, same resource


def test_unknown_incident_is_404(arm, http):
    response = call(http, arm, "GET", REST_ID[:-4] + "0000")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
    assert call(http, arm, "POST", REST_ID[:-4] + "0000/entities").status_code == 404
    assert put_comment(http, arm, "c1", incident=REST_ID[:-4] + "0000").status_code == 404


def test_token_is_required_and_must_be_for_arm(arm, entra):
    anonymous = requests.get(arm.url + REST_ID, params=QUERY, timeout=5)
    assert anonymous.status_code == 401
    graph = requests.get(arm.url + REST_ID, params=QUERY, timeout=5,
                         headers={"Authorization": f"Bearer {entra.issue(GRAPH_AUDIENCE)}"})
    assert graph.status_code == 401
    assert graph.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


@pytest.mark.parametrize(("query", "code"), [
    ({}, "MissingApiVersionParameter"),
    ({"api-version": ""}, "MissingApiVersionParameter"),
    ({"api-version": "2021-09-01-preview"}, "NoRegisteredProviderFound"),
])
def test_api_version_is_required(arm, http, query, code):
    response = call(http, arm, "GET", REST_ID, query=query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_put_with_current_etag_updates_and_changes_etag(arm, http):
    incident = call(http, arm, "GET", REST_ID).json()
    incident["properties"]["status"] = "Active"
    incident["properties"]["labels"] = [{"labelName": "vt-enriched", "labelType": "User"}]
    response = call(http, arm, "PUT", REST_ID, incident)  # read-only fields sent back, as clients do
    assert response.status_code == 200
    updated = response.json()
    assert updated["etag"] != incident["etag"]
    assert updated["etag"].startswith('"') and updated["etag"].endswith('"')
    assert updated["properties"]["status"] == "Active"
    assert updated["properties"]["lastModifiedTimeUtc"] != incident["properties"]["lastModifiedTimeUtc"]
    assert updated["properties"]["incidentNumber"] == 4711  # read-only: kept from the server
    assert arm.incident(INCIDENT_4711)["properties"]["labels"] == [{"labelName": "vt-enriched", "labelType": "User"}]


def test_put_with_stale_etag_is_409(arm, http):
    incident = call(http, arm, "GET", REST_ID).json()
    arm.touch(INCIDENT_4711, owner={"assignedTo": "Megan Bowen"})
    incident["properties"]["status"] = "Active"
    response = call(http, arm, "PUT", REST_ID, incident)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "Conflict"
    assert arm.incident(INCIDENT_4711)["properties"]["status"] == "New"


def test_put_without_etag_overwrites_and_put_creates_201(arm, http):
    body = {"properties": {"title": "Manual incident", "severity": "Low", "status": "New"}}
    created = call(http, arm, "PUT", REST_ID[:-4] + "abcd", body)
    assert created.status_code == 201
    assert created.json()["properties"]["incidentNumber"] > 4711
    assert call(http, arm, "PUT", REST_ID[:-4] + "abcd", body).status_code == 200


@pytest.mark.parametrize("properties", [
    {"severity": "High", "status": "New"},
    {"title": "t", "severity": "Critical", "status": "New"},
    {"title": "t", "severity": "High", "status": "Resolved"},
    {"title": "t", "severity": "High", "status": "New", "labels": [{"labelType": "User"}]},
    {"title": "t", "severity": "High", "status": "New", "owner": {"ownerType": "Robot"}},
])
def test_put_invalid_incident_is_400(arm, http, properties):
    response = call(http, arm, "PUT", REST_ID, {"properties": properties})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_close_requires_classification(arm, http):
    incident = call(http, arm, "GET", REST_ID).json()
    incident["properties"]["status"] = "Closed"
    assert call(http, arm, "PUT", REST_ID, incident).status_code == 400
    incident["properties"].update(classification="TruePositive", classificationReason="SuspiciousActivity")
    closed = call(http, arm, "PUT", REST_ID, incident)
    assert closed.status_code == 200
    assert closed.json()["properties"]["status"] == "Closed"


def test_malformed_json_is_400(arm, http):
    response = call(http, arm, "PUT", REST_ID, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidRequestContent"


# -- sub-resources --------------------------------------------------------------------------------
def test_entities_alerts_and_bookmarks(arm, http):
    entities = call(http, arm, "POST", REST_ID + "/entities").json()
    assert [e["kind"] for e in entities["entities"]] == ["Ip", "Ip", "Ip", "Ip", "Host", "Account"]
    assert entities["metaData"] == [{"entityKind": "Ip", "count": 4}, {"entityKind": "Host", "count": 1},
                                    {"entityKind": "Account", "count": 1}]
    alerts = call(http, arm, "POST", REST_ID + "/alerts").json()
    assert [a["properties"]["alertDisplayName"] for a in alerts["value"]] == [
        "Sign-in from anonymizing proxy followed by mass file download"]
    assert call(http, arm, "POST", REST_ID + "/bookmarks").json() == {"value": []}


def test_comment_put_is_idempotent_per_id(arm, http):
    first = put_comment(http, arm, "vt-4711", "first")
    assert first.status_code == 201
    comment = first.json()
    assert comment["type"] == "Microsoft.SecurityInsights/Incidents/Comments"
    assert comment["properties"]["author"]["name"] == "func-sentinel-playbooks"
    again = put_comment(http, arm, "vt-4711", "second")
    assert again.status_code == 200
    assert again.json()["properties"]["createdTimeUtc"] == comment["properties"]["createdTimeUtc"]
    listed = call(http, arm, "GET", REST_ID + "/comments").json()["value"]
    assert [c["properties"]["message"] for c in listed] == ["second"]
    assert arm.incident(INCIDENT_4711)["properties"]["additionalData"]["commentsCount"] == 1


def test_comments_are_listed_in_creation_order_and_can_be_deleted(arm, http):
    for name in ("b", "a", "c"):
        assert put_comment(http, arm, name).status_code == 201
    assert [c["name"] for c in arm.comments(INCIDENT_4711)] == ["b", "a", "c"]
    assert call(http, arm, "GET", REST_ID + "/comments/a").json()["name"] == "a"
    assert call(http, arm, "DELETE", REST_ID + "/comments/a").status_code == 200
    assert call(http, arm, "DELETE", REST_ID + "/comments/a").status_code == 204
    assert call(http, arm, "GET", REST_ID + "/comments/a").status_code == 404


def test_comment_limits(arm, http):
    assert put_comment(http, arm, "long", "x" * 30_001).status_code == 400
    assert put_comment(http, arm, "long", "x" * 30_000).status_code == 201
    assert call(http, arm, "PUT", REST_ID + "/comments/empty", {"properties": {}}).status_code == 400
    for i in range(99):
        assert put_comment(http, arm, f"c{i}").status_code == 201
    response = put_comment(http, arm, "one-too-many")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert put_comment(http, arm, "c0", "edited").status_code == 200  # updating is not creating
    assert len(arm.comments(INCIDENT_4711)) == 100


def test_fault_injection_answers_as_told(arm, http):
    arm.fail(429, retry_after=1, path=r"/comments/")
    throttled = put_comment(http, arm, "c1")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert put_comment(http, arm, "c1").status_code == 201
    assert arm.comments(INCIDENT_4711)[0]["name"] == "c1"


def test_seed_incident_and_recording(arm, http):
    arm_id = arm.seed_incident("manual-1", {"title": "Seeded", "severity": "Medium", "status": "New"},
                               entities=[{"kind": "Ip", "properties": {"address": "192.0.2.1"}}])
    assert call(http, arm, "GET", arm_id).json()["properties"]["title"] == "Seeded"
    assert call(http, arm, "POST", arm_id + "/entities").json()["metaData"] == [{"entityKind": "Ip", "count": 1}]
    assert len(arm.requests_to("GET", r"/incidents/manual-1$")) == 1


# -- the official spec ----------------------------------------------------------------------------
@requires_spec
@pytest.mark.parametrize(("operation", "title", "example_"),
                         [pytest.param(*found, id=found[1]) for found in operation_examples()])
def test_spec_examples_pass_the_validator(operation, title, example_):
    assert validate_request(operation.method, *example_request(operation, example_)) == []
    for status, response in example_["responses"].items():
        assert validate_response(operation.operation_id, int(status), response.get("body")) == []


@requires_spec
def test_validator_accepts_create_examples():
    path = REST_ID
    assert validate_request("PUT", path, QUERY, example("CreateIncident.json")["parameters"]["incident"]) == []
    comment = example("comments/CreateIncidentComment.json")["parameters"]["incidentComment"]
    assert validate_request("PUT", path + "/comments/c1", QUERY, comment) == []


@requires_spec
@pytest.mark.parametrize(("path_tail", "body", "expected"), [
    ("", {"properties": {"severity": "High", "status": "New"}}, "'title' is a required property"),
    ("", {"properties": {"title": "t", "severity": "Critical", "status": "New"}}, "'Critical' is not one of"),
    ("/comments/c1", {"properties": {}}, "'message' is a required property"),
    ("/comments/c1", None, "body parameter 'incidentComment' is required"),
])
def test_validator_rejects_what_the_spec_rejects(path_tail, body, expected):
    problems = validate_request("PUT", REST_ID + path_tail, QUERY, body)
    assert any(expected in problem for problem in problems), problems


@requires_spec
def test_validator_checks_parameters():
    assert "query parameter 'api-version' is required" in validate_request("GET", REST_ID, {}, None)
    assert validate_request("PATCH", REST_ID, QUERY, {}) != []
    assert validate_request("GET", REST_ID.replace("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "not-a-guid"),
                            QUERY, None) != []


@requires_spec
def test_trigger_bodies_round_trip_through_the_validator():
    """Clients PUT back what they read (nulls, read-only fields, trigger-only lists): Azure accepts it."""
    for name in ("incident-trigger.json", "incident-trigger-updated.json", "incident-trigger-defender-portal.json"):
        assert validate_request("PUT", REST_ID, QUERY, sample(name)["object"]) == [], name


@requires_spec
def test_emulator_with_validator_rejects_what_the_spec_rejects(http, entra):
    with SentinelArmEmulator(authority=entra, validator=REQUEST_VALIDATOR) as strict:
        strict.seed_from_trigger(sample("incident-trigger.json"))
        critical = {"properties": {"title": "t", "severity": "Critical", "status": "New"}}
        bad = call(http, strict, "PUT", REST_ID, critical)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "BadRequest"
        assert "Critical" in bad.json()["error"]["message"]
        assert put_comment(http, strict, "c1").status_code == 201
        no_message = call(http, strict, "PUT", REST_ID + "/comments/c2", {"properties": {"text": "hi"}})
        assert no_message.status_code == 400


@requires_spec
def test_emulator_answers_conform_to_the_spec(arm, http):
    put_comment(http, arm, "c1")
    incident = call(http, arm, "GET", REST_ID).json()
    checks = [
        ("Incidents_Get", incident),
        ("Incidents_ListEntities", call(http, arm, "POST", REST_ID + "/entities").json()),
        ("Incidents_ListAlerts", call(http, arm, "POST", REST_ID + "/alerts").json()),
        ("Incidents_ListBookmarks", call(http, arm, "POST", REST_ID + "/bookmarks").json()),
        ("IncidentComments_List", call(http, arm, "GET", REST_ID + "/comments").json()),
        ("IncidentComments_Get", call(http, arm, "GET", REST_ID + "/comments/c1").json()),
        ("Incidents_CreateOrUpdate", call(http, arm, "PUT", REST_ID, incident).json()),
    ]
    for operation_id, body in checks:
        assert validate_response(operation_id, 200, body) == [], operation_id
    error = call(http, arm, "GET", REST_ID[:-4] + "0000").json()
    assert validate_response("Incidents_Get", 404, error) == []


# -- paging, relations, tasks (the lists the spec marks x-ms-pageable) ------------------------------
def test_comments_are_paged_with_a_next_link(arm, http):
    arm.page_size = 2
    for i in range(5):
        assert put_comment(http, arm, f"c{i}", f"m{i}").status_code == 201
    seen, link, pages = [], None, 0
    response = call(http, arm, "GET", REST_ID + "/comments")
    while True:
        page = response.json()
        pages += 1
        seen += [c["properties"]["message"] for c in page["value"]]
        link = page.get("nextLink")
        if not link:
            break
        assert link.startswith(arm.url) and "$skipToken" in link and "api-version" in link
        response = http.get(link, timeout=5)
    assert seen == [f"m{i}" for i in range(5)] and pages == 3
    top = call(http, arm, "GET", REST_ID + "/comments", query=QUERY | {"$top": "1"}).json()
    assert len(top["value"]) == 1 and "$top=1" in top["nextLink"]


@pytest.mark.parametrize(("query", "code"), [
    ({"$skipToken": "!!"}, "BadRequest"),
    ({"$top": "0"}, "BadRequest"),
    ({"$filter": "properties/status eq 'New'"}, "NotModelled"),
])
def test_paging_parameters_are_checked(arm, http, query, code):
    response = call(http, arm, "GET", REST_ID + "/comments", query=QUERY | query)
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_the_workspace_lists_its_incidents_in_pages(arm, http):
    arm.page_size = 1
    second = arm.seed_incident("second", {"title": "t", "severity": "Low", "status": "New"})
    workspace = REST_ID.split("/incidents/")[0]
    first = call(http, arm, "GET", workspace + "/incidents").json()
    assert len(first["value"]) == 1 and first["nextLink"]
    rest = http.get(first["nextLink"], timeout=5).json()
    assert {first["value"][0]["name"], rest["value"][0]["name"]} == {INCIDENT_4711.rsplit("/", 1)[1], "second"}
    assert "nextLink" not in rest and second.endswith("/second")


def test_relations_are_served_and_paged(arm, http):
    arm.page_size = 1
    bookmark = REST_ID.split("/incidents/")[0] + "/bookmarks/2216d0e1-91e3-4902-89fd-d2df8c535096"
    for name in ("rel-1", "rel-2"):
        created = call(http, arm, "PUT", f"{REST_ID}/relations/{name}", {"properties": {"relatedResourceId": bookmark}})
        assert created.status_code == 201
        assert created.json()["properties"]["relatedResourceType"] == "Microsoft.SecurityInsights/bookmarks"
    page = call(http, arm, "GET", REST_ID + "/relations").json()
    assert len(page["value"]) == 1 and page["nextLink"]
    assert call(http, arm, "PUT", f"{REST_ID}/relations/rel-3", {"properties": {}}).status_code == 400
    assert call(http, arm, "DELETE", f"{REST_ID}/relations/rel-1").status_code == 200
    assert call(http, arm, "GET", f"{REST_ID}/relations/rel-1").status_code == 404


def test_tasks_are_validated_and_keep_their_author(arm, http):
    task = {"properties": {"title": "Review the 2 malicious indicators", "status": "New"}}
    created = call(http, arm, "PUT", f"{REST_ID}/tasks/task-1", task)
    assert created.status_code == 201
    assert created.json()["properties"]["createdBy"]["name"] == "func-sentinel-playbooks"
    for bad, fragment in ((task | {"properties": {"status": "New"}}, "'title' is required"),
                          (task | {"properties": {"title": "x", "status": "Done"}}, "not one of")):
        refused = call(http, arm, "PUT", f"{REST_ID}/tasks/task-2", bad)
        assert refused.status_code == 400 and fragment in refused.json()["error"]["message"]
    closed = arm.analyst_task_change(INCIDENT_4711, "task-1", status="Completed")
    assert closed["properties"]["lastModifiedBy"]["name"] == "Megan Bowen"
    stale = call(http, arm, "PUT", f"{REST_ID}/tasks/task-1", task | {"etag": created.json()["etag"]})
    assert stale.status_code == 409
    assert call(http, arm, "GET", f"{REST_ID}/tasks/task-1").json()["properties"]["status"] == "Completed"
    assert [t["name"] for t in call(http, arm, "GET", REST_ID + "/tasks").json()["value"]] == ["task-1"]


@requires_spec
def test_paged_lists_relations_and_tasks_conform_to_the_spec(arm, http):
    arm.page_size = 1
    put_comment(http, arm, "c1")
    put_comment(http, arm, "c2")
    bookmark = REST_ID.split("/incidents/")[0] + "/bookmarks/2216d0e1-91e3-4902-89fd-d2df8c535096"
    relation = {"properties": {"relatedResourceId": bookmark}}
    task = {"properties": {"title": "Collect an investigation package", "description": "d", "status": "New"}}
    for path, body in ((f"{REST_ID}/relations/rel-1", relation), (f"{REST_ID}/tasks/task-1", task)):
        assert validate_request("PUT", path, QUERY, body) == []
    checks = [
        ("IncidentRelations_CreateOrUpdate", 201, call(http, arm, "PUT", f"{REST_ID}/relations/rel-1", relation)),
        ("IncidentTasks_CreateOrUpdate", 201, call(http, arm, "PUT", f"{REST_ID}/tasks/task-1", task)),
        ("IncidentTasks_CreateOrUpdate", 200, call(http, arm, "PUT", f"{REST_ID}/tasks/task-1", task)),
        ("IncidentComments_List", 200, call(http, arm, "GET", REST_ID + "/comments")),
        ("IncidentRelations_List", 200, call(http, arm, "GET", REST_ID + "/relations")),
        ("IncidentTasks_List", 200, call(http, arm, "GET", REST_ID + "/tasks")),
        ("IncidentTasks_Get", 200, call(http, arm, "GET", REST_ID + "/tasks/task-1")),
        ("Incidents_List", 200, call(http, arm, "GET", REST_ID.split("/incidents/")[0] + "/incidents")),
    ]
    for operation_id, status, response in checks:
        assert response.status_code == status, (operation_id, response.text)
        assert validate_response(operation_id, status, response.json()) == [], operation_id
