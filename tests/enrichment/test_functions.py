"""VirusTotal enrichment end to end: local host -> emulators over real HTTP, state in Azurite."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import wait_for
from tests.fixtures import INCIDENT_4711, incident_with, sample

ROUTE = "enrichment/ip-reputation"
pytestmark = pytest.mark.e2e


def fresh_incident(stack, ips, number=None):
    """A new incident (own id) seeded in the ARM emulator, and its trigger body."""
    number = number or uuid.uuid4().int % 100000
    body = incident_with(number, ips, name=str(uuid.uuid4()))
    stack.arm.seed_from_trigger(body)
    return body, body["object"]["id"]


def fresh_ips(n: int) -> list[str]:
    """Public (documentation-range) addresses no earlier test has cached."""
    base = uuid.uuid4().int
    return [f"2001:db8:{(base >> 16) % 0xFFFF:x}:{base % 0xFFFF:x}::{i + 1:x}" for i in range(n)]


def test_sample_incident_gets_one_comment_with_every_verdict(clean_stack, host):
    stack = clean_stack
    stack.vt.set_report("203.0.113.45", malicious=12, harmless=55, as_owner="Bad Hosting Ltd")
    stack.vt.set_report("198.51.100.23", harmless=70)
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)

    response = host.post(ROUTE, body)
    assert response.status_code == 200, response.text
    summary = response.json()
    verdicts = {item["ip"]: item for item in summary["ips"]}
    assert verdicts.keys() == {"203.0.113.45", "198.51.100.23"}
    assert summary["skipped"] == [{"kind": "ip", "value": "10.0.0.5", "ip": "10.0.0.5",
                                   "reason": "private address (RFC 1918)"}]
    assert summary["complete"] is True and summary["worstVerdict"] == "malicious"
    assert len(summary["comments"]) == 1
    assert summary["label"] == "VirusTotal: malicious"

    comments = stack.arm.comments(INCIDENT_4711)
    assert len(comments) == 1
    message = comments[0]["properties"]["message"]
    assert "incident 4711" in message and "Bad Hosting Ltd" in message and "10.0.0.5" in message
    labels = [label["labelName"] for label in stack.arm.incident(INCIDENT_4711)["properties"]["labels"]]
    assert labels == ["VirusTotal: malicious"]

    # The Logic App retries the same call: no second comment, no second label, no VirusTotal call.
    lookups = len(stack.vt.lookups())
    again = host.post(ROUTE, body).json()
    assert again["comments"] == summary["comments"] and again["virustotalCalls"] == 0
    assert all(item["cached"] for item in again["ips"])
    assert len(stack.arm.comments(INCIDENT_4711)) == 1
    assert len(stack.arm.incident(INCIDENT_4711)["properties"]["labels"]) == 1
    assert len(stack.vt.lookups()) == lookups


def test_cache_is_shared_across_incidents(clean_stack, host):
    ips = fresh_ips(2)
    first, _ = fresh_incident(clean_stack, ips)
    second, second_id = fresh_incident(clean_stack, [ips[1], "192.168.1.10"])
    assert host.post(ROUTE, first).json()["virustotalCalls"] == 2
    summary = host.post(ROUTE, second).json()
    assert summary["virustotalCalls"] == 0 and summary["ips"][0]["cached"] is True
    assert clean_stack.vt.lookups().count(ips[1]) == 1
    assert len(clean_stack.arm.comments(second_id)) == 1


def test_alert_trigger_enriches_without_a_comment(clean_stack, host):
    summary = host.post(ROUTE, sample("alert-trigger-entities-string.json")).json()
    assert {item["ip"] for item in summary["ips"]} == {"203.0.113.45", "198.51.100.23"}
    assert summary["comments"] == [] and "no incident id" in summary["commentSkipped"]
    assert clean_stack.arm.requests_to("PUT") == []


def test_entity_trigger_comments_on_its_incident(clean_stack, host):
    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    summary = host.post(ROUTE, sample("entity-trigger-ip.json")).json()
    assert [item["ip"] for item in summary["ips"]] == ["198.51.100.23"]
    assert len(clean_stack.arm.comments(INCIDENT_4711)) == 1


def test_manual_run_reads_entities_through_arm(clean_stack, host):
    ips = fresh_ips(1)
    _, incident_id = fresh_incident(clean_stack, ips)
    summary = host.post(ROUTE, {"incidentArmId": incident_id}).json()
    assert [item["ip"] for item in summary["ips"]] == ips
    assert len(clean_stack.arm.requests_to("POST", r"/entities$")) == 1


def test_etag_conflict_on_label_is_retried(clean_stack, host):
    ip = fresh_ips(1)[0]
    clean_stack.vt.set_report(ip, malicious=9)
    body, incident_id = fresh_incident(clean_stack, [ip])
    clean_stack.arm.fail(409, method="PUT", path=r"/incidents/[^/]+$",
                         body={"error": {"code": "Conflict", "message": "etag mismatch"}})
    response = host.post(ROUTE, body)
    assert response.status_code == 200, response.text
    assert len(clean_stack.arm.requests_to("PUT", r"/incidents/[^/]+$")) == 2
    labels = clean_stack.arm.incident(incident_id)["properties"]["labels"]
    assert [label["labelName"] for label in labels] == ["VirusTotal: malicious"]


def test_real_concurrent_edit_keeps_both_changes(clean_stack, host):
    ip = fresh_ips(1)[0]
    clean_stack.vt.set_report(ip, malicious=9)
    body, incident_id = fresh_incident(clean_stack, [ip])
    clean_stack.arm.touch(incident_id, severity="Medium")  # an analyst edits after the trigger fired
    assert host.post(ROUTE, body).status_code == 200
    props = clean_stack.arm.incident(incident_id)["properties"]
    assert props["severity"] == "Medium" and props["labels"][0]["labelName"] == "VirusTotal: malicious"


def test_quota_exhaustion_defers_and_a_new_comment_completes(clean_stack, host):
    """The Defender portal shows no comment edits: the deferred verdicts arrive as a comment of their own."""
    ips = fresh_ips(3)
    body, incident_id = fresh_incident(clean_stack, ips)
    quota = {"error": {"code": "QuotaExceededError", "message": "Quota exceeded"}}
    # The 429 answers once all three look-ups are in flight (an event, not the clock): they are asked side by side.
    held = clean_stack.vt.fail(429, path=ips[1].replace(":", r"\:"), body=quota,
                               until=lambda: len(clean_stack.vt.lookups()) >= len(ips))
    summary = host.post(ROUTE, body).json()
    assert held.released == [True]
    assert summary["complete"] is False
    assert summary["deferred"] == [ips[1]]  # the others were already asked for, side by side
    [first] = clean_stack.arm.comments(incident_id)
    assert "pending" in first["properties"]["message"]

    final = wait_for(lambda: len(clean_stack.arm.comments(incident_id)) == 2 and clean_stack.arm.comments(incident_id),
                     timeout=30)
    [kept] = [c for c in final if c["name"] == first["name"]]
    assert kept["properties"] == first["properties"]  # the first comment was never edited
    [second] = [c for c in final if c["name"] != first["name"]]
    message = second["properties"]["message"]
    assert "deferred look-ups completed" in message and ips[1] in message and "pending" not in message
    assert sorted(set(clean_stack.vt.lookups())) == sorted(ips)  # nothing lost, each looked up
    # The same trigger again: every verdict is cached now, so a third comment (new information) is all it adds.
    again = host.post(ROUTE, body).json()
    assert again["complete"] is True and again["virustotalCalls"] == 0


def test_after_the_first_quota_answer_no_look_up_starts(stack):
    from tests.conftest import HostClient

    process = stack.host(VIRUSTOTAL_POOL_SIZE="2")
    try:
        stack.reset()
        ips = fresh_ips(6)
        body, incident_id = fresh_incident(stack, ips)
        quota = {"error": {"code": "QuotaExceededError", "message": "Quota exceeded"}}
        stack.vt.fail(429, path=ips[0].replace(":", r"\:") + "$", body=quota)
        stack.vt.fail(path=ips[1].replace(":", r"\:") + "$", delay=0.5)  # still in flight when the 429 comes
        summary = HostClient(process).post(ROUTE, body).json()
        assert sorted(stack.vt.lookups()) == sorted(ips[:2])  # both in flight at once: in either order
        assert summary["deferred"] == [ips[0], *ips[2:]]
        # This host finishes its deferred work before it stops: no other test's host may pick it up later.
        wait_for(lambda: len(stack.arm.comments(incident_id)) == 2, timeout=30)
    finally:
        process.stop()


def test_concurrent_triggers_write_one_comment_and_one_lookup_per_ip(clean_stack, host):
    ips = fresh_ips(3)
    body, incident_id = fresh_incident(clean_stack, [*ips, "10.1.1.1"])
    with ThreadPoolExecutor(8) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: host.post(ROUTE, body), range(8))]
    assert statuses == [200] * 8
    assert len(clean_stack.arm.comments(incident_id)) == 1
    assert sorted(clean_stack.vt.lookups()) == sorted(ips)


def test_bad_api_key_is_a_clear_configuration_error(stack):
    process = stack.host(VIRUSTOTAL_API_KEY="wrong-secret-value-123")
    try:
        from tests.conftest import HostClient

        client = HostClient(process)
        body, incident_id = fresh_incident(stack, fresh_ips(1))
        response = client.post(ROUTE, body)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "VirusTotalKeyRejected" and "VIRUSTOTAL_API_KEY" in error["message"]
        assert "wrong-secret-value-123" not in response.text
        assert stack.arm.comments(incident_id) == []
    finally:
        process.stop()


def test_missing_api_key_is_named(stack):
    process = stack.host(VIRUSTOTAL_API_KEY="")
    try:
        from tests.conftest import HostClient

        response = HostClient(process).post(ROUTE, sample("alert-trigger.json"))
        assert response.status_code == 500
        assert "VIRUSTOTAL_API_KEY" in response.json()["error"]["message"]
    finally:
        process.stop()


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", "MalformedJson"),
    (b"", "BadRequest"),
    (b"[1, 2]", "BadRequest"),
    (b'{"hello": "world"}', "BadRequest"),
])
def test_malformed_payloads_get_400(host, raw, code):
    response = host.post(ROUTE, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_function_key_is_required(host):
    assert host.post(ROUTE, sample("alert-trigger.json"), key=None).status_code == 401
    assert host.post(ROUTE, sample("alert-trigger.json"), key="wrong").status_code == 401


def test_sentinel_outage_answers_retryable_and_retry_completes(clean_stack, host):
    body, incident_id = fresh_incident(clean_stack, fresh_ips(1))
    clean_stack.arm.fail(503, times=20, path=r"/comments/")
    response = host.post(ROUTE, body)
    assert response.status_code == 502 and int(response.headers["Retry-After"]) > 0
    clean_stack.arm.clear_faults()
    assert host.post(ROUTE, body).status_code == 200
    assert len(clean_stack.arm.comments(incident_id)) == 1


def test_unknown_incident_is_404(clean_stack, host):
    body = incident_with(99999, fresh_ips(1), name=str(uuid.uuid4()))  # not seeded in ARM
    response = host.post(ROUTE, body)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "NotFound"


def test_api_key_never_leaves_the_function(clean_stack, host):
    """The VirusTotal key goes to VirusTotal only: not to Sentinel, not into answers."""
    from localdev.stack import VT_KEY

    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    response = host.post(ROUTE, sample("incident-trigger.json"))
    assert response.status_code == 200 and VT_KEY not in response.text
    for request in clean_stack.arm.received:
        assert VT_KEY not in request.text and VT_KEY not in str(dict(request.headers))


class FakeClock:
    """VirusTotal's clock in the emulator: the test moves it a minute at a time."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_public_api_quota_of_four_a_minute_defers_and_completes(clean_stack, host):
    """Issue 15.8: a public (free) key allows 4 look-ups a minute. Ten new addresses: four verdicts at once, the
    rest pending; each following minute the queued run gets four more; the last round writes the comment that
    completes them. The emulator's clock is injected, so the test takes seconds, not minutes."""
    clock = FakeClock(1_795_000_000.0)
    clean_stack.vt.clock = clock
    clean_stack.vt.public_api()
    try:
        ips = fresh_ips(10)
        body, incident_id = fresh_incident(clean_stack, ips)
        summary = host.post(ROUTE, body).json()
        assert len(summary["ips"]) == 4 and len(summary["deferred"]) == 6 and summary["complete"] is False
        [first] = clean_stack.arm.comments(incident_id)
        assert first["properties"]["message"].count("pending: VirusTotal quota reached") == 6

        def answered() -> int:
            return len({r.path for r in clean_stack.vt.requests_to("GET", "/ip_addresses/")
                        if r.status == 200 and r.path.rsplit("/", 1)[-1] in ips})

        clock.advance(61)
        wait_for(lambda: answered() == 8, timeout=30)
        assert len(clean_stack.arm.comments(incident_id)) == 1  # no comment for an unfinished round
        clock.advance(61)
        comments = wait_for(lambda: len(clean_stack.arm.comments(incident_id)) == 2
                            and clean_stack.arm.comments(incident_id), timeout=30)
        completion = next(c for c in comments if c["name"] != first["name"])["properties"]["message"]
        assert "deferred look-ups completed" in completion and "pending" not in completion
        assert all(ip in completion for ip in summary["deferred"])
        assert answered() == 10 and clean_stack.vt.faults_served == 0
        assert any(r.status == 429 for r in clean_stack.vt.received)
    finally:
        clean_stack.vt.per_minute = clean_stack.vt.per_day = None
        import time

        clean_stack.vt.clock = time.time


def test_a_long_lived_incident_gets_new_comments_until_the_budget_and_never_an_edit(stack):
    """An incident updated again and again, each update bringing changed verdicts (cache TTL 0): every run with
    new information adds a comment, none edits one, and the pack stops with a summary before Sentinel's 100."""
    from tests.conftest import HostClient

    process = stack.host(VIRUSTOTAL_CACHE_TTL_SECONDS="0")
    try:
        client = HostClient(process)
        stack.reset()
        [ip] = fresh_ips(1)
        _, incident_id = fresh_incident(stack, [ip])
        messages: dict[str, str] = {}
        for run in range(95):
            stack.vt.set_report(ip, malicious=run % 7, harmless=60 + run)  # VirusTotal's view keeps changing
            answer = client.post(ROUTE, stack.arm.trigger_body(incident_id)).json()
            for comment in stack.arm.comments(incident_id):
                before = messages.setdefault(comment["name"], comment["properties"]["message"])
                assert before == comment["properties"]["message"], "a comment was edited"
        comments = stack.arm.comments(incident_id)
        assert len(comments) == 90  # 89 runs' comments and the summary; the last 10 slots are the analysts'
        assert "comment budget reached" in comments[-1]["properties"]["message"]
        assert "leaves the last 10 to analysts" in answer["commentSkipped"] and answer["comments"] == []
    finally:
        process.stop()


# -- trigger shapes seen in the wild (issue 15.10) -------------------------------------------------------
def test_an_ipv4_mapped_address_is_one_look_up_of_its_ipv4(clean_stack, host):
    [ip] = [f"203.0.113.{uuid.uuid4().int % 200 + 20}"]
    body, _ = fresh_incident(clean_stack, [f"::ffff:{ip}", ip])
    summary = host.post(ROUTE, body).json()
    assert [item["ip"] for item in summary["ips"]] == [ip]
    assert clean_stack.vt.lookups().count(ip) <= 1 and not any(":" in x for x in clean_stack.vt.lookups())


def test_an_ip_entity_without_an_address_is_a_skipped_row(clean_stack, host):
    body, incident_id = fresh_incident(clean_stack, fresh_ips(1))
    body["object"]["properties"]["relatedEntities"].append(
        {"kind": "Ip", "properties": {"address": "", "friendlyName": "empty"}})
    summary = host.post(ROUTE, body).json()
    assert {"kind": "ip", "value": "", "ip": "", "reason": "IP entity without an address"} in summary["skipped"]
    [comment] = clean_stack.arm.comments(incident_id)
    assert "(no value)" in comment["properties"]["message"]
    assert "IP entity without an address" in comment["properties"]["message"]


def test_an_entity_body_without_kind_is_enriched(clean_stack, host):
    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    body = sample("entity-trigger-ip.json")
    body["Entity"].pop("kind")
    body["EntityType"] = "IP"
    summary = host.post(ROUTE, body).json()
    assert [item["ip"] for item in summary["ips"]] == ["198.51.100.23"]


def test_a_run_with_nothing_to_look_up_says_so_and_calls_the_alert_an_alert(clean_stack, host):
    alert = sample("alert-trigger.json")
    alert["Entities"] = [e for e in alert["Entities"] if e["Type"] != "ip"]
    summary = host.post(ROUTE, alert).json()
    assert summary["note"] == "nothing to look up: the alert has no IP, file, URL or domain entities"
    assert summary["commentSkipped"] == "no incident id in the alert body: nothing to comment on"
    assert clean_stack.vt.received == [] and clean_stack.arm.received == []


def test_verdicts_are_read_in_batches_and_then_from_memory(clean_stack, host):
    """50 cached addresses: one table query per 15 the first time, none once this process holds them."""
    ips = fresh_ips(50)
    first, _ = fresh_incident(clean_stack, ips)
    assert host.post(ROUTE, first).json()["virustotalCalls"] == 50
    second, _ = fresh_incident(clean_stack, ips)
    summary = host.post(ROUTE, second).json()
    assert summary["virustotalCalls"] == 0 and all(item["cached"] for item in summary["ips"])
