"""Playbooks for every trigger: the alert- and entity-trigger variants the registry deploys, checked from the files.

infra/main.bicep's registry deploys each entry as written (incident trigger), plus an alert variant (`alert: true`)
and one entity variant per type (`entities`); infra/app/playbook.bicep builds their definitions from the one file
with the trigger shapes of infra/playbooks/triggers/. tools.playbook_check builds the same definitions offline; these
tests check that each variant has the trigger of its kind (as Microsoft's Sentinel templates declare it), posts its
trigger's body to the routes of its definition, and is wired to automation rules only where Sentinel allows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.infra.test_wiring import app_routes, called_route, http_actions, request_of, route_matches
from tools import playbook_check
from tools.playbook_check import deployed_playbooks, load_definition, registry_problems, trigger_shapes

INFRA = Path(__file__).resolve().parents[2] / "infra"
MAIN_BICEP = (INFRA / "main.bicep").read_text()
PLAYBOOK_BICEP = (INFRA / "app" / "playbook.bicep").read_text()
RULES_BICEP = (INFRA / "app" / "automation-rules.bicep").read_text()
DEPLOYED = deployed_playbooks()
VARIANTS = [playbook for playbook in DEPLOYED if playbook.trigger != "incident"]
CONNECTION = "@parameters('$connections')['azuresentinel']['connectionId']"
# Microsoft's templates: Get-VirusTotalIPReport/alert-trigger, Isolate-MDEMachine-alert-trigger (Azure-Sentinel).
GET_INCIDENT_PATH = ("/Incidents/subscriptions/@{encodeURIComponent(triggerBody()?['WorkspaceSubscriptionId'])}"
                     "/resourceGroups/@{encodeURIComponent(triggerBody()?['WorkspaceResourceGroup'])}"
                     "/workspaces/@{encodeURIComponent(triggerBody()?['WorkspaceId'])}"
                     "/alerts/@{encodeURIComponent(triggerBody()?['SystemAlertId'])}")
ALERT_BODY = "@setProperty(triggerBody(), 'incidentArmId', body('Alert_-_Get_incident')?['id'])"


def test_the_registry_deploys_these_playbooks():
    assert {p.name: (p.trigger, p.entity_type) for p in DEPLOYED} == {
        "enrichment-ip-reputation": ("incident", ""),
        "enrichment-ip-reputation-alert": ("alert", ""),
        "enrichment-ip-reputation-entity-ip": ("entity", "IP"),
        "sync-servicenow-outbound": ("incident", ""),
        "response-isolate-machines": ("incident", ""),
        "response-isolate-machines-alert": ("alert", ""),
        "response-isolate-machines-entity-host": ("entity", "Host"),
        "response-block-ip": ("incident", ""),
        "response-block-ip-alert": ("alert", ""),
        "response-block-ip-entity-ip": ("entity", "IP"),
        "response-disable-user": ("incident", ""),
        "response-disable-user-alert": ("alert", ""),
        "response-disable-user-entity-account": ("entity", "Account"),
        "orchestration-compromised-user": ("incident", ""),
        "response-ask-user": ("incident", ""),
        "response-ask-user-alert": ("alert", ""),
        "response-ask-user-entity-account": ("entity", "Account"),
        "response-block-indicators": ("incident", ""),
    }
    assert registry_problems() == []


def test_the_incident_playbooks_are_their_files_unchanged():
    for playbook in DEPLOYED:
        if playbook.trigger == "incident":
            assert playbook.definition() == load_definition(playbook.file)
            assert "definition: trigger == 'incident' ? definition : variantDefinition" in PLAYBOOK_BICEP


@pytest.mark.parametrize("playbook", VARIANTS, ids=lambda p: p.name)
def test_variant_has_the_sentinel_trigger_of_its_kind(playbook):
    ((name, trigger),) = playbook.definition()["triggers"].items()
    assert trigger["type"] == "ApiConnectionWebhook"
    assert trigger["inputs"]["host"]["connection"]["name"] == CONNECTION
    assert trigger["inputs"]["body"] == {"callback_url": "@{listCallbackUrl()}"}
    if playbook.trigger == "alert":
        assert (name, trigger["inputs"]["path"]) == ("Microsoft_Sentinel_alert", "/subscribe")
    else:
        assert name == "Microsoft_Sentinel_entity"
        assert trigger["inputs"]["path"] == f"/entity/@{{encodeURIComponent('{playbook.entity_type}')}}"


def bodies(request: dict) -> list:
    """What an HTTP request sends the function: its body, and the values of a body object (e.g. ``incident``)."""
    body = request.get("body")
    return [body, *body.values()] if isinstance(body, dict) else [body]


@pytest.mark.parametrize("playbook", VARIANTS, ids=lambda p: p.name)
def test_variant_posts_its_trigger_body_to_the_routes_of_its_definition(playbook):
    base_calls, variant = http_actions(load_definition(playbook.file)), playbook.definition()
    calls = http_actions(variant)
    assert set(calls) == set(base_calls)
    body = ALERT_BODY if playbook.trigger == "alert" else "@triggerBody()"
    routes, forwarded = app_routes(), 0
    for name, action in calls.items():
        request, original = request_of(action), request_of(base_calls[name])
        assert (request["method"], request["uri"]) == (original["method"], original["uri"])
        route = called_route(request["uri"])
        assert any(route_matches(template, route) and request["method"] in methods
                   for template, methods in routes.items()), f"{name}: {request['method']} /api/{route}"
        if "@triggerBody()" in bodies(original):
            forwarded += 1
            assert body in bodies(request), f"{name} does not forward the {playbook.trigger} trigger's body"
        assert request.get("retryPolicy") == original.get("retryPolicy")
        assert action.get("runtimeConfiguration") == base_calls[name].get("runtimeConfiguration")
    assert forwarded, "the variant forwards no trigger body to the function"
    assert "['object']" not in json.dumps(variant), "an incident-trigger expression is left in the variant"


@pytest.mark.parametrize("playbook", [p for p in VARIANTS if p.trigger == "alert"], ids=lambda p: p.name)
def test_alert_variant_gets_the_alert_s_incident_first(playbook):
    actions = playbook.definition()["actions"]
    assert list(actions) == ["Alert_-_Get_incident", "On_the_alert_s_incident"]
    get = actions["Alert_-_Get_incident"]
    assert get["type"] == "ApiConnection" and get["runAfter"] == {}
    assert get["inputs"]["host"]["connection"]["name"] == CONNECTION
    assert (get["inputs"]["method"], get["inputs"]["path"]) == ("get", GET_INCIDENT_PATH)
    scope = actions["On_the_alert_s_incident"]
    assert scope["type"] == "Scope" and scope["runAfter"] == {"Alert_-_Get_incident": ["Succeeded"]}
    assert set(scope["actions"]) == set(load_definition(playbook.file)["actions"])
    text = json.dumps(scope)
    assert "triggerBody()?['IncidentArmID']" not in text
    assert "body('Alert_-_Get_incident')?['id']" in text


@pytest.mark.parametrize("playbook", [p for p in VARIANTS if p.trigger == "entity"], ids=lambda p: p.name)
def test_entity_variant_reads_the_incident_from_incident_arm_id(playbook):
    variant, base = playbook.definition(), load_definition(playbook.file)
    assert set(variant["actions"]) == set(base["actions"])
    if "triggerBody()?['object']?['id']" in json.dumps(base):
        assert "triggerBody()?['IncidentArmID']" in json.dumps(variant)


# --- automation, roles --------------------------------------------------------------------------------------

def test_only_incident_and_alert_playbooks_can_have_automation_rules():
    for playbook in DEPLOYED:
        expected = {"incident": "Incidents", "alert": "Alerts", "entity": ""}[playbook.trigger]
        assert playbook.triggers_on == expected, playbook.name
        allowed = {"incident": {"Created", "Updated"}, "alert": {"Created"}, "entity": set()}[playbook.trigger]
        assert set(playbook.run_on) <= allowed, playbook.name
    automation = re.search(r"^module automationRules .*?^\}\]", MAIN_BICEP, re.S | re.M).group(0)
    assert "? deployedPlaybooks : []" in automation and "triggersOn: playbook.triggersOn" in automation
    assert "triggersOn: triggersOn" in RULES_BICEP
    assert "intersection(triggersWhen, ['Created'])" in RULES_BICEP  # alerts have no update event
    assert "@allowed(['Incidents', 'Alerts', ''])" in RULES_BICEP


def test_every_deployed_playbook_is_a_logic_app_whose_identity_reads_sentinel():
    apps = re.search(r"^module playbookApps .*?^\}\]", MAIN_BICEP, re.S | re.M).group(0)
    assert "(deployPlaybooks ? deployedPlaybooks : [])" in apps
    assert "trigger: playbook.trigger" in apps and "entityType: playbook.entityType" in apps
    # rbac.bicep gives each of these principals Microsoft Sentinel Reader (test_wiring checks the role), which
    # runs the triggers and "Alert - Get incident" (Microsoft Learn, "Supported triggers and actions").
    assert "playbookPrincipalIds: [for (playbook, i) in (deployPlaybooks ? deployedPlaybooks : []): " \
           "playbookApps[i].outputs.principalId]" in MAIN_BICEP


def test_main_bicep_generates_the_names_and_triggers_the_check_builds():
    generation = re.search(r"^var deployedPlaybooks = .*?^\}\)\)\)\)", MAIN_BICEP, re.S | re.M).group(0)
    for piece in ("name: playbook.name", "trigger: 'incident'", "triggersOn: 'Incidents'", "runOn: playbook.runOn",
                  "(playbook.?alert ?? false) ? [", "name: '${playbook.name}-alert'", "trigger: 'alert'",
                  "triggersOn: 'Alerts'", "runOn: playbook.?alertRunOn ?? []",
                  "map(playbook.?entities ?? [], entityType => {",
                  "name: '${playbook.name}-entity-${toLower(entityType)}'", "trigger: 'entity'",
                  "entityType: entityType", "triggersOn: ''"):
        assert piece in generation, piece


def test_playbook_bicep_builds_the_variants_the_check_builds():
    for piece in ("incident: loadJsonContent('../playbooks/triggers/incident.json')",
                  "alert: loadJsonContent('../playbooks/triggers/alert.json')",
                  "entity: loadJsonContent('../playbooks/triggers/entity.json')",
                  "var variantActions = json(replace(replace(string(definition.actions), "
                  "'\"${triggerShapes.incident.body}\"', '\"${shape.body}\"'), triggerShapes.incident.incidentArmId, "
                  "shape.incidentArmId))",
                  "triggers: json(replace(string(shape.triggers), '{entityType}', entityType))",
                  "actions: empty(shape.scope) ? variantActions : union(shape.actions, {",
                  "runAfter: shape.scopeRunAfter"):
        assert piece in PLAYBOOK_BICEP, piece


# --- what the registry refuses ------------------------------------------------------------------------------

def registry_with(tmp_path: Path, old: str, new: str) -> Path:
    assert old in MAIN_BICEP
    path = tmp_path / "main.bicep"
    path.write_text(MAIN_BICEP.replace(old, new, 1))
    return path


def test_an_entity_type_the_trigger_is_not_modelled_for_is_refused(tmp_path):
    main = registry_with(tmp_path, "entities: ['Host']", "entities: ['Hostx']")
    assert any("'Hostx' is not one the entity trigger is modelled for" in p for p in registry_problems(main))


def test_an_alert_update_rule_is_refused(tmp_path):
    main = registry_with(tmp_path, "    alert: true\n    entities: ['Host']",
                         "    alert: true\n    alertRunOn: ['Updated']\n    entities: ['Host']")
    assert any("alertRunOn 'Updated' is not an alert event" in p for p in registry_problems(main))
    main = registry_with(tmp_path, "    alert: true\n    entities: ['Host']",
                         "    alert: true\n    alertRunOn: ['Created']\n    entities: ['Host']")
    assert registry_problems(main) == []
    (alert,) = [p for p in deployed_playbooks(main) if p.name == "response-isolate-machines-alert"]
    assert alert.run_on == ("Created",) and alert.triggers_on == "Alerts"


def test_a_definition_with_variants_may_read_its_trigger_only_in_the_translated_forms(tmp_path, monkeypatch):
    definition = load_definition("response-block-ip.json")
    definition["actions"]["Block_IPs"]["inputs"]["body"] = {
        "title": "@{triggerBody()?['object']?['properties']?['title']}", "incidentArmId":
        "@{triggerBody()?['object']?['id']}", "all": "@triggerBody()"}
    (tmp_path / "response-block-ip.json").write_text(json.dumps(definition))
    monkeypatch.setattr(playbook_check, "PLAYBOOKS", tmp_path)
    for name in ("enrichment-ip-reputation.json", "sync-servicenow-outbound.json", "response-isolate-machines.json",
                 "response-disable-user.json", "orchestration-compromised-user.json", "response-ask-user.json",
                 "response-block-indicators.json"):
        (tmp_path / name).write_text((INFRA / "playbooks" / name).read_text())
    problems = registry_problems()
    assert len(problems) == 1 and "['properties']?['title']" in problems[0], problems


def test_the_definitions_trigger_is_the_modelled_incident_trigger():
    incident = trigger_shapes()["incident"]["triggers"]
    for entry in playbook_check.registry():
        assert load_definition(entry.file)["triggers"] == incident, entry.name


# --- docs ---------------------------------------------------------------------------------------------------

def test_readme_lists_every_deployed_playbook_with_its_trigger():
    readme = (INFRA.parent / "README.md").read_text()
    table = readme.split("## The playbooks: one per use case and trigger")[1].split("\n## ")[0]
    listed = dict(re.findall(r"^\| `([a-z0-9-]+)` \| ([a-z]+)", table, re.M))
    assert listed == {p.name: p.trigger for p in DEPLOYED}
    for playbook in DEPLOYED:
        if playbook.entity_type:
            assert f"| `{playbook.name}` | entity: {playbook.entity_type} |" in table


def test_deploy_guide_tells_how_to_attach_alert_playbooks_and_run_entity_playbooks():
    deploy = (INFRA.parent / "docs" / "deploy.md").read_text()
    section = deploy.split("## 5. Run the playbooks from Sentinel")[1].split("\n## ")[0]
    for phrase in ("When alert is created", "Analytics rule name", "Automated response", "Alert - Get incident",
                   "Run playbook on \\<entity type>", "Entity behavior", "alertRunOn", "entities: ['IP', ...]"):
        assert phrase in section, phrase
