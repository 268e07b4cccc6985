"""Playbooks for every trigger, end to end: the alert- and entity-trigger variants the registry generates
(infra/app/playbook.bicep, built alike by tools.playbook_check), and the new incident playbooks, run by the local
runner with the sample alert and entity bodies against the local host. Their Sentinel connection is the connector
stand-in over the ARM emulator (localdev/sentinel_connector.py): it hands each trigger's body over only to the
trigger that sends it, and serves "Alert - Get incident"."""

from __future__ import annotations

import re

import pytest

from localdev.emulators.defender import WS_FIN_0042 as WS
from localdev.emulators.graph import ADELE
from localdev.playbooks import SECURED, PlaybookError
from localdev.sentinel_connector import SentinelConnector
from tests.conftest import wait_for
from tests.fixtures import INCIDENT_4711, sample
from tests.orchestration.helpers import form_of, origin_of, person
from tests.playbook_variants import Running, run
from tests.response.helpers import fresh_ips, incident, ip_entity, outcomes

ALERT, ENTITY_IP = "enrichment-ip-reputation-alert", "enrichment-ip-reputation-entity-ip"
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


def incident_for(name: str, stack, sentinel: SentinelConnector, body: dict) -> str:
    """The incident a run of ``name`` acts on: the alert's (created by Sentinel), else the sample incident 4711."""
    if name.endswith("-alert"):
        return sentinel.incident_for_alert(body)
    return stack.arm.seed_from_trigger(sample("incident-trigger.json"))


# --- enrichment: alert and IP entity -------------------------------------------------------------------------

@pytest.mark.parametrize("body", ["alert-trigger.json", "alert-trigger-entities-string.json"])
def test_enrichment_alert_variant_finds_the_alert_s_incident_and_comments_on_it(clean_stack, sentinel, host, body):
    alert = sample(body)
    incident_id = sentinel.incident_for_alert(alert)
    result = run(ALERT, host, sentinel, alert)
    assert result.status == "Succeeded", result.timeline
    get_incident = result["Alert_-_Get_incident"]
    assert get_incident.status == "Succeeded" and get_incident.body["id"] == incident_id
    enrich = result["Enrich_IP_reputation"]
    assert enrich.status == "Succeeded" and enrich.body["incident"] == incident_id
    assert sorted(item["ip"] for item in enrich.body["ips"]) == ["198.51.100.23", "203.0.113.45"]
    (comment,) = clean_stack.arm.comments(incident_id)
    assert "203.0.113.45" in comment["properties"]["message"]
    # What the function received: the alert as the trigger handed it over, plus its incident's ARM id.
    assert enrich.raw_inputs["body"] == alert | {"incidentArmId": incident_id}
    assert enrich.inputs != enrich.raw_inputs  # the key it sends stays out of the run history (secureData)


def test_an_alert_variant_stops_when_no_incident_holds_the_alert(clean_stack, sentinel, host):
    alert = sample("alert-trigger.json")
    sentinel.track(clean_stack.arm.seed_from_trigger(sample("incident-trigger.json")))  # holds another alert
    result = run(ALERT, host, sentinel, alert)
    assert result.status == "Failed"
    assert result["Alert_-_Get_incident"].status == "Failed" and result["Alert_-_Get_incident"].attempts == 1
    assert result["Alert_-_Get_incident"].outputs["statusCode"] == 404
    assert result["On_the_alert_s_incident"].status == "Skipped"
    assert result["Enrich_IP_reputation"].status == "Skipped"
    assert clean_stack.vt.received == [] and clean_stack.arm.comments(INCIDENT_4711) == []


def test_an_alert_variant_retries_a_throttled_sentinel(clean_stack, sentinel, host):
    alert = sample("alert-trigger.json")
    incident_id = sentinel.incident_for_alert(alert)
    clean_stack.arm.fail(429, path=r"/alerts$", retry_after=3, times=2)
    result = run(ALERT, host, sentinel, alert)
    assert result.status == "Succeeded", result.timeline
    assert result["Alert_-_Get_incident"].attempts == 3 and result["Alert_-_Get_incident"].waits == [3.0, 3.0]
    assert len(clean_stack.arm.comments(incident_id)) == 1


def test_enrichment_entity_variant_comments_on_the_ip_s_incident(clean_stack, sentinel, host):
    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))
    result = run(ENTITY_IP, host, sentinel, sample("entity-trigger-ip.json"))
    assert result.status == "Succeeded", result.timeline
    enrich = result["Enrich_IP_reputation"]
    assert [item["ip"] for item in enrich.body["ips"]] == ["198.51.100.23"]
    assert enrich.body["incident"] == INCIDENT_4711
    assert len(clean_stack.arm.comments(INCIDENT_4711)) == 1


def test_enrichment_entity_variant_outside_an_incident_enriches_without_a_comment(clean_stack, sentinel, host):
    body = sample("entity-trigger-ip.json") | {"IncidentArmID": None}  # run from the entity page
    result = run(ENTITY_IP, host, sentinel, body)
    assert result.status == "Succeeded", result.timeline
    enrich = result["Enrich_IP_reputation"].body
    assert [item["ip"] for item in enrich["ips"]] == ["198.51.100.23"] and enrich["commentSkipped"]
    assert clean_stack.arm.requests_to("PUT") == []


def test_sentinel_offers_the_ip_playbook_for_ip_entities_only(clean_stack, sentinel, host):
    with pytest.raises(PlaybookError, match="only for Ip entities"):
        run(ENTITY_IP, host, sentinel, sample("entity-trigger-host.json"))
    with pytest.raises(PlaybookError, match="alert"):
        run(ALERT, host, sentinel, sample("entity-trigger-ip.json"))
    assert clean_stack.vt.received == []


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
    incident_id = incident_for(name, stack, sentinel, trigger)
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
    incident_id = incident_for(name, stack, sentinel, trigger)
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
