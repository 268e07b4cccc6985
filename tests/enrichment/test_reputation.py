"""Reputation of every indicator kind end to end (issue #18, items 1-4): local host -> emulators over real HTTP.

One comment with a section per kind, one VirusTotal call per unique indicator (across kinds and incidents),
nothing internal or secret sent, bad values as skipped rows, quota deferral for any kind, severity that
follows the verdict, analyst tasks that an analyst's completion closes for good, and the incident storm.
"""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.tasks import task_id
from localdev.stack import VT_KEY
from tests.conftest import HostClient, wait_for
from tests.enrichment.storm import mixed_incident, mixed_storm

pytestmark = pytest.mark.e2e
ROUTE = "enrichment/reputation"


def fresh(stack, ips=(), files=(), links=(), names=(), **props) -> tuple[dict, str]:
    body = mixed_incident(uuid.uuid4().int % 100000, list(ips), list(files), list(links), list(names),
                          name=str(uuid.uuid4()))
    body["object"]["properties"].update(props)
    return body, stack.arm.seed_from_trigger(body)


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def sent_urls(stack) -> list[str]:
    ids = stack.vt.lookups("url")
    return [base64.urlsafe_b64decode(i + "=" * (-len(i) % 4)).decode() for i in ids]


@pytest.fixture(scope="module")
def configured(stack):
    """A host with the optional features on: severity follows the verdict, and a lab domain is internal."""
    process = stack.host(VIRUSTOTAL_RAISE_SEVERITY="High", INTERNAL_DOMAINS="lab.example")
    try:
        yield HostClient(process)
    finally:
        process.stop()


def test_one_comment_with_a_section_per_kind_and_one_call_per_indicator(clean_stack, host):
    stack = clean_stack
    ip, sha, name = "203.0.113.61", uuid.uuid4().hex * 2, unique("c2-") + ".example"
    url = f"https://user:pw@{unique('phish-')}.example/login?token=SECRET#frag"
    stack.vt.set_report(sha, malicious=30)
    body, incident_id = fresh(stack, [ip, "10.0.0.5"], [sha, "xyz"], [url, "not a url"], [name, "mail.contoso.com"])
    summary = host.post(ROUTE, body).json()
    assert sorted(i["kind"] for i in summary["indicators"]) == ["domain", "file", "ip", "url"]
    assert summary["virustotalCalls"] == 4 and summary["worstVerdict"] == "malicious"
    [comment] = stack.arm.comments(incident_id)
    text = comment["properties"]["message"]
    assert text.index("<b>Files</b>") < text.index("<b>IP addresses</b>")  # the malicious section first
    for section in ("IP addresses", "URLs", "Domains"):
        assert f"<b>{section}</b>" in text
    assert "SECRET" not in text and "user:pw" not in text
    skipped = {s["value"]: s["reason"] for s in summary["skipped"]}
    assert "private" in skipped["10.0.0.5"] and "not an MD5" in skipped["xyz"]
    assert "not a URL" in skipped["not a url"] and "tenant's own domain" in skipped["mail.contoso.com"]
    # Nothing internal or secret reached VirusTotal, and nothing was submitted for scanning.
    assert sent_urls(stack) == [url.split("//", 1)[0] + "//" + url.split("@", 1)[1].split("?", 1)[0]]
    assert all(r.method == "GET" for r in stack.vt.received)
    assert not any("contoso" in r.path or "SECRET" in r.path or "10.0.0.5" in r.path for r in stack.vt.received)
    # Another incident with the same indicators: all four from the cache.
    again, _ = fresh(stack, [ip], [sha], [url], [name])
    assert host.post(ROUTE, again).json()["virustotalCalls"] == 0


def test_the_former_route_is_the_same_action(clean_stack, host):
    body, _ = fresh(clean_stack, ["203.0.113.62"], links=[f"https://{unique()}.example/"])

    def without_cached(answer) -> list[dict]:
        return [{k: v for k, v in item.items() if k != "cached"} for item in answer.json()["indicators"]]

    assert without_cached(host.post("enrichment/ip-reputation", body)) == without_cached(host.post(ROUTE, body))


def test_a_url_virustotal_never_saw_is_unknown(clean_stack, host):
    url = f"https://{unique('new-')}.example/"
    clean_stack.vt.set_unknown(url)
    body, _ = fresh(clean_stack, links=[url])
    [item] = host.post(ROUTE, body).json()["indicators"]
    assert (item["kind"], item["verdict"], item["link"]) == ("url", "unknown", None)
    assert clean_stack.vt.requests_to("POST") == []


def test_quota_deferral_covers_every_kind(clean_stack, host):
    name, sha = unique("late-") + ".example", uuid.uuid4().hex * 2
    body, incident_id = fresh(clean_stack, ["203.0.113.63"], [sha], names=[name])
    quota = {"error": {"code": "QuotaExceededError", "message": "Quota exceeded"}}
    clean_stack.vt.fail(429, path=rf"/domains/{name}$", body=quota)
    summary = host.post(ROUTE, body).json()
    assert summary["deferred"] == [name] and summary["complete"] is False
    comments = wait_for(lambda: len(clean_stack.arm.comments(incident_id)) == 2 and clean_stack.arm.comments(
        incident_id), timeout=30)
    assert any("deferred look-ups completed" in c["properties"]["message"] and name in c["properties"]["message"]
               for c in comments)


def test_without_domain_read_all_no_name_leaves_the_tenant(clean_stack, stack):
    process = stack.host()  # a fresh process: the verified domains are read once per process
    try:
        clean_stack.graph.directory.readable = False
        name = unique("c2-") + ".example"
        body, _ = fresh(clean_stack, ["203.0.113.64"], links=[f"https://{name}/x"], names=[name])
        summary = HostClient(process).post(ROUTE, body).json()
        assert [i["kind"] for i in summary["indicators"]] == ["ip"]
        assert all("Domain.Read.All" in s["reason"] for s in summary["skipped"]) and len(summary["skipped"]) == 2
        assert clean_stack.vt.lookups("url") == [] and clean_stack.vt.lookups("domain") == []
    finally:
        process.stop()


def test_the_tenants_domains_are_read_once_per_process(clean_stack, stack):
    process = stack.host()
    try:
        client = HostClient(process)
        for _ in range(3):
            body, _ = fresh(clean_stack, names=[unique("c2-") + ".example", "corp.contoso.com"])
            assert "tenant's own domain" in client.post(ROUTE, body).json()["skipped"][0]["reason"]
        assert len(clean_stack.graph.requests_to("GET", "/v1.0/domains")) == 1
    finally:
        process.stop()


# -- severity that follows the verdict (issue 18.2) -------------------------------------------------------
def test_a_malicious_indicator_raises_the_severity_once_with_an_audit_line(clean_stack, configured):
    sha = uuid.uuid4().hex * 2
    clean_stack.vt.set_report(sha, malicious=30)
    body, incident_id = fresh(clean_stack, files=[sha], severity="Low")
    summary = configured.post(ROUTE, body).json()
    props = clean_stack.arm.incident(incident_id)["properties"]
    assert props["severity"] == "High" and [x["labelName"] for x in props["labels"]] == ["VirusTotal: malicious"]
    assert summary["notes"] == ["Severity raised from Low to High: 1 malicious indicator (VIRUSTOTAL_RAISE_SEVERITY)."]
    [comment] = clean_stack.arm.comments(incident_id)
    assert "Severity raised from Low to High" in comment["properties"]["message"]
    assert len(clean_stack.arm.requests_to("PUT", r"/incidents/[^/]+$")) == 1  # label and severity: one update
    # The Logic App retries the same trigger: the same comment, nothing else changes.
    assert configured.post(ROUTE, body).json()["comments"] == summary["comments"]
    assert len(clean_stack.arm.comments(incident_id)) == 1


def test_severity_is_never_lowered_and_an_analysts_edit_is_kept(clean_stack, configured):
    sha = uuid.uuid4().hex * 2
    clean_stack.vt.set_report(sha, malicious=30)
    body, incident_id = fresh(clean_stack, files=[sha], severity="Medium")
    clean_stack.arm.touch(incident_id, owner={"assignedTo": "Megan Bowen"})  # after the trigger fired: etag moves
    configured.post(ROUTE, body)
    props = clean_stack.arm.incident(incident_id)["properties"]
    assert props["severity"] == "High" and props["owner"]["assignedTo"] == "Megan Bowen"
    high, high_id = fresh(clean_stack, files=[sha], severity="High")
    assert configured.post(ROUTE, high).json()["notes"] == []
    assert clean_stack.arm.incident(high_id)["properties"]["severity"] == "High"


def test_severity_stays_without_the_setting(clean_stack, host):
    sha = uuid.uuid4().hex * 2
    clean_stack.vt.set_report(sha, malicious=30)
    body, incident_id = fresh(clean_stack, files=[sha], severity="Low")
    host.post(ROUTE, body)
    assert clean_stack.arm.incident(incident_id)["properties"]["severity"] == "Low"


# -- analyst tasks (issue 18.3) ----------------------------------------------------------------------------
def test_a_review_task_with_a_deterministic_id_that_is_never_reopened(clean_stack, host):
    shas = [uuid.uuid4().hex * 2 for _ in range(3)]
    for sha in shas:
        clean_stack.vt.set_report(sha, malicious=30)
    body, incident_id = fresh(clean_stack, files=shas[:1])
    [task] = host.post(ROUTE, body).json()["tasks"]
    assert task["title"] == "Review the 1 malicious indicators" and task["result"] == "created"
    # Created through the task memo (core/tasks.py): claimed in Table Storage, written without a read first, under
    # an id of the memo's own, never the plain id an earlier version wrote.
    assert [t["name"] for t in clean_stack.arm.tasks(incident_id)] == [task["taskId"]]
    assert task["taskId"] != task_id(incident_id, "enrichment.malicious", 0)
    assert clean_stack.arm.requests_to("GET", r"/tasks/") == []
    assert host.post(ROUTE, body).json()["tasks"][0] == {**task, "result": "unchanged"}
    def updated(files: list[str]) -> dict:
        """The incident trigger after an update: the incident now relates ``files``."""
        body = clean_stack.arm.trigger_body(incident_id)
        body["object"]["properties"]["relatedEntities"] = mixed_incident(1, [], files, [], [])["object"][
            "properties"]["relatedEntities"]
        return body

    assert host.post(ROUTE, updated(shas[:2])).json()["tasks"][0]["result"] == "updated"
    clean_stack.arm.analyst_task_change(incident_id, task["taskId"], status="Completed")
    task_writes = len(clean_stack.arm.requests_to("PUT", r"/tasks/"))
    assert host.post(ROUTE, updated(shas[:2])).json()["tasks"][0]["result"] == "unchanged"  # nothing new to say
    assert host.post(ROUTE, updated(shas)).json()["tasks"][0]["result"] == "kept-completed"  # new text: not reopened
    assert len(clean_stack.arm.requests_to("PUT", r"/tasks/")) == task_writes
    [stored] = clean_stack.arm.tasks(incident_id)
    assert stored["properties"]["status"] == "Completed" and "2 malicious" in stored["properties"]["title"]


def test_tasks_can_be_turned_off(stack):
    process = stack.host(INCIDENT_TASKS="off")
    try:
        stack.reset()
        sha = uuid.uuid4().hex * 2
        stack.vt.set_report(sha, malicious=30)
        body, incident_id = fresh(stack, files=[sha])
        assert HostClient(process).post(ROUTE, body).json()["tasks"] == []
        assert stack.arm.tasks(incident_id) == []
    finally:
        process.stop()


# -- the storm (issue 18.4) --------------------------------------------------------------------------------
def test_a_mixed_storm_costs_one_virustotal_call_per_unique_indicator(clean_stack, stack):
    process = stack.host()
    try:
        client = HostClient(process)
        storm = mixed_storm(16, 6, seed=uuid.uuid4().int)
        for body in storm.bodies:
            stack.arm.seed_from_trigger(body)
        with ThreadPoolExecutor(8) as pool:
            statuses = [r.status_code for r in pool.map(lambda b: client.post(ROUTE, b), storm.bodies)]
        assert statuses == [200] * len(storm.bodies)
        assert len(stack.vt.lookups()) == storm.unique_lookups
        assert all(len(stack.arm.comments(b["object"]["id"])) == 1 for b in storm.bodies)
        assert VT_KEY not in "".join(r.text for r in stack.arm.received)
    finally:
        process.stop()
