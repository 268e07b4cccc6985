"""The fault matrix for enrichment and the ServiceNow sync: Entra token, Sentinel ARM, VirusTotal, ServiceNow.

Every cell is (action, where the fault hits, fault kind). It runs the action once with the fault
active, checks the answer (``classify``: a status the Logic App retries, or a clear final 4xx; no
secret in it), lets the fault clear, retries the same call as the Logic App would, and compares the
END STATE with what a fault-free run of the same action leaves: the incident (fields, labels,
comments with their text), the ServiceNow tickets with their journal, the VirusTotal lookups that
got an answer, and the rows in Table Storage. Equality of normalised snapshots (ids, sys_ids,
addresses and timestamps replaced by placeholders), not "at least".

A final answer must also leave nothing half-done: everything visible in Sentinel and ServiceNow is
either as it was before the call or as the fault-free run leaves it, and no lease is left held.

Why some cells look the way they do:
- Slow answers: the emulator still serves the request after the delay (the write lands, the answer
  is lost), which is the case idempotency must survive. The Logic App retries after our
  Retry-After; the test waits only until those late requests have finished.
- Entra: the managed-identity token is fetched by the same code for every action, so one cell per
  fault runs two actions (enrichment, ticket creation). The host caches tokens; this
  module issues tokens with less than MSAL's five-minute refresh margin, so every ARM call asks the
  token endpoint (as a cold instance does). MSAL then throttles the endpoint in-process for its
  Retry-After (5 s by default) after a 429/5xx; the Logic App retries after our Retry-After (30 s),
  or on another instance, by which time that has passed. A fresh host process with the same
  settings and storage is the faulted instance; the module's host, which saw no fault, takes the
  retry. The faulted host is asked once more at once, and must still answer retryably.
- VirusTotal 429 is not an error: the lookups are deferred to a queue and the queue-triggered run
  writes a comment of its own with the deferred verdicts (the Defender portal shows no comment edits;
  the 429 with Retry-After: 30 honours the 30 s). Such a run converges when the verdict rows of its
  comments, together, are the fault-free run's rows (``deferred_view``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from enrichment.cache import ROW as VT_ROW
from enrichment.cache import TABLE as VT_TABLE
from enrichment.cache import partition_key
from enrichment.indicators import Indicator
from localdev.emulators.entra import ARM_AUDIENCE
from localdev.emulators.sentinel_arm import API_VERSION
from localdev.stack import SNOW_PASSWORD, SNOW_WEBHOOK_SECRET, VT_KEY
from sync.links import LinkStore
from tests.conftest import HostClient
from tests.fixtures import incident_with, sample
from tests.reliability.faults import FAULT_HOST_SETTINGS, FAULTS, SLOW_SECONDS, FaultKind, classify, inject
from tests.sync.conftest import MEGAN, SyncClient, sync_settings

pytestmark = pytest.mark.e2e

ENRICH, OUTBOUND = "enrichment/ip-reputation", "sync/servicenow/outbound"
INCIDENT_NUMBER = 4242  # the same in every cell, so titles and ticket descriptions compare equal
TOKEN_LIFETIME = 240  # below MSAL's 300 s refresh margin: every ARM call fetches a token
DEFERRED_TIMEOUT = 45.0  # VirusTotal's Retry-After of 30 s, plus the queue poll and the run
TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?")
# The name of the service each emulator stands for: an error answer caused by it must say which.
SERVICE_NAMES = {"entra": "access token", "arm": "Sentinel", "vt": "VirusTotal", "snow": "ServiceNow"}
# Where the README fixes the outcome: Sentinel's 403 (a role to grant) and 404 (the incident is gone)
# are final; its 409 (the incident kept changing) must come back, and a Logic App never retries a 409.
OUTCOMES = {("arm", 403): "final", ("arm", 404): "final", ("arm", 409): "retry"}
# The function answers well inside a Logic App's HTTP timeout: no outbound call, token request included,
# may wait past the fault settings' bounds (one retry of a 1 s timeout, Retry-After up to 1 s).
ANSWER_WITHIN = 10.0
# Where the README promises more: the setting or role to fix (named, never its value).
PROBLEM_NAMES = {("vt", 401): "VIRUSTOTAL_API_KEY", ("vt", 403): "VIRUSTOTAL_API_KEY",
                 ("vt", 404): "VIRUSTOTAL_ENDPOINT", ("snow", 401): "SERVICENOW_PASSWORD",
                 ("arm", 403): "Microsoft Sentinel Responder"}


# == the module's hosts ============================================================================
@pytest.fixture(scope="module")
def short_tokens(stack) -> Iterator[None]:
    previous = stack.entra.lifetime
    stack.entra.lifetime = TOKEN_LIFETIME
    try:
        yield
    finally:
        stack.entra.lifetime = previous


def host_settings(prefix: str | None = None) -> dict[str, str]:
    """Fault settings (short timeout, one retry) plus the sync's; ``prefix`` shares a deployment's storage."""
    settings = {**FAULT_HOST_SETTINGS, **sync_settings()}
    if prefix:
        settings["STATE_TABLE_PREFIX"] = prefix
    return settings


@pytest.fixture(scope="module")
def fault_host(stack, short_tokens) -> Iterator[SyncClient]:
    process = stack.host(**host_settings())
    try:
        yield SyncClient(process, stack)
    finally:
        process.stop()


# == one run of an action ==========================================================================
@dataclass
class Subject:
    """The incident (and its ticket) a cell drives one action on."""

    body: dict
    incident_id: str
    ips: list[str] = field(default_factory=list)
    push: dict | None = None
    ignored_lookups: Counter = field(default_factory=Counter)  # answered by the fault, so they do not count

    @property
    def guid(self) -> str:
        return self.incident_id.rsplit("/", 1)[-1].lower()


def new_subject(stack, ips: list[str] | None = None) -> Subject:
    body = incident_with(INCIDENT_NUMBER, ips or ["203.0.113.45", "10.0.0.5"], name=str(uuid.uuid4()))
    return Subject(body, stack.arm.seed_from_trigger(body), list(ips or []))


def fresh_ips(stack) -> list[str]:
    """Two public addresses no cell has looked up (the verdict cache is shared), with fixed reports."""
    base = uuid.uuid4().int
    ips = [ipaddress.ip_address(f"2001:db8:{base % 0xFFFF + 1:x}:{(base >> 16) % 0xFFFF + 1:x}::{i}").compressed
           for i in (1, 2)]
    stack.vt.set_report(ips[0], malicious=12, harmless=50, as_owner="Bad Hosting Ltd", country="RU")
    stack.vt.set_report(ips[1], harmless=70)
    return ips


def analyst_comment(stack, subject: Subject, label: str, message: str) -> None:
    """An analyst comments in the portal (a real ARM PUT; the name is fixed per incident and label)."""
    name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{subject.guid}/{label}"))
    response = requests.put(f"{stack.arm.url}{subject.incident_id}/comments/{name}",
                            params={"api-version": API_VERSION}, json={"properties": {"message": message}}, timeout=5,
                            headers={"Authorization": f"Bearer {stack.entra.issue(ARM_AUDIENCE)}"})
    assert response.status_code == 201, response.text


def prepare_create(stack, client: SyncClient) -> Subject:
    """A new incident with an analyst's comment (which the sync must carry over as a work note)."""
    subject = new_subject(stack)
    analyst_comment(stack, subject, "triage", "<p>Triage: the proxy is a known Tor exit.</p>")
    return subject


def linked_subject(stack, client: SyncClient) -> Subject:
    """An incident whose ticket the outbound sync created without faults."""
    subject = prepare_create(stack, client)
    created = client.outbound(subject.body)
    assert created.status_code == 200, created.text
    return subject


def prepare_enrich(stack, client: SyncClient) -> Subject:
    ips = fresh_ips(stack)
    return new_subject(stack, [*ips, "10.0.0.5"])


def prepare_close(stack, client: SyncClient) -> Subject:
    """Linked, then the analyst lowers the severity, comments and closes the incident in Sentinel."""
    subject = linked_subject(stack, client)
    analyst_comment(stack, subject, "closing", "Sign-in was the user's own VPN: <b>false positive</b>.")
    stack.arm.touch(subject.incident_id, severity="Low", status="Closed", classification="FalsePositive",
                    classificationReason="IncorrectAlertLogic", classificationComment="Rule fires on our VPN egress.",
                    owner={"objectId": None, "email": MEGAN, "assignedTo": "Megan Bowen", "userPrincipalName": MEGAN})
    subject.body = sample("incident-trigger-updated.json") | {"object": subject.body["object"]}
    return subject


def prepare_inbound(stack, client: SyncClient) -> Subject:
    """Linked, then an analyst puts the ticket on hold in ServiceNow with a work note; the push says so."""
    subject = linked_subject(stack, client)
    [ticket] = stack.snow.records(correlation_id=subject.guid)
    record = stack.snow.update_as(ticket["sys_id"], "megan.bowen", state="3", impact="2", urgency="3",
                                  work_notes="Called the user: the 09:41 sign-in was not hers.")
    subject.push = {"sys_id": record["sys_id"], "number": record["number"], "sys_mod_count": record["sys_mod_count"],
                 "sys_updated_on": record["sys_updated_on"]}
    return subject


# == snapshots =====================================================================================
class Tokens:
    """Replaces per-incident values (ids, sys_ids, addresses, comment names) and timestamps by placeholders."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def add(self, value: str, placeholder: str) -> None:
        if value and value.lower() not in self.names:
            self.names[value.lower()] = placeholder

    def text(self, value: str) -> str:
        for name in sorted(self.names, key=len, reverse=True):
            value = re.sub(re.escape(name), self.names[name], value, flags=re.IGNORECASE)
        return TIME.sub("<time>", value)

    def __call__(self, obj: Any) -> Any:
        return json.loads(self.text(json.dumps(obj, sort_keys=True)))


def incident_part(stack, subject: Subject, tokens: Tokens) -> dict[str, Any]:
    """The incident's fields, labels and comments (named by placeholders in the order of their text)."""
    props = stack.arm.incident(subject.incident_id)["properties"]
    keep = ("title", "description", "severity", "status", "classification", "classificationReason",
            "classificationComment", "owner")
    comments = stack.arm.comments(subject.incident_id)
    for index, comment in enumerate(sorted(comments, key=lambda c: tokens.text(c["properties"]["message"]))):
        tokens.add(comment["name"], f"<comment-{index}>")
    return {
        "fields": tokens({name: props.get(name) for name in keep}),
        "labels": sorted(label["labelName"] for label in props.get("labels") or ()),
        "comments": sorted((tokens.text(c["name"]), tokens.text(c["properties"]["message"])) for c in comments),
    }


def enrich_snapshot(stack, client: SyncClient, subject: Subject) -> dict[str, Any]:
    tokens = Tokens()
    tokens.add(subject.guid, "<incident>")
    for index, ip in enumerate(subject.ips):
        tokens.add(ip, f"<ip-{index}>")
    lookups = Counter(stack.vt.lookups()) - subject.ignored_lookups
    cache = {}
    for ip in subject.ips:
        row = client.state.get(VT_TABLE, partition_key(Indicator("ip", ip)), VT_ROW)
        if row is not None:
            held = row.get("state") == "pending" and float(row.get("lease_until", 0)) > time.time()
            cache[tokens.text(ip)] = {"state": row.get("state"), "leaseHeld": held,
                                      "verdict": tokens(json.loads(row["verdict"])) if row.get("verdict") else None}
    return {
        "incident": incident_part(stack, subject, tokens),
        "virustotalLookups": {tokens.text(ip): n for ip, n in sorted(lookups.items()) if ip in subject.ips},
        "cache": cache,
    }


def sync_snapshot(stack, client: SyncClient, subject: Subject) -> dict[str, Any]:
    tokens = Tokens()
    tokens.add(subject.guid, "<incident>")
    tickets = sorted(stack.snow.records(correlation_id=subject.guid), key=lambda t: t["number"])
    for index, ticket in enumerate(tickets):
        tokens.add(ticket["sys_id"], f"<ticket-{index}>")
    incident = incident_part(stack, subject, tokens)  # names the comments, which work notes quote
    journal = [entry for ticket in tickets for entry in stack.snow.journal(ticket["sys_id"])]
    link = LinkStore(client.state).get(subject.guid)
    # Not compared: the journal read position. A retry that re-read the journal (to recognise its own
    # note) may stand further on; what was copied either way is compared through the comments.
    link_view = None
    if link is not None:
        link_view = tokens({
            "state": link.state, "number": link.number, "sysId": link.sys_id, "incidentId": link.incident_id,
            "baseSentinel": link.base_sentinel, "baseServicenow": link.base_servicenow, "modCount": link.mod_count,
            "knownComments": sorted(tokens.text(name) for name in link.known_comments),
            "leaseHeld": bool(link.lease_owner),
        })
    return {
        "incident": incident,
        "tickets": [tokens(ticket) for ticket in tickets],
        "journal": sorted((e["element"], e["sys_created_by"], tokens.text(e["value"])) for e in journal),
        "link": link_view,
        "ticketIndex": {tokens.text(t["sys_id"]): tokens.text(LinkStore(client.state).incident_for_ticket(t["sys_id"])
                                                              or "") for t in tickets},
    }


# == the actions ===================================================================================
@dataclass(frozen=True)
class Scenario:
    """An action with what it needs set up first and how its end state is read."""

    id: str
    prepare: Callable[[Any, SyncClient], Subject]
    act: Callable[[HostClient, Subject], requests.Response]
    snapshot: Callable[[Any, SyncClient, Subject], dict[str, Any]]


def push(client: HostClient, subject: Subject) -> requests.Response:
    """The business rule's signed push, sent to any host (SyncClient.push needs only .http and .host)."""
    return SyncClient.push(client, subject.push)  # type: ignore[arg-type]


SCENARIOS = {scenario.id: scenario for scenario in (
    Scenario("enrich", prepare_enrich, lambda client, subject: client.post(ENRICH, subject.body), enrich_snapshot),
    Scenario("create", prepare_create, lambda client, subject: client.post(OUTBOUND, subject.body), sync_snapshot),
    Scenario("close", prepare_close, lambda client, subject: client.post(OUTBOUND, subject.body), sync_snapshot),
    Scenario("inbound", prepare_inbound, push, sync_snapshot),
)}


@dataclass(frozen=True)
class Target:
    """Where a fault hits: an emulator, optionally one path (regex) and method."""

    id: str
    emulator: str
    path: str | None = None
    method: str | None = None
    scenarios: tuple[str, ...] = ()


# ARM: the incident itself (the first read of a sync; the label update) and the comments (the
# enrichment comment; the ticket link, written after the ticket exists). ServiceNow: every request
# (the first read fails), and the writes alone (a create or work note that lands while its answer
# is lost). A fault on the first call of "create" (ARM or ServiceNow) does the same as on "close".
TARGETS = (
    Target("arm-incident", "arm", r"/incidents/[^/]+$", scenarios=("enrich", "close", "inbound")),
    Target("arm-comments", "arm", r"/comments", scenarios=("enrich", "create")),
    Target("vt", "vt", scenarios=("enrich",)),
    Target("snow", "snow", scenarios=("close", "inbound")),
    Target("snow-create", "snow", method="POST", scenarios=("create",)),
    Target("snow-update", "snow", method="PATCH", scenarios=("close",)),
)



def where(target: Target, kind: FaultKind) -> str:
    """The target in a cell id. ``inject`` takes the whole emulator offline for "refused", whatever the path."""
    return target.emulator if kind.refused else target.id


def matrix() -> list:
    """Every (action, target, fault); "refused" once per action and emulator (see ``where``)."""
    cells, seen = [], set()
    for target in TARGETS:
        for name in target.scenarios:
            for kind in FAULTS:
                cell_id = f"{name}-{where(target, kind)}-{kind}"
                if cell_id not in seen:
                    seen.add(cell_id)
                    cells.append(pytest.param(SCENARIOS[name], target, kind, id=cell_id))
    return cells


CELLS = matrix()


# == checks ========================================================================================
@pytest.fixture(scope="module")
def baselines() -> dict[str, dict]:
    """Fault-free end state per action, computed once (lazily) on a clean stack."""
    return {}


def baseline(stack, client: SyncClient, cache: dict[str, dict], scenario: Scenario) -> dict:
    if scenario.id not in cache:
        stack.reset()
        subject = scenario.prepare(stack, client)
        answer = scenario.act(client, subject)
        assert answer.status_code == 200, answer.text
        cache[scenario.id] = scenario.snapshot(stack, client, subject)
    return cache[scenario.id]


def check_answer(answer: requests.Response, kind: FaultKind, emulator: str, stack) -> str:
    """Classify; an error must name the service that failed and never show a secret."""
    outcome = classify(answer, kind)
    secrets = (VT_KEY, SNOW_PASSWORD, SNOW_WEBHOOK_SECRET, stack.entra.identity_header)
    leaked = [secret for secret in secrets if secret in answer.text or secret in str(answer.headers)]
    assert not leaked, f"{kind}: the answer shows a secret: {answer.text}"
    if outcome != "ok":
        message = answer.json()["error"]["message"]
        for name in (SERVICE_NAMES[emulator], PROBLEM_NAMES.get((emulator, kind.status), "")):
            assert name.lower() in message.lower(), f"{kind}: {message!r} does not name {name!r}"
    return outcome


def settle(emulator, kind: FaultKind, since: int) -> None:
    """Let writes a slow fault held finish (they still land) before the Logic App's retry comes."""
    held = [r for r in emulator.received[since:] if r.method != "GET"]
    if kind.slow and held:
        time.sleep(max(0.0, held[-1].at + SLOW_SECONDS + 0.2 - time.time()))


def multiset_within(part: list, *allowed: list) -> list:
    """Items of ``part`` beyond what the union (by max multiplicity) of ``allowed`` holds."""
    limit: Counter = Counter()
    for items in allowed:
        for item, n in Counter(json.dumps(i, sort_keys=True) for i in items).items():
            limit[item] = max(limit[item], n)
    return list((Counter(json.dumps(i, sort_keys=True) for i in part) - limit).elements())


def assert_nothing_half_done(after: dict, before: dict, expected: dict) -> None:
    """After a final answer nothing is half-written, nothing extra and no lease is left held.

    Every comment, label and journal entry is as before the call or exactly as the fault-free run
    writes it (no "pending" comment, no second note), and every ticket is one the fault-free run has
    (same number and correlation: none duplicated). The actions span several systems, so a ticket
    may exist before the incident links to it; the retry links it, which ``converged`` checks.
    """
    def items(snapshot: dict) -> dict[str, list]:
        return {
            "comments": snapshot["incident"]["comments"],
            "labels": snapshot["incident"]["labels"],
            "journal": snapshot.get("journal", []),
            "tickets": [(t["number"], t["correlation_id"]) for t in snapshot.get("tickets", [])],
        }

    allowed = [items(before), items(expected)]
    for part, got in items(after).items():
        extra = multiset_within(got, *(snapshot[part] for snapshot in allowed))
        assert not extra, f"half-done {part}: {extra}"
    if after.get("link"):
        assert not after["link"]["leaseHeld"], "the sync lease is still held"
    for ip, row in after.get("cache", {}).items():
        assert not row["leaseHeld"], f"the VirusTotal lease of {ip} is still held"


def deferred_view(snapshot: dict) -> dict:
    """A snapshot whose comments are the set of table rows with a result, whichever comment carries them: a run
    deferred by VirusTotal's quota shows its verdicts in two comments (the first with pending rows)."""
    rows: set[str] = set()
    for _name, text in snapshot["incident"]["comments"]:
        rows |= {row for row in re.findall(r"<tr><td>.*?</tr>", text) if "pending:" not in row}
    return {**snapshot, "incident": {**snapshot["incident"], "comments": sorted(rows)}}


def converged(stack, client: SyncClient, scenario: Scenario, subject: Subject, expected: dict, *,
              wait: float = 0.0) -> None:
    """The end state equals the fault-free one (waiting up to ``wait`` s for deferred work)."""
    deadline = time.monotonic() + wait
    view = deferred_view if wait else (lambda snapshot: snapshot)
    expected = view(expected)
    while True:
        state = view(scenario.snapshot(stack, client, subject))
        if state == expected or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if state != expected:
        pytest.fail("end state differs from the fault-free run:\n" + "\n".join(differences(state, expected)))


def differences(got: Any, want: Any, path: str = "") -> list[str]:
    """Readable leaf-level differences of two snapshots (pytest truncates nested dicts)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [line for key in sorted(set(got) | set(want), key=str)
                for line in differences(got.get(key, "<absent>"), want.get(key, "<absent>"), f"{path}.{key}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [line for i, pair in enumerate(zip(got, want, strict=True))
                for line in differences(*pair, f"{path}[{i}]")]
    return [] if got == want else [f"{path}: {got!r:.400} != fault-free {want!r:.400}"]


def run_cell(stack, client: SyncClient, faulted: HostClient, scenario: Scenario, target: Target, kind: FaultKind,
             expected: dict) -> str:
    """One cell: prepare, act under the fault, check the answer, retry once it cleared, compare end states."""
    emulator = getattr(stack, target.emulator)
    subject = scenario.prepare(stack, client)
    before = scenario.snapshot(stack, client, subject)
    lookups_before, received_before = Counter(stack.vt.lookups()), len(emulator.received)
    started = time.monotonic()
    with inject(emulator, kind, path=target.path, method=target.method):
        answer = scenario.act(faulted, subject)
    took = time.monotonic() - started
    assert took < ANSWER_WITHIN, f"{kind}: the action took {took:.1f}s to answer"
    if target.emulator == "vt":  # lookups the fault answered do not count as lookups
        subject.ignored_lookups = Counter(stack.vt.lookups()) - lookups_before
    outcome = check_answer(answer, kind, target.emulator, stack)
    assert outcome == OUTCOMES.get((target.emulator, kind.status), outcome), f"{kind}: {answer.text}"
    settle(emulator, kind, received_before)
    if outcome == "final":
        assert_nothing_half_done(scenario.snapshot(stack, client, subject), before, expected)
    if outcome != "ok":
        if faulted is not client:  # the faulted instance, at once: still a retryable answer (or done)
            assert check_answer(scenario.act(faulted, subject), kind, target.emulator, stack) != "final"
        retried = scenario.act(client, subject)
        assert retried.status_code == 200, f"{kind}: the retry answered {retried.status_code} {retried.text}"
    deferred = answer.status_code == 200 and answer.json().get("complete") is False
    converged(stack, client, scenario, subject, expected, wait=DEFERRED_TIMEOUT if deferred else 0.0)
    return outcome


# == the matrix ====================================================================================
@pytest.mark.parametrize(("scenario", "target", "kind"), CELLS)
def test_fault_then_retry_converges(stack, fault_host, baselines, scenario, target, kind):
    expected = baseline(stack, fault_host, baselines, scenario)
    stack.reset()
    run_cell(stack, fault_host, fault_host, scenario, target, kind, expected)


ENTRA = Target("entra", "entra")
# Where the first token is needed: after the VirusTotal lookups (enrich), after the sync took its lease
# (create; "close" and "inbound" reach it the same way, after taking the lease of an existing link).
TOKEN_SCENARIOS = ("enrich", "create")


@pytest.mark.parametrize("kind", FAULTS, ids=[f"entra-{kind}" for kind in FAULTS])
def test_token_fault_then_retry_converges(stack, fault_host, baselines, kind):
    """The token endpoint fails for an instance of the same deployment: every action answers retryably."""
    expected = {name: baseline(stack, fault_host, baselines, SCENARIOS[name]) for name in TOKEN_SCENARIOS}
    process = stack.host(**host_settings(fault_host.host.env["STATE_TABLE_PREFIX"]))
    try:
        instance = HostClient(process)
        for name in TOKEN_SCENARIOS:
            stack.reset()
            outcome = run_cell(stack, fault_host, instance, SCENARIOS[name], ENTRA, kind, expected[name])
            assert outcome != "final", f"{name}: a token failure is not final"
    finally:
        process.stop()


# The poll timer has no answer to classify: a run that meets a fault must stop and keep the
# watermark, and the next run must leave what the push leaves. A ServiceNow fault stops it at its
# first read; a Sentinel fault at the incident read. Sentinel's 404 (the incident was deleted) is the
# one answer the poller accounts for and moves past, so it has its own test below.
BY_ID = {target.id: target for target in TARGETS}
POLL_CELLS = [pytest.param(target, kind, id=f"poll-{where(target, kind)}-{kind}")
              for target in (BY_ID["arm-incident"], BY_ID["snow"]) for kind in FAULTS
              if not (target.emulator == "arm" and kind.status == 404)]


def fire_poll(stack, client: SyncClient, target: Target, kind: FaultKind) -> dict:
    """One timer run with the fault active; its recorded summary must name the service and no secret."""
    with inject(getattr(stack, target.emulator), kind, path=target.path, method=target.method):
        summary = client.poll()
    assert not any(secret in json.dumps(summary) for secret in (SNOW_PASSWORD, stack.entra.identity_header))
    settle(getattr(stack, target.emulator), kind, 0)
    return summary


@pytest.mark.parametrize(("target", "kind"), POLL_CELLS)
def test_poll_fault_then_next_run_converges(stack, fault_host, baselines, target, kind):
    expected = baseline(stack, fault_host, baselines, SCENARIOS["inbound"])
    stack.reset()
    subject = prepare_inbound(stack, fault_host)
    stopped = fire_poll(stack, fault_host, target, kind)
    assert stopped.get("stopped") and not stopped.get("synced"), stopped
    assert SERVICE_NAMES[target.emulator].lower() in stopped["stopped"].lower(), stopped
    assert fault_host.poll()["synced"] == 1
    converged(stack, fault_host, SCENARIOS["inbound"], subject, expected)


def test_poll_moves_past_an_incident_sentinel_says_is_gone(stack, fault_host, baselines):
    """poll-arm-incident-404: a deleted incident would fail every run and hold up every other ticket, so
    that ticket update is counted as failed and not retried; nothing is half-written and no lease is held."""
    expected = baseline(stack, fault_host, baselines, SCENARIOS["inbound"])
    stack.reset()
    subject = prepare_inbound(stack, fault_host)
    before = SCENARIOS["inbound"].snapshot(stack, fault_host, subject)
    summary = fire_poll(stack, fault_host, BY_ID["arm-incident"], FaultKind("404", 404))
    assert (summary["failed"], summary["synced"], summary["stopped"]) == (1, 0, None), summary
    assert_nothing_half_done(SCENARIOS["inbound"].snapshot(stack, fault_host, subject), before, expected)
    again = fault_host.poll()
    assert (again["failed"], again["synced"]) == (0, 0), again
