"""Fault matrix of the response and orchestration actions: Defender for Endpoint, Microsoft Graph, Teams, Slack.

One cell = one action x one faulted external call x one fault of ``FAULTS``. The Logic App calls the
action while the fault is on; the answer must be a status it retries or a clear final error (never a
crash, never a secret). Then the fault clears and the Logic App calls again with the same body. The
end state (what the external APIs hold, the incident's comments, our tables) must then equal, after
normalisation, the end state of a fault-free run of the same action: nothing lost, nothing twice. Comments
are never edited (issue #15.11), so the faulted call's own audit comment stays beside them, as written.

Normalisation drops only what legitimately differs between two runs: the incident's own id and number,
the fresh IP addresses, ids the services mint (machine actions, indicators, approvals), timestamps and
the wording of an audit row's detail (it says "requested" or "already requested" depending on which call
saw the request go out; the row's target, outcome and ids are compared).
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from core.state import StateStore, key_safe
from localdev.emulators.base import Emulator
from localdev.emulators.defender import WS_FIN_0042
from localdev.emulators.graph import ADELE
from localdev.stack import APPROVAL_SIGNING_KEY
from tests.conftest import HostClient
from tests.reliability.faults import FAULT_HOST_SETTINGS, FAULTS, SLOW_SECONDS, FaultKind, classify, inject
from tests.response.helpers import account_entity, fresh_ips, host_entity, incident, ip_entity

pytestmark = pytest.mark.e2e

SEEDED_SESSIONS_VALID_FROM = "2026-01-05T09:00:00Z"  # the Graph emulator's seed: a revocation moves it
POLL_LIMIT = 10


# -- the stack under test ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host(stack):
    """One host for the whole matrix: short timeouts and one retry, and DRY_RUN off so actions really act."""
    process = stack.host(**FAULT_HOST_SETTINGS, DRY_RUN="false")
    try:
        yield HostClient(process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def store(stack, host) -> StateStore:
    """The host's own tables (same Azurite, same prefix), to read what it keeps."""
    return StateStore(connection_string=stack.azurite.connection_string,
                      prefix=host.host.env["STATE_TABLE_PREFIX"])


@dataclass
class Case:
    """One run's fresh incident and what the action needs to call and check it."""

    body: dict  # what the Logic App sends (@triggerBody() or the approval subscribe body)
    incident_id: str
    replacements: dict[str, str]  # case-specific values -> placeholders
    extra: dict[str, Any] = field(default_factory=dict)


def new_case(stack, *entities: dict, ips: Iterable[str] = ()) -> Case:
    """A fresh incident (own id, five-digit number) with ``entities``, seeded in the ARM emulator."""
    body = incident(stack, *entities, title="Fault matrix: compromised user on a finance workstation")
    props = body["object"]["properties"]
    props["incidentNumber"] = 10000 + uuid.uuid4().int % 90000
    stack.arm.seed_from_trigger(body)
    replacements = {body["object"]["name"]: "<incident>", str(props["incidentNumber"]): "<number>"}
    replacements.update({ip: f"<ip{i}>" for i, ip in enumerate(ips)})
    return Case(body, body["object"]["id"], replacements)


# -- normalisation -------------------------------------------------------------------------------
# ISO times, and the deadlines people read in approval comments ("Sat 05 Dec 2026, 18:37", core/pages.py).
TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
                  r"|(?:[A-Z][a-z]{2} )?\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}")
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
HEX32 = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
LINK_QUERY = re.compile(r"\b(sig|expires)=[^&\"'<>\s]+")
AUDIT_ROW = re.compile(r"<tr><td>(.*?)</td><td>(.*?)</td><td>.*?</td><td>(.*?)</td></tr>")


def scrub(value: Any, case: Case) -> Any:
    """``value`` with the case's own values, minted ids and times replaced by placeholders."""
    if isinstance(value, dict):
        return {k: scrub(v, case) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, case) for v in value]
    if not isinstance(value, str):
        return value
    for raw, placeholder in case.replacements.items():
        value = re.sub(rf"(?<![0-9A-Za-z]){re.escape(raw)}(?![0-9A-Za-z])", placeholder, value)
    value = TIME.sub("<time>", value)
    value = GUID.sub("<guid>", value)
    value = HEX32.sub("<hex>", value)
    return LINK_QUERY.sub(r"\1=<\1>", value)


def comment_view(message: str, case: Case) -> Any:
    """An audit comment as (header, rows of target / outcome / number of ids); other comments scrubbed."""
    if "<th>Target</th>" not in message:
        return scrub(message, case)
    header = message.split("<table>", 1)[0]
    rows = [(scrub(html.unescape(target), case), outcome, len([i for i in ids.split(", ") if i]))
            for target, outcome, ids in AUDIT_ROW.findall(message)]
    return {"header": scrub(header, case), "rows": rows}


def comments(stack, case: Case) -> list:
    views = [comment_view(c["properties"]["message"], case) for c in stack.arm.comments(case.incident_id)]
    return sorted(views, key=repr)


# -- one faulted call ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """Which requests of which emulator the fault answers, and the names the error may give it by."""

    emulator: str  # attribute of the Stack
    names: tuple[str, ...]  # one of them appears in the action's error message
    path: str | None = None
    method: str | None = None

    def of(self, stack) -> Emulator:
        return getattr(stack, self.emulator)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or bool(re.search(
            self.path, path, re.IGNORECASE)))


@dataclass
class Window:
    """What the faulted emulator received while the fault was on."""

    requests: list = field(default_factory=list)
    faults_served: int = 0

    def faulted(self, kind: FaultKind, point: Point) -> set[int]:
        """Ids of the received requests the fault answered instead of the service (a slow one was served late)."""
        if kind.slow:
            return set()
        return {id(r) for r in self.requests if point.matches(r.method, r.path)}


def quiesce(emulator: Emulator) -> None:
    """Let requests held by a slow fault finish (the service acts late); a Logic App retry comes later still."""
    last = max((r.at for r in emulator.requests_to()), default=0.0)
    time.sleep(max(0.0, last + SLOW_SECONDS + 0.3 - time.time()))


# -- the actions ---------------------------------------------------------------------------------
class Action(ABC):
    """One HTTP action as a Logic App drives it, and the end state it leaves."""

    id = "action"
    route = ""

    @abstractmethod
    def prepare(self, stack, host: HostClient) -> Case:
        """Seed what the action acts on and return its case (trigger body and targets)."""

    def call(self, host: HostClient, case: Case) -> requests.Response:
        return host.post(self.route, case.body)

    def settle(self, host: HostClient, case: Case, answer: requests.Response) -> None:
        """Finish what the Logic App finishes after a successful answer (e.g. poll a 202); most need nothing."""
        return None

    @abstractmethod
    def state(self, stack, store: StateStore, case: Case, faulted: set[int]) -> dict:
        """The action's end state, normalised for comparison with the fault-free run's."""

    def snapshot(self, stack, store: StateStore, case: Case, faulted: set[int] = frozenset()) -> dict:
        return {"comments": comments(stack, case), **self.state(stack, store, case, set(faulted))}


def poll(location: str) -> requests.Response:
    """Follow an asynchronous 202 as a Logic App does: GET the Location (signed, no key) until done."""
    for _ in range(POLL_LIMIT):
        answer = requests.get(location, timeout=30)
        if answer.status_code != 202:
            return answer
    raise AssertionError("the machine action did not finish")


class MdeIsolate(Action):
    id = "mde-isolate"
    route = "response/mde/isolate"

    def prepare(self, stack, host: HostClient) -> Case:
        return new_case(stack, host_entity("ws-fin-0042", device_id=WS_FIN_0042))

    def settle(self, host: HostClient, case: Case, answer: requests.Response) -> None:
        if answer.status_code == 202:
            final = poll(answer.headers["Location"])
            assert final.status_code == 200 and final.json()["status"] == "Succeeded", final.text

    def state(self, stack, store: StateStore, case: Case, faulted: set[int]) -> dict:
        actions = [{k: a[k] for k in ("type", "machineId", "scope", "status", "requestor", "requestorComment")}
                   for a in stack.mde.actions(WS_FIN_0042)]
        operations = [{"verb": row["verb"], "final": row.get("final", ""), "actions": len(json.loads(row["actions"]))}
                      for row in store.query("responsestate", "PartitionKey eq 'response' and incident_id eq @i",
                                             {"i": case.incident_id}) if row["RowKey"].startswith("op|")]
        return {"actions": scrub(actions, case), "isolation": stack.mde.isolation(WS_FIN_0042),
                "operations": operations}


class MdeStatus(MdeIsolate):
    """The status poll of an isolation: the isolate call went through, the polling GET meets the fault."""

    id = "mde-status"

    def prepare(self, stack, host: HostClient) -> Case:
        case = super().prepare(stack, host)
        started = host.post(self.route, case.body)
        assert started.status_code == 202, started.text
        case.extra["location"] = started.headers["Location"]
        return case

    def call(self, host: HostClient, case: Case) -> requests.Response:
        return requests.get(case.extra["location"], timeout=30)


class BlockIp(Action):
    id = "block-ip"
    route = "response/block-ip"

    def prepare(self, stack, host: HostClient) -> Case:
        (address,) = fresh_ips(1)
        case = new_case(stack, ip_entity(address), ips=[address])
        case.extra["ip"] = address
        return case

    def state(self, stack, store: StateStore, case: Case, faulted: set[int]) -> dict:
        fields = ("indicatorValue", "indicatorType", "action", "title", "description", "severity", "generateAlert",
                  "recommendedActions")
        indicators = stack.mde.indicators()
        row = store.get("blocklist", "ip", key_safe(case.extra["ip"]))
        listed = row and {"address": row["address"], "incident": row["incident_id"], "label": row["case_label"],
                          "indicator": [i["indicatorValue"] for i in indicators if i["id"] == row["indicator_id"]]}
        return {"indicators": scrub([{k: i.get(k) for k in fields} for i in indicators], case),
                "blocklist": scrub(listed, case)}


@dataclass(frozen=True)
class GraphWrite:
    method: str
    path: str


GRAPH_WRITES = (GraphWrite("PATCH", r"^/v1\.0/users/[^/]+$"), GraphWrite("POST", r"/revokeSignInSessions$"),
                GraphWrite("POST", r"/riskyUsers/confirmCompromised$"))


class EntraAction(Action):
    """confirm-compromised, revoke-sessions, disable-user on the sample user (Adele, at risk)."""

    def __init__(self, verb: str) -> None:
        self.id = f"entra-{verb}"
        self.route = f"response/entra/{verb}"

    def prepare(self, stack, host: HostClient) -> Case:
        stack.graph.set_risk(ADELE)
        return new_case(stack, account_entity("adele.vance", aad_id=ADELE))

    def state(self, stack, store: StateStore, case: Case, faulted: set[int]) -> dict:
        user = stack.graph.user(ADELE) or {}
        risky = stack.graph.risky_user(ADELE) or {}
        # Graph keeps no trace of a revocation but a timestamp: count the writes the service carried out.
        writes = {f"{w.method} {w.path}": len([r for r in stack.graph.requests_to(w.method, w.path)
                                                if id(r) not in faulted]) for w in GRAPH_WRITES}
        return {"accountEnabled": user.get("accountEnabled"), "riskState": risky.get("riskState"),
                "sessionsRevoked": user.get("signInSessionsValidFromDateTime") != SEEDED_SESSIONS_VALID_FROM,
                "writes": writes}


def incident_entities() -> tuple[dict, ...]:
    return (account_entity("adele.vance", aad_id=ADELE), host_entity("ws-fin-0042", device_id=WS_FIN_0042))


class Notify(Action):
    id = "notify"
    route = "orchestration/notify"

    def prepare(self, stack, host: HostClient) -> Case:
        return new_case(stack, *incident_entities())

    def state(self, stack, store: StateStore, case: Case, faulted: set[int]) -> dict:
        return {"teams": scrub(stack.teams.messages, case), "slack": scrub(stack.slack.messages, case)}


class ApprovalMail(Action):
    """The subscribe call of the approval wait, asking the approvers by mail only (Graph sendMail)."""

    id = "approval-mail"
    route = "orchestration/approvals"

    def prepare(self, stack, host: HostClient) -> Case:
        case = new_case(stack, *incident_entities())
        sas = uuid.uuid4().hex  # the Logic App's callback signature: a secret
        case.extra["sas"] = sas
        case.body = {"callbackUrl": f"http://127.0.0.1:9/workflows/{uuid.uuid4().hex}/callback?sig={sas}",
                     "incident": case.body, "channels": ["email"], "choices": ["Block", "Ignore"],
                     "question": "Block the user and the IP?", "timeout": "PT1H"}
        return case

    def state(self, stack, store: StateStore, case: Case, faulted: set[int]) -> dict:
        rows = [{k: row[k] for k in ("state", "choices", "approvers", "callback_state", "question", "title")}
                for row in store.query("approvals", "PartitionKey eq 'approval' and incident_id eq @i",
                                       {"i": case.incident_id})]
        mails = [{k: m[k] for k in ("from", "to", "subject", "body", "contentType")} for m in stack.outbox.sent]
        return {"approvals": scrub(rows, case), "outbox": scrub(sorted(mails, key=lambda m: m["to"]), case)}


# -- the matrix ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """An action and the external call of it that the fault hits."""

    id: str
    action: Action
    point: Point


MDE, GRAPH, MAIL = ("Defender",), ("Microsoft Graph",), ("Graph",)
ISOLATE, STATUS, BLOCK = MdeIsolate(), MdeStatus(), BlockIp()
CONFIRM, REVOKE, DISABLE = (EntraAction(verb) for verb in ("confirm-compromised", "revoke-sessions", "disable-user"))
NOTIFY, APPROVAL = Notify(), ApprovalMail()
CELLS = (
    Cell("mde-isolate", ISOLATE, Point("mde", MDE, r"/isolate$", "POST")),
    Cell("mde-read-machine", ISOLATE, Point("mde", MDE, r"^/api/machines/[^/]+$", "GET")),
    Cell("mde-status", STATUS, Point("mde", MDE, r"^/api/machineactions/[^/]+$", "GET")),
    Cell("mde-block-ip", BLOCK, Point("mde", MDE, r"^/api/indicators$", "POST")),
    Cell("graph-confirm-compromised", CONFIRM, Point("graph", GRAPH, r"/confirmCompromised$", "POST")),
    Cell("graph-revoke-sessions", REVOKE, Point("graph", GRAPH, r"/revokeSignInSessions$", "POST")),
    Cell("graph-disable-user", DISABLE, Point("graph", GRAPH, r"^/v1\.0/users/[^/]+$", "PATCH")),
    # A user Graph says does not exist is refused by name ("no Entra ID user ..."): a clear final answer.
    Cell("graph-read-user", DISABLE, Point("graph", (*GRAPH, "Entra ID user"), r"^/v1\.0/users/[^/]+$", "GET")),
    Cell("graph-approval-mail", APPROVAL, Point("graph", MAIL, r"/sendMail$", "POST")),
    Cell("teams-notify", NOTIFY, Point("teams", ("Teams",))),
    Cell("slack-notify", NOTIFY, Point("slack", ("Slack",))),
)


def secrets_of(stack, case: Case) -> list[str]:
    """What no answer, comment or log line may show: webhook credentials, keys, tokens, callback signatures."""
    values = [stack.teams.signature, stack.teams.workflow_id, stack.slack.path.rsplit("/", 1)[-1],
              APPROVAL_SIGNING_KEY, stack.entra.identity_header, case.extra.get("sas", "")]
    for emulator in (stack.mde, stack.graph, stack.arm):
        values += [r.headers.get("Authorization", "")[len("Bearer "):] for r in emulator.received]
    return sorted({v for v in values if len(v) >= 8})


@pytest.fixture(scope="module")
def baselines(stack, host, store) -> Callable[[Action], dict]:
    """The fault-free end state of each action, computed once (normalised, so any fresh case compares)."""
    computed: dict[str, dict] = {}

    def baseline(action: Action) -> dict:
        if action.id not in computed:
            stack.reset()
            case = action.prepare(stack, host)
            answer = action.call(host, case)
            assert answer.status_code < 400, answer.text
            action.settle(host, case, answer)
            computed[action.id] = action.snapshot(stack, store, case)
        return computed[action.id]

    return baseline


def check_answer(answer: requests.Response, kind: FaultKind, cell: Cell, secrets: list[str]) -> str:
    """The answer under the fault: retried or final, never a crash, naming the service, showing no secret."""
    verdict = classify(answer, kind)
    for secret in secrets:
        assert secret not in answer.text, f"{cell.id}/{kind}: a secret in the answer"
    if verdict != "ok":
        error = answer.json()["error"]
        assert error["code"] != "InternalError", f"{cell.id}/{kind}: the action crashed: {answer.text}"
        assert any(name.lower() in error["message"].lower() for name in cell.point.names), \
            f"{cell.id}/{kind}: the error does not name the service: {error['message']}"
    return verdict


NOT_ACTED = {"&#x274C; failed", "&#x26D4; refused", "&#x26A0;&#xFE0F; not available", "skipped"}


def assert_same_end_state(end: dict, expected: dict, *, calls_under_fault: int) -> None:
    """``end`` equals the fault-free ``expected``, comments aside; every fault-free comment is there exactly once
    (nothing lost, nothing twice), and the only other comments are the faulted call's own record, kept as it was
    written (comments are never edited: the Defender portal does not show edits, issue #15.11): at most one per
    call the fault met, an audit comment that claims nothing done."""
    end, expected = dict(end), dict(expected)
    found, wanted = end.pop("comments"), expected.pop("comments")
    assert end == expected
    extra = list(found)
    for comment in wanted:
        assert comment in extra, f"a comment of the fault-free run is missing: {comment}"
        extra.remove(comment)
    assert len(extra) <= calls_under_fault, f"comments beyond the faulted call's record: {extra}"
    for comment in extra:  # rows that acted on nothing, or no rows at all (the call failed before any target)
        rows = comment["rows"] if isinstance(comment, dict) else []
        assert {outcome for _, outcome, _ in rows} <= NOT_ACTED, comment
        assert isinstance(comment, dict) or ("response audit" in comment and "<table>" not in comment), comment


@pytest.mark.parametrize("kind", FAULTS, ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.id)
def test_fault_then_retry_ends_as_a_fault_free_run(stack, host, store, baselines, request, cell: Cell,
                                                   kind: FaultKind):
    expected = baselines(cell.action)
    stack.reset()
    case = cell.action.prepare(stack, host)
    emulator = cell.point.of(stack)
    seen, served = len(emulator.received), emulator.faults_served
    with inject(emulator, kind, path=cell.point.path, method=cell.point.method):
        first = cell.action.call(host, case)
    window = Window(emulator.received[seen:], emulator.faults_served - served)
    # The fault must really have met the call (a refused service received nothing at all).
    assert window.requests == [] if kind.refused else window.faults_served > 0, f"{cell.id}/{kind} not hit"
    if kind.slow:
        quiesce(emulator)
    secrets = secrets_of(stack, case)
    verdict = check_answer(first, kind, cell, secrets)
    assert verdict != "ok" or not kind.refused, f"{cell.id}/{kind}: succeeded without the service"
    request.node.user_properties.append(("verdict", f"{verdict} {first.status_code}"))  # the matrix's answers

    answer = first
    if verdict != "ok":  # the Logic App retries (a final error: the analyst re-runs once the cause is fixed)
        answer = cell.action.call(host, case)
        assert answer.status_code < 400, f"{cell.id}/{kind}: the retry failed: {answer.text}"
    cell.action.settle(host, case, answer)

    end = cell.action.snapshot(stack, store, case, window.faulted(kind, cell.point))
    assert_same_end_state(end, expected, calls_under_fault=0 if verdict == "ok" else 1)
    shown = [c["properties"]["message"] for c in stack.arm.comments(case.incident_id)] + [host.host.output]
    for secret in secrets_of(stack, case):
        assert not any(secret in text for text in shown), f"{cell.id}/{kind}: a secret in a comment or log"
