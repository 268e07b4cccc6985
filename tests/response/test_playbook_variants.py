"""The response playbooks for every trigger: the incident playbooks of infra/playbooks/ (block-ip, disable-user) and
the alert- and entity-trigger variants infra/app/playbook.bicep generates from them and from isolate and ask-user,
run by the local runner with the sample bodies against the local host; their Sentinel connection is the connector
stand-in over the ARM emulator ("Alert - Get incident", the bodies each trigger hands over)."""

from __future__ import annotations

import re

import pytest

from localdev.emulators.defender import WS_FIN_0042 as WS
from localdev.emulators.graph import ADELE
from localdev.playbooks import SECURED
from localdev.sentinel_connector import SentinelConnector
from tests.conftest import wait_for
from tests.fixtures import INCIDENT_4711, sample
from tests.orchestration.helpers import form_of, origin_of, person
from tests.playbook_variants import Running, run
from tests.response.helpers import fresh_ips, incident, ip_entity, outcomes

ADELE_UPN = "adele.vance@contoso.com"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def connector(stack):
    with SentinelConnector(stack.arm, stack.entra) as running:
        yield running


@pytest.fixture
def sentinel(clean_stack, connector):
    connector.reset()
    return connector


def messages(stack, incident_id: str) -> list[str]:
    return [c["properties"]["message"] for c in stack.arm.comments(incident_id)]


# --- isolate: alert and Host entity ------------------------------------------------------------------

def test_isolate_alert_variant_isolates_the_alert_s_host_and_audits_on_its_incident(clean_stack, sentinel, host):
    alert = sample("alert-trigger.json")  # host ws-fin-0042.corp.contoso.com, found by its FQDN
    incident_id = sentinel.incident_for_alert(alert)
    result = run("response-isolate-machines-alert", host, sentinel, alert)
    assert result.status == "Succeeded", result.timeline
    isolate = result["Isolate_machines"]
    assert isolate.polls >= 1 and isolate.outputs == SECURED  # the Location carries the key
    assert clean_stack.mde.isolation(WS) == "Full" and len(clean_stack.mde.actions(WS, "Isolate")) == 1
    assert len(messages(clean_stack, incident_id)) == 2  # the request and the outcome


def test_isolate_entity_variant_on_the_host_page_isolates_without_an_incident(clean_stack, sentinel, host):
    body = sample("entity-trigger-host.json")  # IncidentArmID null: run from the entity page
    result = run("response-isolate-machines-entity-host", host, sentinel, body)
    assert result.status == "Succeeded", result.timeline
    assert clean_stack.mde.isolation(WS) == "Full"
    final = result["Isolate_machines"].body  # the final answer of the polled status link
    assert final["status"] == "Succeeded" and final["auditComment"] is None
    assert clean_stack.arm.requests_to("PUT") == []


# --- block-ip: incident, alert and IP entity --------------------------------------------------------------

def test_block_ip_for_every_trigger(clean_stack, sentinel, host):
    stack = clean_stack
    stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    entity = run("response-block-ip-entity-ip", host, sentinel, sample("entity-trigger-ip.json"))
    assert entity.status == "Succeeded", entity.timeline
    assert outcomes(entity["Block_IPs"].body) == {"198.51.100.23": "done"}
    assert len(messages(stack, INCIDENT_4711)) == 1

    alert = sample("alert-trigger.json")
    incident_id = sentinel.incident_for_alert(alert)
    from_alert = run("response-block-ip-alert", host, sentinel, alert)
    assert from_alert.status == "Succeeded", from_alert.timeline
    assert outcomes(from_alert["Block_IPs"].body) == {"203.0.113.45": "done", "198.51.100.23": "already",
                                                       "10.0.0.5": "refused"}
    assert len(messages(stack, incident_id)) == 1
    host.post("response/unblock-ip", alert)  # leave the shared sample addresses unblocked for other tests

    ips = fresh_ips(2)
    body = incident(stack, *(ip_entity(ip) for ip in ips))
    on_incident = run("response-block-ip", host, sentinel, body)
    assert on_incident.status == "Succeeded", on_incident.timeline
    assert outcomes(on_incident["Block_IPs"].body) == dict.fromkeys(ips, "done")


# --- disable-user: incident, alert and Account entity ------------------------------------------------------

@pytest.mark.parametrize(("name", "body"), [
    ("response-disable-user", "incident-trigger.json"),
    ("response-disable-user-alert", "alert-trigger.json"),
    ("response-disable-user-entity-account", "entity-trigger-account.json"),
])
def test_disable_user_for_every_trigger(clean_stack, sentinel, host, name, body):
    stack, trigger = clean_stack, sample(body)
    if name.endswith("-alert"):
        incident_id = sentinel.incident_for_alert(trigger)
    else:
        incident_id = stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    result = run(name, host, sentinel, trigger)
    assert result.status == "Succeeded", result.timeline
    assert outcomes(result["Disable_users"].body) == {ADELE_UPN: "done"}
    assert stack.graph.user(ADELE)["accountEnabled"] is False
    (text,) = messages(stack, incident_id)
    assert "adele.vance@contoso.com" in text


# --- ask-user: alert and Account entity --------------------------------------------------------------------

def question_link(stack) -> str:
    (mail,) = wait_for(lambda: stack.outbox.to(ADELE_UPN))
    (link,) = re.findall(r'href="([^"]+/api/response/entra/ask-user/[0-9a-f]{32}\?[^"]+)"', mail["body"])
    return link.replace("&amp;", "&")


@pytest.mark.parametrize(("name", "body"), [
    ("response-ask-user-alert", "alert-trigger.json"),
    ("response-ask-user-entity-account", "entity-trigger-account.json"),
])
def test_ask_user_variants_ask_the_user_and_tell_the_soc_about_the_incident(clean_stack, sentinel, host, name, body):
    stack, trigger = clean_stack, sample(body)
    if name.endswith("-alert"):
        incident_id = sentinel.incident_for_alert(trigger)
    else:
        incident_id = stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    running = Running(name, host, sentinel, trigger)
    link = question_link(stack)
    adele = person(stack, host.host.url, ADELE_UPN, mfa=False)
    page = adele.get(link, timeout=30)
    assert page.status_code == 200 and "Was this you?" in page.text
    answered = adele.post(link, data={**form_of(page), "answer": "No"}, headers={"Origin": origin_of(link)},
                          timeout=30)
    assert answered.status_code == 200
    result = running.join()
    assert result.status == "Succeeded", result.timeline
    assert result["Ask_the_user"].body["answer"] == "No"
    assert result["Ask_the_user"].body["incidentArmId"] == incident_id
    told = result["Tell_the_SOC_it_was_not_the_user"]
    assert told.status == "Succeeded" and told.raw_inputs["body"]["incidentArmId"] == incident_id
    assert stack.graph.risky_user(ADELE)["riskState"] == "confirmedCompromised"
    assert any("NOT them" in str(m) for m in stack.teams.messages)
    assert any("answered" in text.lower() for text in messages(stack, incident_id))


def test_ask_user_from_the_entity_page_needs_an_incident(clean_stack, sentinel, host):
    body = sample("entity-trigger-account.json") | {"IncidentArmID": None}
    result = run("response-ask-user-entity-account", host, sentinel, body)
    assert result.status == "Failed"
    ask = result["Ask_the_user"]
    assert ask.outputs["statusCode"] == 400 and "needs an incident" in ask.body["error"]["message"]
    assert clean_stack.outbox.to(ADELE_UPN) == []
