"""No secret leaves by a way it should not: every action runs with distinctive secret values, then every output
is searched for them.

Secrets: every ``secret=True`` setting of core/settings.py (VirusTotal key, ServiceNow password, webhook secret,
Slack and Teams webhook URLs, approval signing key, storage connection string), the managed-identity header,
a client secret, and the function key. Each also in derived forms (URL-encoded, HTML- and JSON-escaped,
base64, and base64 of ``user:password``). Outputs: every status, header and body the host answered, everything
the host process logged (at DEBUG), every incident (properties, labels, comments), every ServiceNow ticket
field and journal entry, every Teams and Slack message, every mail, every Logic App callback, every row and
queue message in the state store, and every request each emulator received -- except each secret's one
legitimate destination (the VirusTotal key in the ``x-apikey`` header to VirusTotal, and so on). The actions
run their happy paths and their failures: a rejected VirusTotal key, VirusTotal's quota, ServiceNow 401,
revoked and unreachable webhooks, forged approval links and pushes, Graph and Defender refusals.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
import requests

from core.settings import SPECS
from localdev.azurite import ACCOUNT_KEY
from localdev.host import HostProcess
from sync.webhook import SIGNATURE_HEADER, sign
from tests.conftest import wait_for
from tests.fixtures import fresh_incident
from tests.orchestration.helpers import CallbackReceiver, link_for, links_in, person, press
from tests.sync.conftest import SyncClient, sync_settings

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_hex(6)
VT_KEY = f"VTKEY-{TOKEN}-virustotal"
SNOW_USER = "svc_leakcheck"
SNOW_PASSWORD = f"SNOWPW-{TOKEN}-servicenow"
WEBHOOK_SECRET = f"HOOKSECRET-{TOKEN}-servicenow-push"
SIGNING_KEY = f"SIGNKEY-{TOKEN}-approvals-{secrets.token_hex(12)}"
CLIENT_SECRET = f"CLIENTSECRET-{TOKEN}-entra"  # set but unused (managed identity wins): must appear nowhere
APPROVER = "alice@contoso.com"


# -- what is secret, and where each may go ---------------------------------------------------------------------
@dataclass(frozen=True)
class Place:
    """Where a text was found: the kind of output, which one, and which part of it."""

    output: str  # response | log | incident | ticket | journal | teams | slack | mail | callback | state | received
    where: str  # e.g. the route, the emulator's name, the incident id
    part: str  # e.g. "header:location", "body", "path", "query:sig"

    def __str__(self) -> str:
        return f"{self.output} {self.where} [{self.part}]"


@dataclass
class Secret:
    name: str
    values: tuple[str, ...]  # the secret and its secret parts (a webhook URL's path token, its sig)
    allowed: Callable[[Place], bool] = lambda place: False
    extra_forms: tuple[str, ...] = ()
    seen_where_allowed: int = 0

    def forms(self) -> dict[str, str]:
        """Every spelling under which the value could travel, by how it was derived."""
        found: dict[str, str] = {}
        for value in self.values:
            for how, form in (("as is", value), ("url-encoded", quote(value, safe="")), ("url path", quote(value)),
                              ("form-encoded", quote_plus(value)), ("html-escaped", html.escape(value)),
                              ("json-escaped", json.dumps(value)[1:-1]),
                              ("base64", base64.b64encode(value.encode()).decode().rstrip("=")),
                              ("base64url", base64.urlsafe_b64encode(value.encode()).decode().rstrip("="))):
                if len(form) >= 8:
                    found.setdefault(form.lower(), how)
        for form in self.extra_forms:
            found.setdefault(form.lower(), "derived")
        return found


def received_at(emulator: str, *parts: str) -> Callable[[Place], bool]:
    return lambda place: place.output == "received" and place.where == emulator and place.part in parts


def secrets_of(stack, host_env: dict[str, str]) -> list[Secret]:
    teams, slack = stack.teams, stack.slack
    basic = base64.b64encode(f"{SNOW_USER}:{SNOW_PASSWORD}".encode()).decode()
    found = [
        Secret("VIRUSTOTAL_API_KEY", (VT_KEY,), received_at("virustotal", "header:x-apikey")),
        Secret("SERVICENOW_PASSWORD", (SNOW_PASSWORD,), received_at("servicenow", "header:authorization"),
               extra_forms=(basic, basic.rstrip("="))),
        Secret("SERVICENOW_WEBHOOK_SECRET", (WEBHOOK_SECRET,)),
        Secret("APPROVAL_SIGNING_KEY", (SIGNING_KEY,)),
        Secret("TEAMS_WEBHOOK_URL", (teams.webhook_url, teams.signature, teams.workflow_id),
               received_at("teams-webhook", "path", "query:sig")),
        Secret("SLACK_WEBHOOK_URL", (slack.webhook_url, slack.path.rsplit("/", 1)[-1]),
               received_at("slack-webhook", "path")),
        Secret("STATE_STORAGE_CONNECTION", (host_env["STATE_STORAGE_CONNECTION"], ACCOUNT_KEY)),
        Secret("IDENTITY_HEADER", (host_env["IDENTITY_HEADER"],), received_at("entra", "header:x-identity-header")),
        Secret("AZURE_CLIENT_SECRET", (CLIENT_SECRET,)),
        # No key in any URL the pack builds (issue 14.4): the 202 Location is signed instead, so the caller's
        # function key has no legitimate place in any output.
        Secret("function key", (host_env["LOCAL_FUNCTION_KEY"],)),
    ]
    covered = {secret.name for secret in found}
    missing = [spec.name for spec in SPECS if spec.secret and spec.name not in covered]
    assert not missing, f"secret settings the scan does not know: {missing}"
    return found


# -- the outputs ---------------------------------------------------------------------------------------------
@dataclass
class Recorder:
    """Every answer the host gave (the session's response hook)."""

    answers: list[requests.Response] = field(default_factory=list)

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.answers.append(response)


def texts(value: Any, place: Place) -> Iterator[tuple[Place, str]]:
    yield place, value if isinstance(value, str) else json.dumps(value, default=str)


def request_texts(emulator) -> Iterator[tuple[Place, str]]:
    for req in list(emulator.received):
        where = emulator.name
        yield Place("received", where, "path"), req.path
        for name, value in req.query.items():
            yield Place("received", where, f"query:{name}"), f"{name}={value}"
        for name, value in req.headers.items():
            yield Place("received", where, f"header:{name.lower()}"), value
        yield Place("received", where, "body"), req.body.decode("utf-8", "replace")


def state_texts(env: dict[str, str]) -> Iterator[tuple[Place, str]]:
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    prefix = env["STATE_TABLE_PREFIX"]
    tables = TableServiceClient.from_connection_string(env["STATE_STORAGE_CONNECTION"])
    for table in tables.list_tables():
        if table.name.startswith(prefix):
            for entity in tables.get_table_client(table.name).list_entities():
                yield Place("state", table.name, f"{entity['PartitionKey']}/{entity['RowKey']}"), json.dumps(
                    dict(entity), default=str)
    queues = QueueServiceClient.from_connection_string(env["STATE_STORAGE_CONNECTION"])
    for queue in queues.list_queues():
        for message in queues.get_queue_client(queue.name).peek_messages(max_messages=32):
            content = message.content or ""
            try:
                content += " " + base64.b64decode(content).decode("utf-8", "replace")
            except ValueError:
                pass
            yield Place("state", f"queue {queue.name}", message.id), content


def all_outputs(stack, host: HostProcess, recorder: Recorder, callbacks: CallbackReceiver,
                incidents: list[str]) -> Iterator[tuple[Place, str]]:
    for answer in recorder.answers:
        where = f"{answer.request.method} {urlsplit(answer.url).path} -> {answer.status_code}"
        for name, value in answer.headers.items():
            yield Place("response", where, f"header:{name.lower()}"), value
        yield Place("response", where, "body"), answer.text
    for number, line in enumerate(host.output.splitlines(), 1):
        yield Place("log", "host output", f"line {number}"), line
    for incident_id in incidents:
        resource = stack.arm.incident(incident_id)
        yield from texts(resource, Place("incident", incident_id.rsplit("/", 1)[-1], "properties and labels"))
        for comment in stack.arm.comments(incident_id):
            yield from texts(comment, Place("incident", incident_id.rsplit("/", 1)[-1], f"comment {comment['name']}"))
    for ticket in stack.snow.records():
        for name, value in ticket.items():
            yield Place("ticket", ticket["number"], name), value
    for entry in stack.snow.journal():
        yield from texts(entry, Place("journal", entry["element_id"], entry["sys_id"]))
    for message in stack.teams.messages:
        yield from texts(message, Place("teams", "message", "card"))
    for message in stack.slack.messages:
        yield from texts(message, Place("slack", "message", "blocks"))
    for mail in stack.outbox.sent:
        yield from texts(mail, Place("mail", ",".join(mail["to"]), "message"))
    for emulator in [*stack.emulators, callbacks]:
        yield from request_texts(emulator)
    yield from state_texts(host.env)


def leaks(found: list[Secret], outputs: Iterator[tuple[Place, str]]) -> tuple[list[str], int]:
    """Every occurrence of a secret outside its legitimate destination; and how many texts were searched."""
    forms = [(secret, form, how) for secret in found for form, how in secret.forms().items()]
    problems, searched = [], 0
    for place, text in outputs:
        searched += 1
        lowered = text.lower()
        for secret, form, how in forms:
            if form in lowered:
                if secret.allowed(place):
                    secret.seen_where_allowed += 1
                else:
                    at = lowered.index(form)
                    problems.append(f"{secret.name} ({how}) in {place}: …{text[max(0, at - 60):at + 20]}…")
    return problems, searched


def test_the_scan_finds_planted_secrets():
    """The scanner itself: each derived form is found, and an allowed place is not a leak."""
    key = Secret("KEY", ("s3cret-value/+=",), lambda place: place.part == "header:x-apikey")
    planted = [
        (Place("log", "host", "line 1"), "calling https://x/?k=s3cret-value%2F%2B%3D"),
        (Place("incident", "i", "comment"), json.dumps({"m": base64.b64encode(b"s3cret-value/+=").decode()})),
        (Place("received", "vt", "header:x-apikey"), "s3cret-value/+="),
        (Place("ticket", "INC1", "description"), "S3CRET-VALUE/+="),
    ]
    problems, searched = leaks([key], iter(planted))
    assert searched == 4 and len(problems) == 3 and key.seen_where_allowed == 1
    assert "url-encoded" in problems[0] and "base64" in problems[1] and "ticket INC1 [description]" in problems[2]


# -- the actions -----------------------------------------------------------------------------------------------
def fresh(**properties: Any) -> dict:
    """The sample incident (IPs, host ws-fin-0042, user Adele) under a new id and number."""
    return fresh_incident(**properties)


def with_ip(body: dict, address: str) -> dict:
    """The incident with one more public IP entity (a VirusTotal lookup no cache answers)."""
    body["object"]["properties"]["relatedEntities"].append(
        {"kind": "Ip", "properties": {"address": address, "friendlyName": address}})
    return body


def public_ip() -> str:
    """An address no earlier run looked up (the verdict cache is shared by the session's hosts)."""
    return f"2001:db8:{secrets.token_hex(2)}::{secrets.randbelow(9000) + 1:x}"


@pytest.fixture(scope="module")
def leak_host(stack):
    stack.vt.api_keys.add(VT_KEY)
    stack.snow.users[SNOW_USER] = SNOW_PASSWORD
    env = stack.env(**sync_settings(), VIRUSTOTAL_API_KEY=VT_KEY, SERVICENOW_USERNAME=SNOW_USER,
                    SERVICENOW_PASSWORD=SNOW_PASSWORD, SERVICENOW_WEBHOOK_SECRET=WEBHOOK_SECRET,
                    APPROVAL_SIGNING_KEY=SIGNING_KEY, AZURE_CLIENT_SECRET=CLIENT_SECRET,
                    AZURE_TENANT_ID="00000000-0000-0000-0000-000000000001", LOCAL_LOG_LEVEL="DEBUG")
    process = HostProcess(env=env, keep_lines=None).start()
    try:
        yield SyncClient(process, stack)
    finally:
        process.stop()
        stack.vt.api_keys.discard(VT_KEY)
        stack.snow.users.pop(SNOW_USER, None)


def run_every_action(stack, client: SyncClient, callbacks: CallbackReceiver) -> list[str]:
    """Happy paths and failure paths of every action; returns the incidents touched."""
    incidents: list[str] = []

    def incident(**properties: Any) -> dict:
        body = with_ip(fresh(**properties), public_ip())
        incidents.append(stack.arm.seed_from_trigger(body))
        return body

    def ok(response: requests.Response, *statuses: int) -> requests.Response:
        assert response.status_code in (statuses or (200,)), (response.request.url, response.status_code, response.text)
        return response

    http, key = client.http, {"x-functions-key": client.host.function_key}
    ok(http.get(f"{client.host.url}/api/health", timeout=30))

    # Enrichment: verdicts and a comment; VirusTotal's quota (deferred to the queue, completed later);
    # a key VirusTotal rejects.
    main = incident()
    ok(client.post("enrichment/ip-reputation", main))
    deferred = incident()
    address = deferred["object"]["properties"]["relatedEntities"][-1]["properties"]["address"]
    stack.vt.fail(429, times=1, path=re.escape(address.split("::")[0]), retry_after=1,
                  body={"error": {"code": "QuotaExceededError", "message": "quota"}})
    ok(client.post("enrichment/ip-reputation", deferred))
    wait_for(lambda: any(r.status == 200 and address.split("::")[0] in r.path for r in stack.vt.received), timeout=30)
    stack.vt.api_keys.discard(VT_KEY)
    try:
        rejected = ok(client.post("enrichment/ip-reputation", incident()), 500)
        assert "VIRUSTOTAL_API_KEY" in rejected.text
    finally:
        stack.vt.api_keys.add(VT_KEY)

    # Sync: create the ticket, a push from the business rule, the poll timer, a forged push, ServiceNow 401.
    created = ok(client.outbound(main)).json()
    sys_id = created["ticket"]["sysId"]
    stack.snow.update_as(sys_id, "megan.bowen", work_notes="Desk: looking at it", urgency="2")
    body = json.dumps({"sys_id": sys_id, "sys_mod_count": stack.snow.record(sys_id)["sys_mod_count"]}).encode()
    ok(http.post(f"{client.host.url}/api/sync/servicenow/inbound", data=body, timeout=60,
                 headers={**key, "Content-Type": "application/json", SIGNATURE_HEADER: sign(body, WEBHOOK_SECRET)}))
    ok(http.post(f"{client.host.url}/api/sync/servicenow/inbound", data=body, timeout=60,
                 headers={**key, "Content-Type": "application/json", SIGNATURE_HEADER: sign(body, "guess")}), 401)
    stack.snow.update_as(sys_id, "megan.bowen", comments="Desk: user called back")
    client.poll()
    stack.snow.fail(401, times=20)
    try:
        ok(client.outbound(incident()), 500)
    finally:
        stack.snow.clear_faults()

    # Notify: both channels; Slack revoked; Teams refusing; both unreachable.
    ok(client.post("orchestration/notify", main))
    stack.slack.revoke()
    try:
        ok(client.post("orchestration/notify", incident()), 500)
    finally:
        stack.slack.revoked = False
    stack.teams.fail(401, times=5)
    ok(client.post("orchestration/notify", incident()), 500, 502)
    stack.teams.clear_faults()
    with stack.slack.offline(), stack.teams.offline():
        ok(client.post("orchestration/notify", incident()), 502)

    # Approvals: ask (mail, Teams, Slack), a scanner's GET, the approver's POST, a forged link, a cancelled one.
    callback = callbacks.new_url()
    ok(client.post("orchestration/approvals", {"callbackUrl": callback, "incident": main,
                                               "choices": ["Block", "Ignore"], "question": "Block?"}), 200, 201)
    (mail,) = stack.outbox.to(APPROVER)
    block = link_for(links_in(mail["body"]), "Block")
    ok(http.get(block, timeout=30, allow_redirects=False), 302)  # not signed in: to the sign-in
    approver = person(stack, client.host.url, APPROVER)
    ok(approver.post(block.replace("sig=", "sig=x"), data={"confirm": "Block"}, timeout=30), 403)
    ok(press(approver, block, "Block"))
    wait_for(lambda: callbacks.bodies(callback), timeout=30)
    other = callbacks.new_url()
    ok(client.post("orchestration/approvals", {"callbackUrl": other, "incident": incident()}), 200, 201)
    ok(http.delete(f"{client.host.url}/api/orchestration/approvals", json={"callbackUrl": other}, headers=key,
                   timeout=30))
    ok(http.post(f"{client.host.url}/admin/functions/approval_sweep", json={"input": ""}, timeout=30,
                 headers={"x-functions-key": client.host.master_key}), 202)

    # Response: isolation (202 + polling), Entra user actions, IP blocks and the block list; refusals.
    isolated = ok(client.post("response/mde/isolate", main), 200, 202)
    if isolated.status_code == 202:
        ok(http.get(isolated.headers["Location"], timeout=30), 200, 202)
    ok(client.post("response/mde/release", main), 200, 202)
    for action in ("confirm-compromised", "revoke-sessions", "disable-user"):
        ok(client.post(f"response/entra/{action}", main))
    stack.graph.fail(403, times=10, body={"error": {"code": "Authorization_RequestDenied", "message": "denied"}})
    ok(client.post("response/entra/disable-user", incident()), 403, 500, 502)
    stack.graph.clear_faults()
    stack.mde.fail(401, times=10)
    ok(client.post("response/mde/isolate", incident()), 500, 502)
    stack.mde.clear_faults()
    ok(client.post("response/block-ip", main))
    ok(client.get("response/blocklist"))
    ok(client.post("response/unblock-ip", main))

    # Close the incident and its ticket; a malformed call.
    ok(client.post("orchestration/close-incident", {**main, "classification": "TruePositive",
                                                     "classificationReason": "SuspiciousActivity"}))
    ok(client.post("enrichment/ip-reputation", raw=b"{not json"), 400)
    time.sleep(0.5)  # let the last log lines arrive
    return incidents


@dataclass
class Played:
    """Everything every action produced, collected once for the tests below."""

    found: list[Secret]
    outputs: list[tuple[Place, str]]
    answers: int
    log: str


@pytest.fixture(scope="module")
def played(stack, leak_host) -> Played:
    stack.reset()
    stack.vt.api_keys.add(VT_KEY)
    recorder = Recorder()
    leak_host.http.hooks["response"].append(recorder.hook)
    with CallbackReceiver() as callbacks:
        incidents = run_every_action(stack, leak_host, callbacks)
        outputs = list(all_outputs(stack, leak_host.host, recorder, callbacks, incidents))
    return Played(secrets_of(stack, leak_host.host.env), outputs, len(recorder.answers), leak_host.host.output)


def test_no_secret_in_any_output(played):
    problems, searched = leaks(played.found, iter(played.outputs))
    assert not problems, f"{len(problems)} leak(s):\n" + "\n".join(problems[:40])
    # Not vacuous: the secrets did travel, to where they belong.
    used = {s.name: s.seen_where_allowed for s in played.found if s.name in (
        "VIRUSTOTAL_API_KEY", "SERVICENOW_PASSWORD", "TEAMS_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "IDENTITY_HEADER")}
    assert all(used.values()), used
    assert played.answers >= 30 and searched > 1000, (played.answers, searched)
    print(f"secret scan: {len(played.found)} secrets, {sum(len(s.forms()) for s in played.found)} forms, "
          f"{played.answers} answers, {searched} texts searched, 0 leaks")


OUR_LOGGERS = re.compile(r"^\S+ \S+ [A-Z]+ (core|enrichment|sync|response|orchestration)\.")


def test_every_log_line_of_the_pack_names_its_action(played):
    """The same run's log: each line our modules wrote carries the action (and the incident, once known)."""
    lines = [line for line in played.log.splitlines() if OUR_LOGGERS.match(line)]
    assert len(lines) > 50
    dimensions = []
    for line in lines:
        at = line.rfind(' {"action": ')  # the host appends the record's custom dimensions as JSON
        assert at > 0 and line.endswith("}"), f"a log line without its action: {line}"
        dimensions.append(json.loads(line[at + 1:]))
    with_incident = [d for d in dimensions if d.get("incident_id")]
    assert len(with_incident) > len(dimensions) // 2
    assert {d["action"] for d in dimensions} >= {"ip_reputation", "servicenow_outbound", "servicenow_inbound",
                                                  "orchestration_notify", "approval_subscribe", "block_ip"}
