"""The ServiceNow Table API emulator over real HTTP: the documented contract, its quirks and its errors."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from localdev.emulators.servicenow import ServiceNowEmulator
from tests.fixtures import FIXTURES

USER, PASSWORD = "svc_sentinel_sync", "s3cret-pw"


@pytest.fixture(scope="module")
def server():
    with ServiceNowEmulator(users={USER: PASSWORD, "megan.bowen": "analyst"}) as snow:
        yield snow


@pytest.fixture
def snow(server):
    server.reset()
    return server


@pytest.fixture
def http():
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    session.headers["Accept"] = "application/json"
    return session


def table(snow, name="incident", sys_id=""):
    return f"{snow.url}/api/now/table/{name}" + (f"/{sys_id}" if sys_id else "")


def create(http, snow, **fields):
    response = http.post(table(snow), json=fields, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["result"]


# -- auth and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("nobody", PASSWORD)])
def test_basic_auth_is_required(snow, auth):
    response = requests.get(table(snow), auth=auth, timeout=5)
    assert response.status_code == 401
    assert response.json() == {"error": {"message": "User Not Authenticated",
                                         "detail": "Required to provide Auth information"}, "status": "failure"}


def test_unknown_table_and_record(snow, http):
    assert http.get(table(snow, "cmdb_ci_nope"), timeout=5).status_code == 400
    missing = http.get(table(snow, sys_id="0" * 32), timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "No Record found"


def test_faults_on_demand(snow, http):
    snow.fail(429, retry_after=7)
    throttled = http.get(table(snow), timeout=5)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["status"] == "failure"
    snow.fail(503)
    assert http.get(table(snow), timeout=5).status_code == 503
    assert http.get(table(snow), timeout=5).status_code == 200


def test_display_values_are_not_modelled_and_say_so(snow, http):
    response = http.get(table(snow), params={"sysparm_display_value": "true"}, timeout=5)
    assert response.status_code == 400 and "not modelled" in response.json()["error"]["message"]
    assert http.get(table(snow), params={"sysparm_display_value": "False"}, timeout=5).status_code == 200


# -- records ----------------------------------------------------------------------------------
def test_created_record_has_the_shape_of_the_sample(snow, http):
    sample = json.loads((FIXTURES / "servicenow-incident.json").read_text())["result"]
    record = create(http, snow, short_description="x", impact=1, urgency="2", correlation_id="abc",
                    assigned_to=snow.user_sys_id("megan.bowen"), caller_id="")
    assert set(record) == set(sample)
    assert all(isinstance(value, (str, dict)) for value in record.values())  # every value a string
    assert record["number"] == "INC0010001" and len(record["sys_id"]) == 32
    assert record["impact"] == "1" and record["priority"] == "2"  # derived from impact x urgency
    assert record["assigned_to"] == {"link": f"{snow.url}/api/now/table/sys_user/{snow.user_sys_id('megan.bowen')}",
                                     "value": snow.user_sys_id("megan.bowen")}
    assert record["caller_id"] == ""  # an empty reference is an empty string
    assert record["sys_created_by"] == USER and record["sys_mod_count"] == "0"
    assert len(record["sys_updated_on"]) == 19  # YYYY-MM-DD HH:MM:SS, whole seconds


def test_fields_and_bare_references(snow, http):
    record = create(http, snow, assigned_to="a" * 32)
    got = http.get(table(snow, sys_id=record["sys_id"]), timeout=5,
                   params={"sysparm_fields": "number,assigned_to,no_such_field",
                           "sysparm_exclude_reference_link": "true"}).json()["result"]
    assert got == {"number": record["number"], "assigned_to": "a" * 32}


def test_work_notes_and_comments_become_journal_rows(snow, http):
    record = create(http, snow, short_description="x", work_notes="first note")
    patched = http.patch(table(snow, sys_id=record["sys_id"]), json={"comments": "to the caller"}, timeout=5).json()
    assert patched["result"]["work_notes"] == "" and patched["result"]["comments"] == ""
    assert patched["result"]["sys_mod_count"] == "1"
    rows = http.get(table(snow, "sys_journal_field"), timeout=5, params={
        "sysparm_query": f"element_id={record['sys_id']}^ORDERBYelement"}).json()["result"]
    assert [(r["element"], r["value"], r["name"], r["sys_created_by"]) for r in rows] == [
        ("comments", "to the caller", "incident", USER), ("work_notes", "first note", "incident", USER)]
    sample = json.loads((FIXTURES / "servicenow-journal.json").read_text())["result"][0]
    assert set(rows[0]) == set(sample)


def test_journal_is_read_only_to_the_integration_user(snow, http):
    response = http.post(table(snow, "sys_journal_field"), json={"value": "x"}, timeout=5)
    assert response.status_code == 403


def test_no_change_no_new_update(snow, http):
    record = create(http, snow, short_description="same")
    again = http.patch(table(snow, sys_id=record["sys_id"]), json={"short_description": "same"}, timeout=5)
    assert again.json()["result"]["sys_mod_count"] == "0"


def test_resolving_needs_close_code_and_notes(snow, http):
    record = create(http, snow, short_description="x")
    url = table(snow, sys_id=record["sys_id"])
    refused = http.patch(url, json={"state": "6", "close_code": "Solution provided"}, timeout=5)
    assert refused.status_code == 403
    assert "Data Policy Exception" in refused.json()["error"]["detail"]
    assert "Resolution notes" in refused.json()["error"]["detail"]
    assert snow.record(record["sys_id"])["state"] == "1"  # nothing written
    resolved = http.patch(url, json={"state": "6", "close_code": "Solution provided", "close_notes": "done"},
                          timeout=5).json()["result"]
    assert resolved["state"] == resolved["incident_state"] == "6" and resolved["resolved_at"]
    reopened = http.put(url, json={"state": "2"}, timeout=5).json()["result"]
    assert reopened["reopen_count"] == "1" and reopened["resolved_at"] == ""
    canceled = http.patch(url, json={"state": "8"}, timeout=5).json()["result"]
    assert canceled["active"] == "false"


def test_update_as_an_analyst(snow):
    record = snow.seed_incident(short_description="x")
    snow.advance(3)
    after = snow.update_as(record["sys_id"], "megan.bowen", work_notes="looked", urgency=1)
    assert after["sys_updated_by"] == "megan.bowen" and after["sys_updated_on"] > record["sys_updated_on"]
    assert [row["sys_created_by"] for row in snow.journal(record["sys_id"])] == ["megan.bowen"]
    with pytest.raises(ValueError, match="Resolution code"):
        snow.update_as(record["sys_id"], state="6")


# -- queries ----------------------------------------------------------------------------------
@pytest.fixture
def five(snow):
    records = []
    for i in range(5):
        records.append(snow.seed_incident(short_description=f"n{i}", correlation_display="Microsoft Sentinel" if i < 4
                                          else "Other", urgency=str(1 + i % 3)))
        snow.advance(1)
    return records


def query(http, snow, q, **params):
    response = http.get(table(snow), params={"sysparm_query": q, **params}, timeout=5)
    assert response.status_code == 200, response.text
    return response


def numbers(response):
    return [r["number"] for r in response.json()["result"]]


def test_and_equals_and_range(snow, http, five):
    since = five[2]["sys_updated_on"]
    got = query(http, snow, f"correlation_display=Microsoft Sentinel^sys_updated_on>={since}^ORDERBYsys_updated_on")
    assert numbers(got) == [five[2]["number"], five[3]["number"]]


def test_or_in_and_order_desc(snow, http, five):
    got = query(http, snow, "urgency=1^ORurgency=3^ORDERBYDESCnumber")
    assert numbers(got) == [five[i]["number"] for i in (3, 2, 0)]
    got = query(http, snow, f"numberIN{five[0]['number']},{five[4]['number']}^ORDERBYnumber")
    assert numbers(got) == [five[0]["number"], five[4]["number"]]
    assert numbers(query(http, snow, "short_descriptionSTARTSWITHn1")) == [five[1]["number"]]


def test_unknown_field_in_a_query_is_silently_dropped(snow, http, five):
    # The documented pitfall: a misspelt field matches everything instead of nothing.
    assert len(query(http, snow, "corelation_id=nothing-like-this").json()["result"]) == 5


def test_paging_with_total_count_and_link(snow, http, five):
    first = query(http, snow, "ORDERBYnumber", sysparm_limit="2")
    assert first.headers["X-Total-Count"] == "5" and len(first.json()["result"]) == 2
    assert 'rel="next"' in first.headers["Link"] and "sysparm_offset=2" in first.headers["Link"]
    last = query(http, snow, "ORDERBYnumber", sysparm_limit="2", sysparm_offset="4")
    assert numbers(last) == [five[4]["number"]] and 'rel="next"' not in last.headers["Link"]


def test_pysnow_reads_and_writes_through_the_emulator(snow, five):
    import pysnow

    client = pysnow.Client(host=snow.url.split("://")[1], use_ssl=False, user=USER, password=PASSWORD)
    incidents = client.resource(api_path="/table/incident")
    got = incidents.get(query="correlation_display=Microsoft Sentinel^ORDERBYnumber", limit=2, offset=1).all()
    assert [r["number"] for r in got] == [five[1]["number"], five[2]["number"]]
    updated = incidents.update({"sys_id": five[0]["sys_id"]}, {"urgency": "1"})  # pysnow: GET then PUT
    assert updated["priority"] == "3"
    methods = [r.method for r in snow.received[-2:]]
    assert methods == ["GET", "PUT"]


# -- what a real instance refuses, drops or hides ----------------------------------------------
ACL_BODY = {"error": {"message": "Operation Failed",
                      "detail": "ACL Exception Update Failed due to security constraints"}, "status": "failure"}


def resolve(http, snow, sys_id, code="Solution provided"):
    return http.patch(table(snow, sys_id=sys_id), json={"state": "6", "close_code": code, "close_notes": "done"},
                      timeout=5)


def test_closed_and_canceled_incidents_are_read_only_for_itil(snow, http):
    record = create(http, snow, short_description="x")
    assert resolve(http, snow, record["sys_id"]).status_code == 200  # itil may resolve...
    snow.update_as(record["sys_id"], "system", state="7")  # ...the auto-close job closes
    for body in ({"work_notes": "late note"}, {"state": "2"}, {"close_code": "Duplicate"}):
        refused = http.patch(table(snow, sys_id=record["sys_id"]), json=body, timeout=5)
        assert refused.status_code == 403 and refused.json() == ACL_BODY
    assert snow.record(record["sys_id"])["state"] == "7" and len(snow.journal(record["sys_id"])) == 0
    with pytest.raises(PermissionError):
        snow.update_as(record["sys_id"], "megan.bowen", state="2")
    admin = snow.update_as(record["sys_id"], "admin", state="2")  # admin still may
    assert admin["state"] == "2" and admin["reopen_count"] == "1"
    canceled = create(http, snow, short_description="y")
    assert http.patch(table(snow, sys_id=canceled["sys_id"]), json={"state": "8"}, timeout=5).status_code == 200
    assert http.patch(table(snow, sys_id=canceled["sys_id"]), json={"state": "2"}, timeout=5).json() == ACL_BODY


def test_itil_cannot_close_the_field_is_dropped(snow, http):
    record = create(http, snow, short_description="x")
    answer = http.patch(table(snow, sys_id=record["sys_id"]),
                        json={"state": "7", "close_code": "Duplicate", "close_notes": "n"}, timeout=5)
    assert answer.status_code == 200  # a field ACL: the field is not written, the request succeeds
    assert answer.json()["result"]["state"] == "1" and answer.json()["result"]["close_code"] == "Duplicate"


def test_close_code_outside_the_choice_list_is_dropped_and_the_data_policy_refuses(snow, http):
    record = create(http, snow, short_description="x")
    refused = resolve(http, snow, record["sys_id"], code="Solved (Permanently)")  # a legacy code
    assert refused.status_code == 403
    assert "The following fields are mandatory: Resolution code" in refused.json()["error"]["detail"]
    snow.set_choices("close_code", [("Solved (Permanently)", "Solved (Permanently)")])  # an instance with its own
    assert resolve(http, snow, record["sys_id"], code="Solved (Permanently)").status_code == 200


def test_strings_are_clipped_to_their_column(snow, http):
    record = create(http, snow, short_description="s" * 300, description="d" * 6000, correlation_id="c" * 150)
    assert len(record["short_description"]) == 160 and len(record["correlation_id"]) == 100
    assert len(record["description"]) == 6000  # mediumtext: not clipped


def test_journal_rows_hidden_by_acl_answer_200_and_still_count(snow, http):
    record = create(http, snow, short_description="x", work_notes="secret")
    snow.hide_journal_from(USER)
    hidden = http.get(table(snow, "sys_journal_field"), params={"sysparm_query": f"element_id={record['sys_id']}"},
                      timeout=5)
    assert hidden.status_code == 200 and hidden.json()["result"] == []
    assert hidden.headers["X-Total-Count"] == "1"  # counted before the row ACL


def test_limit_applies_before_row_acls(snow, http):
    """Of a page of 2, the hidden rows still take their places."""
    for n in range(3):
        create(http, snow, short_description=f"n{n}", work_notes=f"w{n}")
    snow.hide_journal_from(USER)
    page = http.get(table(snow, "sys_journal_field"), params={"sysparm_limit": "2"}, timeout=5)
    assert page.json()["result"] == [] and page.headers["X-Total-Count"] == "3" and 'rel="next"' in page.headers["Link"]


def test_sys_choice_queries_need_more_than_itil(snow, http):
    query = {"sysparm_query": "name=incident^element=close_code^inactive=false", "sysparm_fields": "value"}
    refused = http.get(table(snow, "sys_choice"), params=query, timeout=5)
    assert refused.status_code == 403
    assert refused.json()["error"] == {"message": "Insufficient rights to query records",
                                       "detail": "Field(s) present in the query do not have permission to be read"}
    snow.allow_choice_query(USER)
    codes = {r["value"] for r in http.get(table(snow, "sys_choice"), params=query, timeout=5).json()["result"]}
    assert codes == {"Duplicate", "Known error", "No resolution provided", "Resolved by caller", "Resolved by change",
                     "Resolved by problem", "Resolved by request", "Solution provided", "Workaround provided",
                     "User error"}


def test_javascript_in_a_query_value_runs_on_the_instance(snow, http):
    query(http, snow, "correlation_id=javascript:gs.sleep(1)^ORDERBYnumber")
    assert snow.scripts == ["javascript:gs.sleep(1)"]


def test_new_query_and_order_by_several_fields(snow, http):
    """The poll's cursor: later second, or the same second and a later sys_id (^NQ), ordered by both."""
    a, b, c = (snow.seed_incident(short_description=n, correlation_display="S") for n in "abc")
    snow.advance(1)
    d = snow.seed_incident(short_description="d", correlation_display="S")
    stamp = a["sys_updated_on"]
    same = sorted((a, b, c), key=lambda r: r["sys_id"])
    q = (f"correlation_display=S^sys_updated_on>{stamp}^NQcorrelation_display=S^sys_updated_on>={stamp}"
         f"^sys_updated_on<={stamp}^sys_id>={same[1]['sys_id']}^ORDERBYsys_updated_on^ORDERBYsys_id")
    assert numbers(query(http, snow, q)) == [same[1]["number"], same[2]["number"], d["number"]]


def test_numbers_compare_as_numbers(snow, http):
    for count in (2, 10):
        record = snow.seed_incident(short_description=str(count))
        for _ in range(count):
            snow.update_as(record["sys_id"], "system", work_notes="n")
    assert [r["sys_mod_count"] for r in query(http, snow, "sys_mod_count>3^ORDERBYsys_mod_count").json()["result"]] \
        == ["10"]


def test_date_header_follows_the_instance_clock(snow, http):
    from email.utils import parsedate_to_datetime

    snow.advance(3600)
    answer = http.get(table(snow), params={"sysparm_limit": "1"}, timeout=5)
    stamp = parsedate_to_datetime(answer.headers["Date"]).strftime("%Y-%m-%d %H:%M:%S")
    assert abs((parsedate_to_datetime(answer.headers["Date"]) - snow.clock()).total_seconds()) < 5
    assert stamp[:13] == snow.now()[:13]


def test_a_late_commit_is_invisible_until_it_commits(snow, http):
    record = snow.seed_incident(short_description="x", correlation_display="S")
    token = snow.begin_update(record["sys_id"], "megan.bowen", urgency="1", work_notes="slow transaction")
    stamped = snow.now()
    snow.advance(2)
    assert query(http, snow, "urgency=1").json()["result"] == []
    committed = snow.commit(token)
    assert committed["urgency"] == "1" and committed["sys_updated_on"] == stamped  # stamped before it committed
    assert numbers(query(http, snow, "urgency=1")) == [record["number"]]


def test_an_over_long_url_answers_414(snow, http):
    ids = ",".join(uuid.uuid4().hex for _ in range(250))
    assert http.get(table(snow, "sys_journal_field"), params={"sysparm_query": f"element_idIN{ids}"},
                    timeout=5).status_code == 414
    ids = ",".join(uuid.uuid4().hex for _ in range(200))
    assert http.get(table(snow, "sys_journal_field"), params={"sysparm_query": f"element_idIN{ids}"},
                    timeout=5).status_code == 200


def test_no_count_leaves_out_the_total(snow, http, five):
    assert "X-Total-Count" not in query(http, snow, "ORDERBYnumber", sysparm_no_count="true").headers
