"""The local playbook runner over real HTTP, against a small stand-in for the function host.

The workflow definitions are the ones Bicep deploys (``infra/playbooks/``) or small ones built
here in the same shape; the stand-in records what it received, so the tests assert on effects.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from localdev.emulators.base import Emulator, Request, Response
from localdev.playbooks import (
    SECURED,
    ExpressionContext,
    ExpressionError,
    PlaybookError,
    PlaybookRunner,
    RetryPolicy,
    bicep_parameters,
    evaluate,
    load_playbook,
    parse_duration,
)
from tests.conftest import wait_for
from tests.fixtures import sample

PLAYBOOKS = Path(__file__).resolve().parents[2] / "infra" / "playbooks"
ENRICHMENT = load_playbook(PLAYBOOKS / "enrichment-ip-reputation.json")
KEY = "local-function-key-123"
BASE = "@{parameters('functionBaseUrl')}"


class FakeFunctionHost(Emulator):
    """Stands in for the function app and for services a playbook talks to (jobs, approvals)."""

    name = "fake-function-host"

    def __init__(self) -> None:
        super().__init__()
        self.route("POST", r"/api/enrichment/reputation", self._enrich)
        self.route("POST", r"/api/notify", self._notify)
        self.route("POST", r"/api/escalate", lambda r: Response(200, {"ok": True}))
        self.route("POST", r"/api/jobs", self._start_job)
        self.route("GET", r"/api/jobs/(?P<id>[^/]+)", self._job)
        self.route("POST", r"/api/approvals/subscribe", self._subscribe)
        self.route("POST", r"/api/approvals/unsubscribe", lambda r: Response(200))
        # A managed connector's operations (ApiConnection actions): the local stand-in of a connection.
        self.route("GET", r"/connector/Incidents/(?P<rest>.+)", self._connector_get)
        self.route("POST", r"/connector/Incidents/Comment", lambda r: Response(200, {"echo": r.json}))
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.verdict = "malicious"
        self.busy_polls = 1            # 202 answers to polls before the job is done
        self.job_outcome = 200
        self.decision: dict | None = {"decision": "approve", "by": "analyst@contoso.com"}
        self.callback_answers: list[int] = []
        self.callbacks: list[str] = []
        self.answer_late = False       # post the decision to the last callback URL when notified
        self._polls: dict[str, int] = {}

    def _connector_get(self, request: Request) -> Response:
        incident = ("/subscriptions/s/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w/providers/"
                    "Microsoft.SecurityInsights/Incidents/" + request.params["rest"])
        return Response(200, {"id": incident, "properties": {"incidentNumber": 4712}, "query": dict(request.query)})

    def _enrich(self, request: Request) -> Response:
        number = request.json["object"]["properties"]["incidentNumber"]
        return Response(200, {"incidentNumber": number, "worstVerdict": self.verdict, "complete": True})

    def _notify(self, request: Request) -> Response:
        if self.answer_late and self.callbacks:
            self.callback_answers.append(requests.post(self.callbacks[-1], json={"decision": "late"},
                                                       timeout=5).status_code)
        return Response(200, {"ok": True})

    def _start_job(self, request: Request) -> Response:
        job = f"job-{len(self._polls) + 1}"
        self._polls[job] = 0
        return Response(202, {"id": job}, {"Location": f"/api/jobs/{job}", "Retry-After": "2"})

    def _job(self, request: Request) -> Response:
        job = request.params["id"]
        self._polls[job] += 1
        if self._polls[job] <= self.busy_polls:
            return Response(202, {"state": "Running"}, {"Location": f"/api/jobs/{job}", "Retry-After": "1"})
        if self.job_outcome != 200:
            return Response(self.job_outcome, {"error": {"code": "JobFailed", "message": "the job failed"}})
        return Response(200, {"id": job, "state": "Succeeded"})

    def _subscribe(self, request: Request) -> Response:
        callback, decision = request.json["callbackUrl"], self.decision
        self.callbacks.append(callback)
        if decision is not None:  # the analyst answers a moment later, as a real approval service would
            def answer() -> None:
                time.sleep(0.05)
                self.callback_answers.append(requests.post(callback, json=decision, timeout=5).status_code)
            threading.Thread(target=answer, daemon=True).start()
        return Response(201, {"subscriptionId": "sub-1"})


@pytest.fixture(scope="module")
def server():
    with FakeFunctionHost() as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


def runner(definition: dict, fake: FakeFunctionHost, **kw) -> PlaybookRunner:
    return PlaybookRunner(definition, bicep_parameters(fake.url, KEY), **kw)


def workflow(actions: dict) -> dict:
    """A definition shaped like the deployed playbook (same parameters and trigger), other actions."""
    definition = copy.deepcopy(ENRICHMENT)
    definition["actions"] = actions
    return definition


def http(path: str, *, body=None, run_after: dict | None = None, retry: dict | None = None, **extra) -> dict:
    inputs = {"method": "POST", "uri": f"{BASE}{path}", "headers": {"x-functions-key": "@parameters('functionKey')"}}
    if body is not None:
        inputs["body"] = body
    if retry is not None:
        inputs["retryPolicy"] = retry
    return {"type": "Http", "inputs": inputs, "runAfter": run_after or {}, **extra}


def compose(value, run_after: dict | None = None) -> dict:
    return {"type": "Compose", "inputs": value, "runAfter": run_after or {}}


# --- the deployed enrichment playbook ----------------------------------------------------------------

def test_enrichment_playbook_posts_the_trigger_body_with_the_function_key(fake):
    trigger = sample("incident-trigger.json")
    result = runner(ENRICHMENT, fake).run(trigger)

    assert result.status == "Succeeded"
    calls = fake.requests_to("POST", r"^/api/enrichment/reputation$")
    assert len(calls) == 1 and len(fake.received) == 1
    assert calls[0].json == trigger                       # exactly @triggerBody()
    assert calls[0].headers["x-functions-key"] == KEY
    assert calls[0].headers["Content-Type"] == "application/json"
    enrich = result.actions["Enrich_IP_reputation"]
    assert (enrich.status, enrich.attempts, enrich.waits) == ("Succeeded", 1, [])
    assert enrich.outputs["statusCode"] == 200
    assert enrich.body == {"incidentNumber": 4711, "worstVerdict": "malicious", "complete": True}
    # secureData hides the inputs (the key) from the run record, as in the run history
    assert enrich.inputs == SECURED and KEY not in repr(result)
    assert result.trigger["outputs"]["body"] == trigger


def test_timeline_tells_what_the_playbook_did_without_secrets(fake):
    result = runner(ENRICHMENT, fake).run(sample("incident-trigger.json"))
    text = "\n".join(result.timeline)
    assert "trigger 'Microsoft_Sentinel_incident' (ApiConnectionWebhook) fired" in result.timeline[0]
    assert f"Enrich_IP_reputation: POST {fake.url}/api/enrichment/reputation -> 200 OK" in text
    assert "Enrich_IP_reputation: Succeeded" in text
    assert result.timeline[-1].startswith("run Succeeded")
    assert KEY not in text


def test_parameters_follow_the_definition(fake):
    with pytest.raises(PlaybookError, match="functionKey"):
        PlaybookRunner(ENRICHMENT, {"functionBaseUrl": fake.url})
    with pytest.raises(PlaybookError, match="extra"):
        PlaybookRunner(ENRICHMENT, {**bicep_parameters(fake.url, KEY), "extra": 1})
    with pytest.raises(PlaybookError, match=r"functionKey.*SecureString"):
        PlaybookRunner(ENRICHMENT, {"functionBaseUrl": fake.url, "functionKey": 123})
    # $connections has a defaultValue: the two function parameters are enough
    only = PlaybookRunner(ENRICHMENT, {"functionBaseUrl": fake.url, "functionKey": KEY})
    assert only.parameters["$connections"] == {}
    assert only.run(sample("incident-trigger.json")).status == "Succeeded"


# --- retries -----------------------------------------------------------------------------------------

def test_429_is_retried_after_the_retry_after_header(fake):
    fake.fail(429, times=1, retry_after=3, path="enrichment/reputation")
    result = runner(ENRICHMENT, fake, time_scale=0.01).run(sample("incident-trigger.json"))

    enrich = result.actions["Enrich_IP_reputation"]
    assert (result.status, enrich.status, enrich.attempts) == ("Succeeded", "Succeeded", 2)
    assert enrich.waits == [3.0]                          # Retry-After, not the policy's PT10S
    first, second = fake.requests_to("POST", "enrichment/reputation")
    assert 0.025 <= second.at - first.at < 1.0            # 3 s scaled by 0.01
    assert any("-> 429 Too Many Requests; retry 1/4 in 3s (Retry-After)" in line for line in result.timeline)


def test_500_is_retried_with_the_playbooks_exponential_policy(fake):
    fake.fail(500, times=2, path="enrichment/reputation")
    result = runner(ENRICHMENT, fake, time_scale=0.001).run(sample("incident-trigger.json"))

    enrich = result.actions["Enrich_IP_reputation"]
    assert (enrich.status, enrich.attempts) == ("Succeeded", 3)
    # interval PT10S, minimumInterval PT5S: retry 1 in [5, 10] s, retry 2 in [10, 20] s
    assert 5 <= enrich.waits[0] <= 10 and 10 <= enrich.waits[1] <= 20
    assert len(fake.requests_to("POST", "enrichment/reputation")) == 3


def test_the_default_policy_is_four_exponential_retries(fake):
    fake.fail(503, times=10, path="notify")
    result = runner(workflow({"Call": http("/api/notify")}), fake, time_scale=0.001).run({})

    call = result.actions["Call"]
    assert (call.status, call.attempts, call.error["code"]) == ("Failed", 5, "ServiceUnavailable")
    low_high = [(5, 7.5), (7.5, 15), (15, 30), (30, 45)]
    assert all(low <= wait <= high for wait, (low, high) in zip(call.waits, low_high, strict=True))
    assert call.outputs["statusCode"] == 503


@pytest.mark.parametrize(("status", "policy", "attempts"), [
    (400, None, 1),                                       # not transient: never retried
    (500, {"type": "none"}, 1),
    (500, {"type": "fixed", "count": 2, "interval": "PT5S"}, 3),
])
def test_what_is_retried_and_how_often(fake, status, policy, attempts):
    fake.fail(status, times=10, path="notify")
    result = runner(workflow({"Call": http("/api/notify", retry=policy)}), fake, time_scale=0.001).run({})
    assert (result.status, result.actions["Call"].attempts) == ("Failed", attempts)
    if policy and policy["type"] == "fixed":
        assert result.actions["Call"].waits == [5.0, 5.0]


def test_connection_failures_are_retried_then_fail_the_action(fake):
    with socket.socket() as probe:       # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    action = http("/api/notify", retry={"type": "fixed", "count": 1, "interval": "PT5S"})
    action["inputs"]["uri"] = f"http://127.0.0.1:{port}/api/notify"
    result = runner(workflow({"Call": action}), fake).run({})
    call = result.actions["Call"]
    assert (call.status, call.attempts, call.error["code"]) == ("Failed", 2, "HttpRequestFailed")


def test_exhausted_retries_fail_the_action_skip_its_dependants_and_run_the_failure_branch(fake):
    fake.fail(500, times=10, path="enrichment/reputation")
    definition = workflow({
        "Call": http("/api/enrichment/reputation", body="@triggerBody()",
                     retry={"type": "fixed", "count": 2, "interval": "PT5S"}),
        "Use_result": compose("@body('Call')?['worstVerdict']", {"Call": ["Succeeded"]}),
        "Then": compose("after", {"Use_result": ["Succeeded"]}),
        "Notify_failure": http("/api/notify", run_after={"Call": ["Failed"]},
                               body={"status": "@{actions('Call')['status']}",
                                     "code": "@outputs('Call')?['statusCode']"}),
    })
    result = runner(definition, fake).run(sample("incident-trigger.json"))

    statuses = {name: action.status for name, action in result.actions.items()}
    assert statuses == {"Call": "Failed", "Use_result": "Skipped", "Then": "Skipped", "Notify_failure": "Succeeded"}
    assert result.actions["Call"].attempts == 3
    assert result.actions["Call"].error["code"] == "InternalServerError"
    assert fake.requests_to("POST", "notify")[0].json == {"status": "Failed", "code": 500}
    # a branch ending in a Skipped action takes its predecessor's status: the run failed
    assert result.status == "Failed" and result.error["code"] == "InternalServerError"


def test_a_handled_failure_leaves_the_run_succeeded(fake):
    fake.fail(404, path="notify")
    definition = workflow({
        "Call": http("/api/notify", retry={"type": "none"}),
        "Catch": compose("handled", {"Call": ["Failed", "TimedOut"]}),
    })
    result = runner(definition, fake).run({})
    assert (result.actions["Call"].status, result.actions["Catch"].status) == ("Failed", "Succeeded")
    assert result.status == "Succeeded"


# --- asynchronous pattern ----------------------------------------------------------------------------

def test_202_with_location_is_polled_until_done(fake):
    fake.busy_polls = 1
    result = runner(workflow({"Job": http("/api/jobs", body={"run": True})}), fake).run({})

    job = result.actions["Job"]
    assert (job.status, job.attempts, job.polls) == ("Succeeded", 1, 2)
    assert job.outputs["statusCode"] == 200 and job.body == {"id": "job-1", "state": "Succeeded"}
    assert job.waits == [2.0, 1.0]                        # each 202's Retry-After
    assert [r.method for r in fake.received] == ["POST", "GET", "GET"]
    assert fake.received[1].path == "/api/jobs/job-1"     # relative Location resolved against the request


def test_disable_async_pattern_takes_the_202_as_the_answer(fake):
    action = http("/api/jobs", operationOptions="DisableAsyncPattern")
    result = runner(workflow({"Job": action}), fake).run({})
    job = result.actions["Job"]
    assert (job.status, job.polls, job.outputs["statusCode"]) == ("Succeeded", 0, 202)
    assert [r.method for r in fake.received] == ["POST"]


def test_a_failed_asynchronous_operation_fails_the_action(fake):
    fake.busy_polls, fake.job_outcome = 0, 409
    result = runner(workflow({"Job": http("/api/jobs")}), fake).run({})
    job = result.actions["Job"]
    assert (job.status, job.error["code"], job.polls) == ("Failed", "Conflict", 1)


# --- If ----------------------------------------------------------------------------------------------

def if_definition(expression) -> dict:
    return workflow({
        "Enrich": http("/api/enrichment/reputation", body="@triggerBody()"),
        "Is_malicious": {
            "type": "If", "runAfter": {"Enrich": ["Succeeded"]}, "expression": expression,
            "actions": {"Escalate": http("/api/escalate", body={
                "incident": "@triggerBody()?['object']?['properties']?['incidentNumber']",
                "verdict": "@body('Enrich')?['worstVerdict']"})},
            "else": {"actions": {"Record": compose("verdict @{body('Enrich')?['worstVerdict']}: nothing to do")}},
        },
    })


CONDITION_OBJECT = {"and": [{"equals": ["@body('Enrich')?['worstVerdict']", "malicious"]},
                            {"not": {"equals": ["@body('Enrich')?['complete']", False]}}]}


@pytest.mark.parametrize("expression", [CONDITION_OBJECT, "@equals(body('Enrich')?['worstVerdict'], 'malicious')"],
                         ids=["condition-object", "expression-string"])
@pytest.mark.parametrize("verdict", ["malicious", "clean"])
def test_if_branches_on_the_worst_verdict(fake, expression, verdict):
    fake.verdict = verdict
    result = runner(if_definition(expression), fake).run(sample("incident-trigger.json"))

    assert result.status == "Succeeded"
    assert result.actions["Is_malicious"].status == "Succeeded"
    assert result.actions["Is_malicious"].outputs == {"expression": verdict == "malicious"}
    escalations = fake.requests_to("POST", "escalate")
    if verdict == "malicious":
        assert escalations[0].json == {"incident": 4711, "verdict": "malicious"}
        assert (result.actions["Escalate"].status, result.actions["Record"].status) == ("Succeeded", "Skipped")
    else:
        assert not escalations
        assert (result.actions["Escalate"].status, result.actions["Record"].status) == ("Skipped", "Succeeded")
        assert result.actions["Record"].outputs == "verdict clean: nothing to do"


def test_a_condition_that_cannot_be_evaluated_fails_the_if(fake):
    result = runner(if_definition({"greater": ["@body('Enrich')?['worstVerdict']", 3]}), fake).run(
        sample("incident-trigger.json"))
    condition = result.actions["Is_malicious"]
    assert condition.status == "Failed" and condition.error["code"] == "InvalidTemplate"
    assert "greater() compares two numbers or two strings" in condition.error["message"]
    assert result.actions["Escalate"].status == result.actions["Record"].status == "Skipped"


# --- HttpWebhook -------------------------------------------------------------------------------------

def webhook_definition(timeout: str) -> dict:
    return workflow({
        "Wait_for_approval": {
            "type": "HttpWebhook", "runAfter": {}, "limit": {"timeout": timeout},
            "inputs": {
                "subscribe": {"method": "POST", "uri": f"{BASE}/api/approvals/subscribe",
                              "headers": {"x-functions-key": "@parameters('functionKey')"},
                              "body": {"callbackUrl": "@{listCallbackUrl()}",
                                       "incident": "@{triggerBody()?['object']?['properties']?['incidentNumber']}"}},
                "unsubscribe": {"method": "POST", "uri": f"{BASE}/api/approvals/unsubscribe",
                                "body": {"callbackUrl": "@{listCallbackUrl()}"}},
            },
        },
        "Apply": compose("@body('Wait_for_approval')?['decision']", {"Wait_for_approval": ["Succeeded"]}),
        "On_timeout": http("/api/notify", run_after={"Wait_for_approval": ["TimedOut"]},
                           body={"status": "@{actions('Wait_for_approval')?['status']}"}),
    })


def test_http_webhook_waits_for_the_callback(fake):
    playbook = runner(webhook_definition("PT1H"), fake)
    result = playbook.run(sample("incident-trigger.json"))

    wait = result.actions["Wait_for_approval"]
    assert (result.status, wait.status, wait.attempts) == ("Succeeded", "Succeeded", 1)
    assert wait.body == {"decision": "approve", "by": "analyst@contoso.com"}
    assert result.actions["Apply"].outputs == "approve"
    assert result.actions["On_timeout"].status == "Skipped"
    subscribe = fake.requests_to("POST", "/subscribe$")[0].json
    assert subscribe["incident"] == "4711"
    assert subscribe["callbackUrl"].startswith("http://127.0.0.1:")
    # the decision's sender records the callback's answer after the runner has already moved on
    wait_for(lambda: fake.callback_answers == [200], timeout=5)
    # the webhook action unsubscribes once it has finished, with the same callback URL
    assert fake.requests_to("POST", "unsubscribe")[0].json == {"callbackUrl": subscribe["callbackUrl"]}
    # every run gets its own callback URL; the old one no longer answers
    with playbook:
        assert playbook.run(sample("incident-trigger.json")).status == "Succeeded"
    second = fake.requests_to("POST", "/subscribe$")[1].json["callbackUrl"]
    assert second != subscribe["callbackUrl"]
    wait_for(lambda: fake.callback_answers == [200, 200], timeout=5)


def test_http_webhook_times_out_and_unsubscribes(fake):
    fake.decision, fake.answer_late = None, True          # nobody answers in time
    playbook = runner(webhook_definition("PT5S"), fake, time_scale=0.01)
    started = time.monotonic()
    result = playbook.run(sample("incident-trigger.json"))
    assert time.monotonic() - started < 1                 # PT5S scaled by 0.01

    wait = result.actions["Wait_for_approval"]
    assert (wait.status, wait.error["code"]) == ("TimedOut", "ActionTimedOut")
    assert result.actions["Apply"].status == "Skipped"
    assert result.actions["On_timeout"].status == "Succeeded"
    assert fake.requests_to("POST", "notify")[0].json == {"status": "TimedOut"}
    callback = fake.requests_to("POST", "/subscribe$")[0].json["callbackUrl"]
    assert fake.requests_to("POST", "unsubscribe")[0].json == {"callbackUrl": callback}
    assert fake.callback_answers == [404]                 # answered late (during On_timeout): nobody waits
    assert requests.post(callback, json={"decision": "later"}, timeout=5).status_code == 404
    playbook.close()                                      # stops the callback server
    with pytest.raises(requests.ConnectionError):
        requests.post(callback, json={"decision": "too late"}, timeout=2)
    assert result.status == "Failed"


# --- other actions -----------------------------------------------------------------------------------

def test_variables_compose_and_scope(fake):
    fake.fail(400, path="notify")
    definition = workflow({
        "Init": {"type": "InitializeVariable", "runAfter": {},
                 "inputs": {"variables": [{"name": "count", "type": "integer", "value": 1},
                                          {"name": "ips", "type": "array"}]}},
        "Add": {"type": "IncrementVariable", "runAfter": {"Init": ["Succeeded"]},
                "inputs": {"name": "count", "value": 2}},
        "Push": {"type": "AppendToArrayVariable", "runAfter": {"Add": ["Succeeded"]},
                 "inputs": {"name": "ips", "value": "203.0.113.7"}},
        "Try": {"type": "Scope", "runAfter": {"Push": ["Succeeded"]},
                "actions": {"Call": http("/api/notify", retry={"type": "none"}),
                            "Never": compose("x", {"Call": ["Succeeded"]})}},
        "Catch": compose("@{variables('count')} for @{join(variables('ips'), ',')} after @{actions('Try')['status']}",
                         {"Try": ["Failed"]}),
    })
    result = runner(definition, fake).run({})
    assert result.actions["Try"].status == "Failed"
    assert result.actions["Never"].status == "Skipped"
    assert result.actions["Catch"].outputs == "3 for 203.0.113.7 after Failed"
    assert result.status == "Succeeded"


@pytest.mark.parametrize("run_status", ["Cancelled", "Failed", "Succeeded"])
def test_terminate_sets_the_run_status_and_stops_the_run(fake, run_status):
    definition = workflow({
        "Stop": {"type": "Terminate", "runAfter": {},
                 "inputs": {"runStatus": run_status, "runError": {"code": "Stopped", "message": "by the playbook"}}},
        "After": http("/api/notify", run_after={"Stop": ["Succeeded"]}),
    })
    result = runner(definition, fake).run({})
    assert result.status == run_status
    assert result.actions["After"].status == "Skipped" and not fake.received
    assert result.error == ({"code": "Stopped", "message": "by the playbook"} if run_status == "Failed" else None)


def test_the_definition_is_checked_when_the_runner_is_built(fake):
    params = bicep_parameters(fake.url, KEY)
    with pytest.raises(PlaybookError, match=r"'Each'.*Foreach.*not supported"):
        PlaybookRunner(workflow({"Each": {"type": "Foreach", "foreach": "@createArray()", "actions": {},
                                          "runAfter": {}}}), params)
    with pytest.raises(PlaybookError, match=r"'Send'.*ApiConnection needs inputs with host.connection.name"):
        PlaybookRunner(workflow({"Send": {"type": "ApiConnection", "inputs": {}, "runAfter": {}}}), params)
    with pytest.raises(PlaybookError, match="'B' runs after 'Nope'"):
        PlaybookRunner(workflow({"B": compose("x", {"Nope": ["Succeeded"]})}), params)
    with pytest.raises(PlaybookError, match="Done"):
        PlaybookRunner(workflow({"A": compose("x"), "B": compose("x", {"A": ["Done"]})}), params)
    with pytest.raises(PlaybookError, match="cycle"):
        PlaybookRunner(workflow({"A": compose("x", {"B": ["Succeeded"]}), "B": compose("x", {"A": ["Succeeded"]})}),
                       params)
    with pytest.raises(ExpressionError, match=r"action 'A'.*unterminated string.*in expression \"concat\('a\)\""):
        PlaybookRunner(workflow({"A": compose("@concat('a)")}), params)
    with pytest.raises(PlaybookError, match="count must be an integer from 1 to 90"):
        PlaybookRunner(workflow({"A": http("/api/notify", retry={"type": "fixed", "count": 0, "interval": "PT5S"})}),
                       params)


def test_an_expression_that_fails_at_run_time_fails_its_action(fake):
    definition = workflow({"A": compose("@triggerBody()['missing']"), "B": compose("@body('A')", {"A": ["Succeeded"]})})
    result = runner(definition, fake).run({})
    assert result.actions["A"].status == "Failed"
    assert result.actions["A"].error["code"] == "InvalidTemplate"
    assert "property 'missing' doesn't exist" in result.actions["A"].error["message"]
    assert result.actions["B"].status == "Skipped"


# --- ApiConnection actions and the trigger's connector -------------------------------------------------

CONNECTION = "@parameters('$connections')['azuresentinel']['connectionId']"


def api_connection(method: str, path: str, *, run_after: dict | None = None, **inputs) -> dict:
    return {"type": "ApiConnection", "runAfter": run_after or {},
            "inputs": {"host": {"connection": {"name": CONNECTION}}, "method": method, "path": path, **inputs}}


def connectors(fake: FakeFunctionHost) -> dict[str, str]:
    """The connection ``bicep_parameters`` names, served by the fake's /connector routes."""
    connection = bicep_parameters(fake.url, KEY)["$connections"]["azuresentinel"]["connectionId"]
    return {connection: fake.url + "/connector"}


def test_api_connection_calls_the_stand_in_of_its_connection(fake):
    definition = workflow({
        "Get_incident": api_connection("get", "/Incidents/@{encodeURIComponent('a b')}", queries={"x": "1"}),
        "Comment": api_connection("post", "/Incidents/Comment", run_after={"Get_incident": ["Succeeded"]},
                                  body={"incidentArmId": "@body('Get_incident')?['id']", "message": "hi"}),
    })
    result = runner(definition, fake, connectors=connectors(fake)).run({})
    assert result.status == "Succeeded", result.timeline
    (get,) = fake.requests_to("GET", r"^/connector/Incidents/")
    assert get.path == "/connector/Incidents/a b" and get.query == {"x": "1"}
    assert result["Get_incident"].outputs["statusCode"] == 200
    assert result["Get_incident"].body["properties"]["incidentNumber"] == 4712
    assert result["Comment"].body["echo"] == {"incidentArmId": result["Get_incident"].body["id"], "message": "hi"}


def test_api_connection_retries_like_an_http_action_and_needs_a_stand_in(fake):
    definition = workflow({"Get_incident": api_connection("get", "/Incidents/x")})
    fake.fail(429, path=r"^/connector/", retry_after=2)
    result = runner(definition, fake, connectors=connectors(fake), time_scale=0.001).run({})
    assert result.status == "Succeeded" and result["Get_incident"].attempts == 2
    assert result["Get_incident"].waits == [2.0]
    fake.fail(404, path=r"^/connector/")
    assert runner(definition, fake, connectors=connectors(fake)).run({})["Get_incident"].status == "Failed"
    unconnected = runner(definition, fake).run({})
    assert unconnected.status == "Failed"
    assert unconnected["Get_incident"].error["code"] == "ConnectionNotFound"


class TriggerCheckingStandIn:
    """A connector stand-in that knows what its triggers hand over."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.checked: list[tuple[str, object]] = []

    def trigger_problem(self, path: str, body: object) -> str | None:
        self.checked.append((path, body))
        return None if isinstance(body, dict) and "Entity" in body else "not an entity body"


def test_the_connector_of_the_trigger_says_which_bodies_it_hands_over(fake):
    definition = workflow({"Call": http("/api/notify")})
    definition["triggers"] = {"Microsoft_Sentinel_entity": {
        "type": "ApiConnectionWebhook",
        "inputs": {"host": {"connection": {"name": CONNECTION}}, "body": {"callback_url": "@{listCallbackUrl()}"},
                   "path": "/entity/@{encodeURIComponent('IP')}"}}}
    (connection,) = connectors(fake)
    stand_in = TriggerCheckingStandIn(fake.url + "/connector")
    playbook = runner(definition, fake, connectors={connection: stand_in})
    with pytest.raises(PlaybookError, match=r"'Microsoft_Sentinel_entity' \(/entity/IP\) never fires.*not an entity"):
        playbook.run(sample("incident-trigger.json"))
    assert fake.received == []
    result = playbook.run(sample("entity-trigger-ip.json"))
    assert result.status == "Succeeded" and [path for path, _ in stand_in.checked] == ["/entity/IP", "/entity/IP"]
    assert "the connector's /entity/IP trigger handed over the body" in result.timeline[1]
    # Without a stand-in for the trigger's connection, any body fires it (as before connectors were known).
    assert runner(definition, fake).run({}).status == "Succeeded"


# --- expressions -------------------------------------------------------------------------------------

@pytest.fixture
def ctx():
    return ExpressionContext(
        trigger_body={"object": {"properties": {"incidentNumber": 4711, "severity": "High", "labels": []}},
                      "nothing": None},
        parameters={"functionBaseUrl": "http://127.0.0.1:7071", "limit": 42, "flag": True},
        variables={"ips": ["10.0.0.1", "203.0.113.7"]}, run_name="0858RUN",
        now=lambda: datetime(2026, 11, 20, 10, 1, 31, 441000, tzinfo=UTC))


@pytest.mark.parametrize(("value", "expected"), [
    ("@parameters('limit')", 42),                                            # a whole expression keeps its type
    ("@{parameters('limit')}", "42"),                                        # interpolation is always a string
    ("n=@{parameters('limit')}, f=@{parameters('flag')}, x=@{triggerBody()?['nothing']}.", "n=42, f=True, x=."),
    ("@{parameters('functionBaseUrl')}/api/enrichment/ip-reputation",
     "http://127.0.0.1:7071/api/enrichment/ip-reputation"),
    ("@triggerBody()?['object']?['properties']?['incidentNumber']", 4711),
    ("@triggerBody().object.properties.severity", "High"),
    ("@triggerBody()?['Object']?['PROPERTIES']?['severity']", "High"),  # property names ignore case
    ("@triggerBody()?['nothing']?['deeper']?['still']", None),             # ?[] on null is null
    ("@triggerBody()?['absent']", None),
    ("@coalesce(triggerBody()?['absent'], 'default')", "default"),
    ("@@{not an expression}", "@{not an expression}"),                       # @@ escapes the leading @
    ("@@parameters('limit')", "@parameters('limit')"),
    ("mail @@{x} and @{parameters('limit')}", "mail @{x} and 42"),
    (" @parameters('limit')", " @parameters('limit')"),                     # @ not at the start: plain text
    ("@concat('it''s ', toUpper(triggerBody()?['object']?['properties']?['severity']))", "it's HIGH"),
    ("@toLower(string(length(concat(variables('ips')[1], first(variables('ips'))))))", "19"),
    ("@if(and(equals(parameters('limit'), 42), not(empty(variables('ips')))), last(variables('ips')), 'none')",
     "203.0.113.7"),
    ("@or(contains(variables('ips'), '10.0.0.1'), greater(1, 2))", True),
    ("@contains(triggerBody()?['object']?['properties']?['severity'], 'igh')", True),
    ("@empty(triggerBody()?['object']?['properties']?['labels'])", True),
    ("@int('12')", 12),
    ("@json('{\"a\": [1, 2]}')?['a'][1]", 2),
    ("@encodeUriComponent('a b/c?d=e')", "a%20b%2Fc%3Fd%3De"),
    ("@equals(triggerBody()?['nothing'], '')", True),                        # null compares as ''
    ("@createArray(1, -2, 3.5, true, null)", [1, -2, 3.5, True, None]),
    ("@setProperty(triggerBody()?['object'], 'incidentArmId', 'x')?['incidentArmId']", "x"),
    ("@setProperty(json('{\"a\": 1}'), 'a', 2)", {"a": 2}),
    ("@addProperty(json('{\"a\": 1}'), 'b', null)", {"a": 1, "b": None}),
    ("@removeProperty(json('{\"a\": 1, \"b\": 2}'), 'a')", {"b": 2}),
    ("@utcNow()", "2026-11-20T10:01:31.4410000Z"),
    ("@utcNow('yyyy-MM-dd')", "2026-11-20"),
    ("@workflow().run.name", "0858RUN"),
    ("@TRIGGERBODY()?['object']?['properties']?['incidentNumber']", 4711),  # function names ignore case
    ({"list": ["@parameters('limit')", {"deep": "x@{parameters('limit')}"}], "n": 1},
     {"list": [42, {"deep": "x42"}], "n": 1}),
])
def test_expressions(ctx, value, expected):
    assert evaluate(value, ctx) == expected


def test_guid_is_new_each_time(ctx):
    first, second = evaluate("@guid()", ctx), evaluate("@guid()", ctx)
    assert first != second and len(first) == 36 and len(evaluate("@guid('N')", ctx)) == 32


@pytest.mark.parametrize(("value", "message"), [
    ("@triggerBody()['absent']", "property 'absent' doesn't exist"),
    ("@triggerBody()?['nothing']['deeper']", "cannot select 'deeper' on null"),
    ("@variables('ips')[5]", "index 5 is outside the array"),
    ("@concat('a', 'b'", "expected ')'"),
    ("@concat('a)", "unterminated string literal"),
    ("x @{parameters('limit')", "unterminated '@{' interpolation"),
    ("@eval('1+1')", "the function 'eval' is not supported"),
    ("@__import__('os')", "the function '__import__' is not supported"),
    ("@parameters", "unknown name 'parameters'"),
    ("@parameters('nope')", "the workflow parameter 'nope' is not declared"),
    ("@variables('nope')", "the variable 'nope' is not initialized"),
    ("@body('Nope')", "the workflow has no action named 'Nope'"),
    ("@equals(1)", "equals() takes 2 argument(s), got 1"),
    ("@not('yes')", "not() expects a Boolean"),
    ("@int('1.5')", "int() cannot convert"),
    ("@listCallbackUrl()", "only available in the inputs of an HttpWebhook"),
    ("@parameters('limit') + 1", "unexpected character '+'"),
    ("@", "empty expression"),
    ("@addProperty(json('{\"a\": 1}'), 'a', 2)", "already has the property 'a'"),
    ("@setProperty(variables('ips'), 'a', 2)", "setProperty() expects an object"),
])
def test_expression_errors_name_the_expression(ctx, value, message):
    with pytest.raises(ExpressionError) as caught:
        evaluate(value, ctx)
    assert message in str(caught.value)
    assert "in expression" in str(caught.value)


def test_durations_and_policies():
    assert [parse_duration(d) for d in ("PT10S", "PT1H", "P1D", "PT1M30S", "PT0.5S")] == [10, 3600, 86400, 90, 0.5]
    with pytest.raises(PlaybookError):
        parse_duration("10 seconds")
    policy = RetryPolicy.from_spec({"type": "exponential", "count": 4, "interval": "PT10S"})
    assert (policy.minimum_interval, policy.maximum_interval) == (5, 86400)
    assert RetryPolicy.from_spec(None).count == 4 and RetryPolicy.from_spec({"type": "none"}).count == 0
