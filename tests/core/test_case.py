"""Trigger normalisation: every sample payload becomes a Case; bad input is a clear 400."""

import json

import pytest

from core.case import Case, ci_get, normalise
from core.errors import BadRequest, PayloadTooLarge
from tests.fixtures import INCIDENT_4711, TRIGGER_SAMPLES, sample


@pytest.mark.parametrize("name", TRIGGER_SAMPLES)
def test_every_sample_normalises(name):
    case = normalise(sample(name))
    assert isinstance(case, Case)
    assert case.workspace.subscription_id == "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    assert case.workspace.resource_group == "rg-sentinel-prod"


def test_incident_trigger():
    case = normalise(sample("incident-trigger.json"))
    assert case.source == "incident"
    assert case.incident_id == INCIDENT_4711
    assert case.incident_name == "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e"
    assert case.workspace.name == "law-sentinel-prod"
    assert case.workspace.customer_id == "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d"
    assert (case.number, case.severity, case.status) == (4711, "High", "New")
    assert case.etag == '"3b00f1a7-0000-0d00-0000-6b001a7c0000"'
    assert case.url.startswith("https://portal.azure.com/")
    # The duplicate 203.0.113.45 entity collapses; order is kept.
    assert [ip.address for ip in case.ips] == ["203.0.113.45", "198.51.100.23", "10.0.0.5"]
    assert case.hosts[0].mde_device_id == "7d3c9b2a1f0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
    assert case.hosts[0].fqdn == "ws-fin-0042.corp.contoso.com"
    assert case.accounts[0].upn == "adele.vance@contoso.com"
    assert case.accounts[0].aad_user_id == "b1a2c3d4-e5f6-4789-8abc-def012345678"
    assert case.label == "incident 4711"


def test_updated_incident_trigger():
    case = normalise(sample("incident-trigger-updated.json"))
    assert case.event_type == "Update"
    assert case.status == "Closed"
    assert case.raw_properties["classification"] == "TruePositive"


def test_defender_portal_incident_without_alerts():
    case = normalise(sample("incident-trigger-defender-portal.json"))
    assert case.provider_name == "Microsoft XDR"
    assert [ip.address for ip in case.ips] == ["198.51.100.23", "2001:db8:85a3::8a2e:370:7334"]
    assert case.hosts[0].mde_device_id == "2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b3d5f7a9c"
    assert [(o.kind, o.label[:10]) for o in case.others] == [("filehash", "3f9a6c1e5b")]


@pytest.mark.parametrize("name", ["alert-trigger.json", "alert-trigger-entities-string.json"])
def test_alert_trigger_entities_list_or_string(name):
    case = normalise(sample(name))
    assert case.source == "alert"
    assert case.incident_id is None  # the alert trigger carries no incident id
    assert case.alert_id == "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"
    assert case.severity == "Medium"
    assert case.workspace.customer_id == "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d"
    assert [ip.address for ip in case.ips] == ["203.0.113.45", "198.51.100.23", "10.0.0.5"]
    assert case.hosts[0].fqdn == "ws-fin-0042.corp.contoso.com"
    assert case.accounts[0].upn == "adele.vance@contoso.com"


def test_alert_with_incident_id_from_logic_app():
    body = sample("alert-trigger.json") | {"incidentArmId": INCIDENT_4711}
    case = normalise(body)
    assert case.incident_id == INCIDENT_4711
    assert case.workspace.name == "law-sentinel-prod"


def test_entity_trigger_ip_with_incident():
    case = normalise(sample("entity-trigger-ip.json"))
    assert case.source == "entity"
    assert case.incident_id == INCIDENT_4711
    assert [ip.address for ip in case.ips] == ["198.51.100.23"]


def test_entity_trigger_host_outside_incident():
    case = normalise(sample("entity-trigger-host.json"))
    assert case.incident_id is None
    assert case.workspace.name == "law-sentinel-prod"  # from the entity's own ARM id
    assert case.hosts[0].mde_device_id == "7d3c9b2a1f0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"


def test_manual_run_needs_entities_from_arm():
    case = normalise({"IncidentArmId": INCIDENT_4711.lower()})
    assert case.source == "manual"
    assert not case.entities_included
    assert case.incident_name == "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e"


def test_keys_are_case_insensitive():
    body = json.loads(json.dumps(sample("incident-trigger.json")).replace('"relatedEntities"', '"RelatedEntities"')
                      .replace('"object"', '"Object"').replace('"address"', '"Address"'))
    assert len(normalise(body).ips) == 3
    assert ci_get({"ABC": 1}, "abc") == 1


def test_ipv6_forms_collapse_and_invalid_addresses_are_kept_apart():
    body = sample("entity-trigger-ip.json")
    case = normalise(body).with_entities([
        {"kind": "Ip", "properties": {"address": "2001:DB8:0:0::1"}},
        {"Type": "ip", "Address": "2001:db8::1"},
        {"Type": "ip", "Address": "not-an-ip"},
        {"Type": "ip", "Address": None},
        "junk",
    ])
    assert [ip.address for ip in case.ips] == ["2001:db8::1"]
    assert case.invalid_ips == ("not-an-ip",)


@pytest.mark.parametrize(("body", "fragment"), [
    ([], "JSON object"),
    ("text", "JSON object"),
    ({}, "unrecognised payload"),
    ({"foo": 1}, "unrecognised payload"),
    ({"object": "x"}, "'object' must be the incident resource"),
    ({"object": {"id": "/subscriptions/x/whatever", "properties": {}}}, "object.id"),
    ({"object": {"id": INCIDENT_4711}}, "object.properties"),
    ({"object": {"id": INCIDENT_4711, "properties": {"severity": "Critical"}}}, "severity"),
    ({"object": {"id": INCIDENT_4711, "properties": {"relatedEntities": "x"}}}, "relatedEntities"),
    ({"SystemAlertId": "a", "Entities": "[not json"}, "Entities"),
    ({"SystemAlertId": "a", "Entities": {"a": 1}}, "Entities"),
    ({"Entity": "x"}, "'Entity' must be an object"),
    ({"Entity": {"kind": "Ip"}, "IncidentArmID": "nope"}, "IncidentArmID"),
    ({"incidentArmId": 42}, "incidentArmId"),
])
def test_bad_payloads_name_the_problem(body, fragment):
    with pytest.raises(BadRequest) as error:
        normalise(body)
    assert error.value.status == 400
    assert fragment in error.value.message


def test_entity_count_limit():
    body = sample("alert-trigger.json")
    body["Entities"] = [{"Type": "ip", "Address": f"198.51.100.{i % 250}"} for i in range(600)]
    with pytest.raises(PayloadTooLarge) as error:
        normalise(body, max_entities=500)
    assert error.value.status == 413


# -- trigger shapes seen in the wild (issue #15, item 10) ---------------------------------------------
def test_an_ipv4_mapped_ipv6_address_is_its_ipv4():
    alert = sample("alert-trigger.json")
    alert["Entities"] = [{"Type": "ip", "Address": "::ffff:203.0.113.10"}, {"Type": "ip", "Address": "203.0.113.10"},
                         {"Type": "ip", "Address": "::FFFF:CB00:710A"}]
    assert [ip.address for ip in normalise(alert).ips] == ["203.0.113.10"]


@pytest.mark.parametrize(("entity_type", "properties", "kind"), [
    ("IP", {"Address": "198.51.100.7"}, "ip"),
    (None, {"Address": "198.51.100.7"}, "ip"),
    ("Host", {"HostName": "ws-1"}, "host"),
    (None, {"HostName": "ws-1"}, "host"),
    (None, {"accountName": "adele", "upnSuffix": "contoso.com"}, "account"),
])
def test_an_entity_without_kind_takes_the_envelope_type_or_its_properties(entity_type, properties, kind):
    body = {"Entity": {"properties": properties}, "IncidentArmID": INCIDENT_4711}
    if entity_type:
        body["EntityType"] = entity_type
    case = normalise(body)
    found = {"ip": case.ips, "host": case.hosts, "account": case.accounts}[kind]
    assert len(found) == 1 and case.skipped == ()


def test_an_entity_that_cannot_be_told_is_a_skipped_row():
    case = normalise({"Entity": {"properties": {"friendlyName": "mystery"}}, "IncidentArmID": INCIDENT_4711})
    assert case.ips == () and [(s.kind, s.value) for s in case.skipped] == [("unknown", "mystery")]


@pytest.mark.parametrize("address", ["", "   ", None])
def test_an_ip_entity_without_an_address_is_a_skipped_row_with_its_reason(address):
    alert = sample("alert-trigger.json")
    alert["Entities"] = [{"Type": "ip", "Address": address}, {"Type": "ip", "Address": "bogus"}]
    case = normalise(alert)
    assert [(s.kind, s.value, s.reason) for s in case.skipped] == [
        ("ip", "" if address is None else str(address)[:100], "IP entity without an address"),
        ("ip", "bogus", "not an IP address")]
    assert case.invalid_ips == ("bogus",)


def test_alert_severity_falls_back_to_the_table_column():
    alert = sample("alert-trigger.json")
    alert.pop("Severity")
    alert["AlertSeverity"] = "high"
    assert normalise(alert).severity == "High"


def test_the_subject_says_alert_for_alert_runs():
    assert normalise(sample("alert-trigger.json")).subject == "alert"
    assert normalise(sample("alert-trigger.json") | {"incidentArmId": INCIDENT_4711}).subject == "incident"
    assert normalise(sample("entity-trigger-host.json")).subject == "entity"
    assert normalise(sample("incident-trigger.json")).subject == "incident"


def test_an_entity_body_states_its_workspace():
    body = {"Entity": {"kind": "Ip", "properties": {"address": "198.51.100.7"}}, "IncidentArmID": None,
            "WorkspaceInfo": {"SubscriptionId": "s", "ResourceGroupName": "rg", "WorkspaceName": "ws"},
            "WorkspaceId": "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d"}
    ws = normalise(body).workspace
    assert (ws.subscription_id, ws.resource_group, ws.name, ws.customer_id) == (
        "s", "rg", "ws", "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d")


@pytest.mark.parametrize("body", [
    {"SystemAlertId": "x", "Entities": [0] * 5001},
    {"SystemAlertId": "x", "Entities": json.dumps([0] * 5001)},
    {"SystemAlertId": "x", **{f"k{i}": 0 for i in range(5001)}},
    {"Entity": {"kind": "Ip", "properties": {f"k{i}": 0 for i in range(5001)}}},
])
def test_every_list_and_object_is_measured_before_it_is_walked(body):
    with pytest.raises(PayloadTooLarge, match="10 x MAX_ENTITIES"):
        normalise(body)


def test_an_arm_entity_without_kind_is_not_typed_by_its_resource_type():
    body = sample("entity-trigger-ip.json")  # Entity.type is "Microsoft.SecurityInsights/Entities"
    body["Entity"].pop("kind")
    assert [ip.address for ip in normalise(body).ips] == ["198.51.100.23"]
