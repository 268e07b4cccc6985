"""Analyst task templates (core/tasks.py): data per outcome, overridable or off; ids deterministic."""

from __future__ import annotations

import pytest

from core.errors import ConfigurationError
from core.tasks import TEMPLATES, Tasks, task_id, templates_from_setting
from tests.fixtures import INCIDENT_4711


def test_defaults_cover_the_outcomes_the_issue_names():
    assert set(TEMPLATES) == {"enrichment.malicious", "approval.block", "isolation"}
    assert templates_from_setting("") == TEMPLATES
    assert templates_from_setting("off") == {}


def test_a_json_setting_replaces_or_silences_outcomes():
    merged = templates_from_setting('{"isolation": [], "approval.block": [{"title": "Call {user}"}]}')
    assert merged["isolation"] == () and merged["approval.block"] == (("Call {user}", ""),)
    assert merged["enrichment.malicious"] == TEMPLATES["enrichment.malicious"]
    assert Tasks(None, merged).titles("approval.block", user="adele") == ["Call adele"]


@pytest.mark.parametrize("raw", ["{not json", "[1]", '{"isolation": "x"}', '{"isolation": [{"no": "title"}]}'])
def test_a_malformed_setting_names_itself(raw):
    with pytest.raises(ConfigurationError, match="INCIDENT_TASKS"):
        templates_from_setting(raw)


def test_ids_depend_on_incident_outcome_and_position_only():
    assert task_id(INCIDENT_4711, "isolation", 0) == task_id(INCIDENT_4711.upper(), "isolation", 0)
    assert len({task_id(INCIDENT_4711, o, p) for o in ("isolation", "approval.block") for p in (0, 1)}) == 4
