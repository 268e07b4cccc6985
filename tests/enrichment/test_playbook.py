"""The deployed enrichment playbook, run by the local runner against the local host."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook
from tests.fixtures import incident_with

PLAYBOOK = Path(__file__).resolve().parents[2] / "infra" / "playbooks" / "enrichment-ip-reputation.json"
pytestmark = pytest.mark.e2e


@pytest.fixture
def runner(host):
    with PlaybookRunner(load_playbook(PLAYBOOK), bicep_parameters(host.host.url, host.host.function_key)) as run:
        yield run


def test_playbook_enriches_an_incident(clean_stack, runner):
    body = incident_with(5001, ["198.51.100.201", "10.9.9.9"], name=str(uuid.uuid4()))
    incident_id = clean_stack.arm.seed_from_trigger(body)
    result = runner.run(body)
    assert result.status == "Succeeded", result.timeline
    action = result.actions["Enrich_IP_reputation"]
    assert action.outputs["statusCode"] == 200 and action.attempts == 1
    assert action.body["comments"] and action.body["skipped"][0]["ip"] == "10.9.9.9"
    assert len(clean_stack.arm.comments(incident_id)) == 1


def test_playbook_retries_through_a_sentinel_outage(clean_stack, runner):
    body = incident_with(5002, ["198.51.100.202"], name=str(uuid.uuid4()))
    incident_id = clean_stack.arm.seed_from_trigger(body)
    clean_stack.arm.fail(503, times=6, path=r"/comments/")  # the function's own retries, then the Logic App's
    result = runner.run(body)
    assert result.status == "Succeeded", result.timeline
    assert result.actions["Enrich_IP_reputation"].attempts >= 2
    assert len(clean_stack.arm.comments(incident_id)) == 1  # retried end to end, written once
