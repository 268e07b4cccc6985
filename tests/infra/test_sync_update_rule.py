"""The outbound sync's Updated automation rule stops the self-trigger loop without hiding the pack's outcomes.

Sentinel evaluates an update rule's conditions against each incident update (Microsoft Learn, "Automate threat
response in Microsoft Sentinel with automation rules", *Incident update trigger*, and "Create and use Microsoft
Sentinel automation rules", *Conditions available with the update trigger*): top-level conditions are ANDed,
a Boolean condition combines inner ones with And/Or, ``Property`` compares the current state (``Updated by``
is the source of this update), ``PropertyChanged`` with ``ChangedTo`` holds when the property changed to one of
the values, and ``PropertyArrayChanged``/``Added`` when items were added to the list. This file evaluates the
rule in infra/automation/ over a modelled incident lifecycle, counting the sync runs before and after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

RULE = Path(__file__).resolve().parents[2] / "infra" / "automation" / "sync-servicenow-outbound-updated.json"
APPLICATION, USER = "Application", "User"


@dataclass
class Update:
    """One incident update as the automation engine sees it."""

    what: str
    source: str
    changed: dict[str, str] = field(default_factory=dict)   # IncidentSeverity / IncidentStatus / IncidentOwner -> new
    added: set[str] = field(default_factory=set)             # Comments, Labels, Alerts, Tactics


def holds(condition: dict, update: Update) -> bool:
    kind, props = condition["conditionType"], condition.get("conditionProperties", {})
    if kind == "Boolean":
        results = [holds(inner, update) for inner in props["innerConditions"]]
        return any(results) if props["operator"] == "Or" else all(results)
    if kind == "Property":
        assert props["propertyName"] == "IncidentUpdatedBySource", props
        value = update.source
        equal = value.lower() in {v.lower() for v in props["propertyValues"]}
        return equal if props["operator"] == "Equals" else not equal
    if kind == "PropertyChanged":
        new = update.changed.get(props["propertyName"])
        assert props["changeType"] == "ChangedTo" and props["operator"] == "Equals", props
        return new is not None and new.lower() in {v.lower() for v in props["propertyValues"]}
    if kind == "PropertyArrayChanged":
        assert props["changeType"] == "Added", props
        return props["arrayType"] in update.added
    raise AssertionError(f"condition type {kind} is not modelled here")


def runs(updates: list[Update], conditions: list[dict]) -> list[str]:
    return [u.what for u in updates if all(holds(c, u) for c in conditions)]


# One incident's life: enrichment, the first sync (from the Created rule), an analyst, a ServiceNow work note
# copied back, the pack raising severity, the user's answer, the pack closing it. Each pack write is a separate
# ARM call, hence a separate update. A sync run started by an update writes nothing (the function suppresses
# its own echo), so no update below is caused by an update-triggered run.
LIFECYCLE = [
    Update("enrichment comment", APPLICATION, added={"Comments"}),
    Update("enrichment label 'VirusTotal: malicious'", APPLICATION, added={"Labels"}),
    Update("sync comment with the ticket link", APPLICATION, added={"Comments"}),
    Update("sync label 'ServiceNow: INC0010001'", APPLICATION, added={"Labels"}),
    Update("analyst takes the incident", USER, changed={"IncidentOwner": "alice@contoso.com",
                                                        "IncidentStatus": "Active"}),
    Update("analyst comment", USER, added={"Comments"}),
    Update("ServiceNow work note copied as a comment", APPLICATION, added={"Comments"}),
    Update("pack raises severity to High", APPLICATION, changed={"IncidentSeverity": "High"}),
    Update("ask-user answer comment", APPLICATION, added={"Comments"}),
    Update("ask-user answer tag", APPLICATION, added={"Labels"}),
    Update("pack closes the incident", APPLICATION, changed={"IncidentStatus": "Closed"}),
    Update("close comment", APPLICATION, added={"Comments"}),
]
MUST_REACH_THE_TICKET = {"analyst takes the incident", "analyst comment", "pack raises severity to High",
                         "ask-user answer tag", "pack closes the incident"}
PACK_COMMENTS = {u.what for u in LIFECYCLE if u.source == APPLICATION and u.added == {"Comments"}}


def test_the_rule_stops_the_self_trigger_but_keeps_the_pack_outcomes():
    rule = json.loads(RULE.read_text())
    before, after = runs(LIFECYCLE, []), runs(LIFECYCLE, rule)
    assert len(before) == len(LIFECYCLE)
    assert MUST_REACH_THE_TICKET <= set(after), MUST_REACH_THE_TICKET - set(after)
    assert not PACK_COMMENTS & set(after), PACK_COMMENTS & set(after)
    # The measurement docs/deploy.md reports: sync runs caused by updates over this lifecycle.
    assert (len(before), len(after)) == (12, 7)


def test_excluding_every_application_update_would_hide_the_pack_outcomes():
    naive = [{"conditionType": "Property", "conditionProperties": {
        "propertyName": "IncidentUpdatedBySource", "operator": "NotEquals", "propertyValues": [APPLICATION]}}]
    hidden = MUST_REACH_THE_TICKET - set(runs(LIFECYCLE, naive))
    assert hidden == {"pack raises severity to High", "ask-user answer tag", "pack closes the incident"}


def test_the_rule_is_wired_to_the_sync_playbooks_updated_automation_rule():
    main = (RULE.parents[1] / "main.bicep").read_text()
    rules = (RULE.parents[1] / "app" / "automation-rules.bicep").read_text()
    assert "updateConditions: loadJsonContent('automation/sync-servicenow-outbound-updated.json')" in main
    assert "conditions: triggersOn == 'Incidents' && event == 'Updated' ? updateConditions : []" in rules
    assert "updateConditions: playbook.?updateConditions ?? []" in main  # the incident entry's, to its rules
    assert "updateConditions: playbook.updateConditions" in main
