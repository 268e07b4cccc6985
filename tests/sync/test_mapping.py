"""The mapping tables: defaults, overrides by SERVICENOW_MAPPING, and malformed overrides named."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigurationError
from sync.mapping import DEFAULT_MAPPING, SyncMapping


def test_defaults_round_trip_every_sentinel_status():
    mapping = SyncMapping.from_setting("")
    for status in ("New", "Active", "Closed"):
        assert mapping.status_for(mapping.state_for(status)) == status
    assert [mapping.status_for(s) for s in ("1", "2", "3", "6", "7", "8")] == [
        "New", "Active", "Active", "Closed", "Closed", "Closed"]
    assert mapping.impact_urgency_for("High") == ("1", "2")
    assert mapping.severity_for("1") == mapping.severity_for("2") == "High"
    assert mapping.close_code_for("TruePositive/SuspiciousActivity") == "Solution provided"
    assert mapping.close_code_for("FalsePositive/InaccurateData") == "No resolution provided"
    assert mapping.classification_for("Resolved by caller") == "BenignPositive/SuspiciousButExpected"
    assert mapping.classification_for("Solved (Permanently)") == "Undetermined"  # a legacy code: not a default


def test_defaults_are_the_current_out_of_box_close_codes():
    """issue 15.4: ServiceNow's current choices, both ways; the legacy codes are gone from the defaults."""
    from localdev.emulators.servicenow import OOB_CHOICES

    oob = {code for code, _ in OOB_CHOICES["close_code"]}
    mapping = SyncMapping.from_setting("")
    assert set(mapping.classification_to_close_code.values()) <= oob
    assert set(mapping.close_code_to_classification) == oob
    assert mapping.is_read_only("7") and mapping.is_read_only("8") and not mapping.is_read_only("6")
    assert mapping.classification_for("a code nobody mapped") == "Undetermined"
    assert mapping.owner_sys_id("") == "" and mapping.owner_sys_id("someone@contoso.com") is None


def test_override_merges_entry_by_entry():
    override = {
        "status_to_state": {"Closed": "7"},
        "close_code_to_classification": {"Resolved by caller": "BenignPositive/SuspiciousButExpected",
                                         "User error": None},
        "owners": {"Megan.Bowen@contoso.com": "7b3e9a15f2c84d06e9a1b7c53d2f8e46",
                   "adele.vance@contoso.com": {"sys_id": "c81f47a2d9e35b60a4f7c19e2b8d6a53",
                                               "object_id": "b1a2c3d4-e5f6-4789-8abc-def012345678"}},
        "source": "Sentinel (prod)",
    }
    mapping = SyncMapping.from_setting(json.dumps(override))
    assert mapping.state_for("Closed") == "7" and mapping.state_for("Active") == "2"
    assert mapping.classification_for("Resolved by caller") == "BenignPositive/SuspiciousButExpected"
    assert mapping.classification_for("User error") == "Undetermined"  # removed -> default
    assert mapping.owner_sys_id("megan.bowen@contoso.com") == "7b3e9a15f2c84d06e9a1b7c53d2f8e46"
    assert mapping.owner_upn("c81f47a2d9e35b60a4f7c19e2b8d6a53") == "adele.vance@contoso.com"
    assert mapping.owner_object_id("ADELE.VANCE@contoso.com") == "b1a2c3d4-e5f6-4789-8abc-def012345678"
    assert mapping.source == "Sentinel (prod)"
    assert DEFAULT_MAPPING["status_to_state"]["Closed"] == "6"  # the default itself is untouched


@pytest.mark.parametrize(("override", "fragment"), [
    ("{not json", "not valid JSON"),
    ("[1]", "JSON object"),
    ('{"colours": {}}', "unknown key(s) colours"),
    ('{"status_to_state": {"Resolved": "6"}}', "status_to_state.Resolved"),
    ('{"status_to_state": {"Closed": "3"}}', "does not map '3' back to Closed"),
    ('{"severity_to_impact_urgency": {"High": ["1"]}}', "severity_to_impact_urgency.High"),
    ('{"priority_to_severity": {"1": "Critical"}}', "not a Sentinel severity"),
    ('{"close_code_to_classification": {"Duplicate": "BenignPositive"}}', "needs a reason"),
    ('{"close_code_to_classification": {"Duplicate": "Undetermined/InaccurateData"}}', "takes none"),
    ('{"close_code_to_classification": {"Duplicate": "Maybe"}}', "names classification 'Maybe'"),
    ('{"owners": {"a@b.c": 5}}', "owners.a@b.c"),
    ('{"owners": {"a@b.c": "javascript:gs.getUserID()"}}', "owners.a@b.c"),
    ('{"source": "javascript:gs.sleep(9000)"}', "javascript:"),
    ('{"source": "Sentinel^NQsys_id!=x"}', "source must be letters"),
    ('{"read_only_states": "7"}', "read_only_states"),
])
def test_malformed_override_is_named(override, fragment):
    with pytest.raises(ConfigurationError) as raised:
        SyncMapping.from_setting(override)
    assert "SERVICENOW_MAPPING" in raised.value.message and fragment in raised.value.message
