"""The response playbooks run by the local playbook runner against the local host: response-isolate-machines.json
(the Logic App's asynchronous pattern polls the function's Location until the isolation is final) and
response-block-indicators.json (files, URLs and domains the enrichment rated, blocked in one HTTP action)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.emulators.defender import WS_FIN_0042 as WS
from localdev.playbooks import SECURED, PlaybookRunner, bicep_parameters, load_playbook
from tests.conftest import HostClient
from tests.fixtures import sample
from tests.response.helpers import (
    dns_entity,
    file_entity,
    fresh_domain,
    fresh_sha256,
    host_entity,
    incident,
    rate,
    url_entity,
)

PLAYBOOKS = Path(__file__).resolve().parents[2] / "infra" / "playbooks"
PLAYBOOK = PLAYBOOKS / "response-isolate-machines.json"
BLOCK_PLAYBOOK = PLAYBOOKS / "response-block-indicators.json"
pytestmark = pytest.mark.e2e


def run(host, body, playbook: Path = PLAYBOOK):
    with PlaybookRunner(load_playbook(playbook), bicep_parameters(host.host.url, host.host.function_key),
                        time_scale=0.001) as runner:
        return runner.run(body)


def test_playbook_isolates_and_polls_to_succeeded(clean_stack, host):
    stack = clean_stack
    body = sample("incident-trigger.json")
    stack.arm.seed_from_trigger(body)
    result = run(host, body)
    action = result["Isolate_machines"]
    assert result.status == "Succeeded" and action.status == "Succeeded", result.timeline
    assert action.polls >= 1 and any("polling Location" in line for line in result.timeline)
    assert action.waits[-1] == 30  # the function's Retry-After paces the Logic App
    assert stack.mde.isolation(WS) == "Full" and len(stack.mde.actions(WS, "Isolate")) == 1
    # The Location carries the function key: the action's outputs are hidden from the run history.
    assert action.outputs == SECURED
    assert len(stack.arm.comments(body["object"]["id"])) == 2  # the request and the outcome


def test_playbook_retry_policy_recovers_from_a_defender_outage(clean_stack, host):
    stack = clean_stack
    body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
    stack.mde.fail(503, path=r"/isolate$", times=5)  # more than the function's own retries
    result = run(host, body)
    assert result.status == "Succeeded", result.timeline
    assert result["Isolate_machines"].attempts == 2
    assert len(stack.mde.actions(WS, "Isolate")) == 1 and stack.mde.isolation(WS) == "Full"


def test_dry_run_setting_cannot_be_lifted_per_call(stack):
    stack.reset()
    process = stack.host(DRY_RUN="true")
    try:
        client = HostClient(process)
        body = incident(stack, host_entity("ws-fin-0042", device_id=WS))
        response = client.post("response/mde/isolate?dryRun=false", body)
        assert response.status_code == 200 and response.json()["dryRun"] is True
        assert client.post("response/block-ip?dryRun=false", sample("alert-trigger.json")).json()["dryRun"] is True
        assert client.post("response/entra/disable-user", sample("alert-trigger.json")).json()["dryRun"] is True
        assert stack.mde.requests_to("POST") == [] and [r for r in stack.graph.received if r.method != "GET"] == []
        assert client.get("response/blocklist").text == ""
    finally:
        process.stop()


def test_block_indicators_playbook_blocks_what_the_enrichment_rated(clean_stack, host):
    stack = clean_stack
    digest, name, site = fresh_sha256(), fresh_domain(), fresh_domain()
    body = incident(stack, file_entity(digest), dns_entity(name), url_entity(f"https://{site}/kit?session=1"))
    rate(stack, host, body, {digest: "malicious", name: "malicious", f"https://{site}/kit": "malicious"})
    stack.mde.fail(503, path=r"/api/indicators/import$", times=5)  # more than the function's own retries
    result = run(host, body, BLOCK_PLAYBOOK)
    action = result["Block_files_URLs_and_domains"]
    assert result.status == "Succeeded" and action.status == "Succeeded", result.timeline
    assert action.attempts == 2  # the Logic App's retry policy completed what the outage stopped
    assert {i["indicatorValue"]: i["indicatorType"] for i in stack.mde.indicators()} == {
        digest: "FileSha256", name: "DomainName", f"https://{site}/kit": "Url"}
