"""The pysnow-based ServiceNow client against the Table API emulator, over real HTTP."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, ConfigurationError, DownstreamError, Forbidden, NotFound, Throttled
from core.http import build_session
from localdev.emulators.servicenow import ServiceNowEmulator
from sync.servicenow import Position, ServiceNowClient, ref_value

USER, PASSWORD = "svc_sentinel_sync", "pw-do-not-leak-42"


@pytest.fixture(scope="module")
def server():
    with ServiceNowEmulator(users={USER: PASSWORD}) as snow:
        yield snow


@pytest.fixture
def snow(server):
    server.reset()
    return server


def make_client(snow, password=PASSWORD, timeout=2.0):
    reads = build_session(timeout=timeout, retries=2, backoff=0.01, max_retry_after=1)
    writes = build_session(timeout=timeout, retries=0)
    return ServiceNowClient(snow.url, USER, password, read_session=reads, write_session=writes, timeout=timeout)


@pytest.fixture
def client(snow):
    return make_client(snow)


C1, C2 = "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e", "6d2f0e3b-8c4a-4f9b-8e7d-3a2b1c4d5e6f"


def test_create_read_update(snow, client):
    created = client.create_ticket({"short_description": "hello", "correlation_id": C1,
                                    "correlation_display": "Microsoft Sentinel", "impact": "1", "urgency": "2"})
    assert created["number"] == "INC0010001" and created["priority"] == "2"
    assert set(created) == {"sys_id", "number", "state", "priority", "impact", "urgency", "assigned_to", "close_code",
                            "close_notes", "correlation_id", "correlation_display", "short_description",
                            "sys_created_on", "sys_updated_on", "sys_mod_count", "parent_incident"}
    assert client.get_ticket(created["sys_id"])["short_description"] == "hello"
    updated = client.update_ticket(created["sys_id"], {"work_notes": "note", "urgency": "1"})
    assert updated["priority"] == "1" and updated["sys_mod_count"] == "1"
    assert [r.method for r in snow.received] == ["POST", "GET", "PATCH"]  # an update is one PATCH
    assert client.find_by_correlation(C1, "Microsoft Sentinel")["sys_id"] == created["sys_id"]
    assert client.find_by_correlation(C2, "Microsoft Sentinel") is None
    assert client.find_by_correlation(C1, "Microsoft Sentinel", exclude=[created["sys_id"]]) is None


def test_changed_after_pages_by_position_in_a_stable_order(snow, client):
    seeded = [snow.seed_incident(correlation_display="Microsoft Sentinel") for _ in range(5)]
    snow.seed_incident(correlation_display="Someone else")
    start = Position(seeded[0]["sys_updated_on"])
    first = client.changed_after(start, "Microsoft Sentinel", limit=3)
    last = first.rows[-1]
    rest = client.changed_after(Position(last["sys_updated_on"], last["sys_id"]), "Microsoft Sentinel", limit=3)
    assert sorted(t["sys_id"] for t in first.rows + rest.rows) == sorted(t["sys_id"] for t in seeded)
    assert len(first.rows) == 3 and first.total == 5 and first.instance_time
    assert len(rest.rows) == 2 and rest.total == 2
    query = snow.requests_to("GET", r"/table/incident$")[-1].query["sysparm_query"]
    assert "^NQ" in query and query.endswith("^ORDERBYsys_updated_on^ORDERBYsys_id")


def test_journal_of_several_tickets_in_one_query(snow, client):
    a = snow.seed_incident(work_notes="a1")
    b = snow.seed_incident(comments="b1")
    snow.seed_incident(work_notes="not asked for")
    entries, hidden = client.journal([a["sys_id"], b["sys_id"]], "2000-01-01 00:00:00", limit=1)
    assert sorted(e["value"] for e in entries) == ["a1", "b1"] and hidden == 0
    journal_requests = snow.requests_to("GET", "sys_journal_field")
    assert len(journal_requests) == 2  # limit 1: two pages, the count says there are no more
    assert "element_idIN" in journal_requests[0].query["sysparm_query"]


def test_journal_rows_hidden_by_acl_are_counted(snow, client):
    a = snow.seed_incident(work_notes="a1", comments="a2")
    snow.hide_journal_from(USER)
    entries, hidden = client.journal([a["sys_id"]], "2000-01-01 00:00:00")
    assert entries == [] and hidden == 2
    page = client.journal_visibility()
    assert page.rows == [] and page.total == 2


def test_journal_of_many_tickets_is_chunked_under_the_url_limit(snow, client):
    tickets = [snow.seed_incident(work_notes=f"n{i}")["sys_id"] for i in range(250)]
    entries, _ = client.journal(tickets, "2000-01-01 00:00:00")
    assert len(entries) == 250
    assert len(snow.requests_to("GET", "sys_journal_field")) == 3  # 100 + 100 + 50 sys_ids


def test_choices_need_read_access(snow, client):
    with pytest.raises(Forbidden):
        client.choices(["close_code", "state"])
    snow.allow_choice_query(USER)
    found = client.choices(["close_code", "state"])
    assert "Solution provided" in found["close_code"] and found["state"] == {"1", "2", "3", "6", "7", "8"}


def test_rejected_credentials_are_a_configuration_error_without_the_password(snow):
    client = make_client(snow, password="wrong-password-123")
    with pytest.raises(ConfigurationError) as raised:
        client.get_ticket("0" * 32)
    assert raised.value.code == "ServiceNowCredentialsRejected"
    assert "SERVICENOW_PASSWORD" in raised.value.message
    assert "wrong-password-123" not in raised.value.message and "wrong-password-123" not in repr(client)


def test_throttling_beyond_our_wait_goes_back_with_retry_after(snow, client):
    snow.fail(429, retry_after=120, times=5)
    with pytest.raises(Throttled) as raised:
        client.changed_after(Position("2000-01-01 00:00:00"), "Microsoft Sentinel", limit=10)
    assert raised.value.retry_after == 120 and raised.value.status == 429


def test_reads_are_retried_writes_are_not(snow, client):
    record = snow.seed_incident(short_description="x")
    snow.fail(503, times=1, method="GET")
    assert client.get_ticket(record["sys_id"])["sys_id"] == record["sys_id"]
    snow.fail(503, times=1, method="PATCH")
    with pytest.raises(DownstreamError) as raised:
        client.update_ticket(record["sys_id"], {"work_notes": "once"})
    assert raised.value.status == 502 and raised.value.retry_after
    assert len(snow.requests_to("PATCH")) == 1  # not re-sent: a retried work note would be written twice
    assert snow.journal(record["sys_id"]) == []


def test_data_policy_refusal_and_missing_record(snow, client):
    record = snow.seed_incident(short_description="x")
    with pytest.raises(Forbidden, match="Resolution notes"):
        client.update_ticket(record["sys_id"], {"state": "6", "close_code": "Solution provided"})
    with pytest.raises(NotFound) as missing:
        client.get_ticket("f" * 32)
    assert missing.value.code == "ServiceNowNotFound"
    snow.fail(400, times=1, body={"error": {"message": "Invalid query", "detail": None}, "status": "failure"})
    with pytest.raises(BadRequest, match="Invalid query"):
        client.journal([record["sys_id"]], "2000-01-01 00:00:00")


def test_timeouts_and_garbage(snow):
    client = make_client(snow, timeout=0.3)
    snow.fail(delay=0.6, times=3)
    with pytest.raises(DownstreamError) as raised:
        client.get_ticket("0" * 32)
    assert raised.value.code in ("ServiceNowTimeout", "ServiceNowUnreachable")
    snow.clear_faults()
    snow.fail(malformed=True)
    with pytest.raises(DownstreamError) as odd:
        client.get_ticket("0" * 32)
    assert odd.value.code == "ServiceNowBadAnswer"


def test_helpers():
    assert ref_value({"link": "https://x/api/now/table/sys_user/abc", "value": "abc"}) == "abc"
    assert ref_value("") == "" and ref_value(None) == ""


def test_no_free_text_reaches_a_query(snow, client):
    for bad in ("javascript:gs.sleep(1)", "x^NQcorrelation_display=Microsoft Sentinel", "not-a-guid", ""):
        with pytest.raises(BadRequest) as refused:
            client.find_by_correlation(bad, "Microsoft Sentinel")
        assert refused.value.code == "UnsafeQueryValue"
    with pytest.raises(ConfigurationError):
        client.find_by_correlation(C1, "Sentinel^NQsys_id!=x")
    with pytest.raises(BadRequest):
        client.get_ticket("javascript:gs.sleep(1)")
    with pytest.raises(BadRequest):
        client.changed_after(Position("2026-11-20 10:00:00 javascript:x"), "Microsoft Sentinel", limit=1)
    assert snow.received == [] and snow.scripts == []


def test_what_the_client_writes_is_clipped_to_the_columns(snow, client):
    created = client.create_ticket({"short_description": "t" * 400, "correlation_id": C1})
    assert len(created["short_description"]) == 160 and created["short_description"].endswith("…")
