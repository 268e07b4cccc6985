"""``sync.probe.readiness``: what ServiceNow answers with a success but means a failure (issue 15, items 3 and 4)."""

from __future__ import annotations

import json
from functools import cached_property

import pytest

from core.context import Context
from core.settings import Settings
from core.state import StateStore
from localdev.stack import SNOW_USER
from sync.probe import readiness
from tests.sync.conftest import sync_settings


class StackContext(Context):
    """The pack's Context on the test stack's settings, built in this process."""

    def __init__(self, stack, **overrides: str) -> None:
        env = stack.env(**sync_settings(**overrides))
        super().__init__(Settings.from_env(env))
        self._env = env

    @cached_property
    def state(self) -> StateStore:
        return StateStore(connection_string=self._env["STATE_STORAGE_CONNECTION"],
                          prefix=self._env["STATE_TABLE_PREFIX"])


def probe(stack, **overrides: str) -> dict:
    return readiness(StackContext(stack, **overrides), fresh=True)


def test_not_configured(stack):
    result = readiness(StackContext(stack, SERVICENOW_INSTANCE_URL=""))
    assert result["configured"] is False and result["ready"] is False


def test_ready_with_a_readable_journal_and_choices_it_may_not_read(clean_stack):
    clean_stack.snow.seed_incident(work_notes="a note")
    result = probe(clean_stack)
    assert result["ready"] is True, result
    assert result["checks"]["instance"] == "ok" and result["checks"]["journal"] == "readable"
    # itil may not query sys_choice by field: unknown, not missing
    assert all(str(v).startswith("unknown") and "sys_choice" in v for v in result["checks"]["choices"].values())


def test_journal_hidden_by_acl_is_found(clean_stack):
    clean_stack.snow.seed_incident(work_notes="a note")
    clean_stack.snow.hide_journal_from(SNOW_USER)
    result = probe(clean_stack)
    assert result["ready"] is False and result["checks"]["journal"] == "hidden"
    [problem] = result["problems"]
    assert "sys_journal_field" in problem and SNOW_USER in problem


def test_no_journal_at_all_is_unknown_not_hidden(clean_stack):
    result = probe(clean_stack)
    assert result["ready"] is True and result["checks"]["journal"].startswith("unknown")


def test_the_mapping_is_checked_against_the_instance_choices(clean_stack):
    clean_stack.snow.allow_choice_query(SNOW_USER)
    assert probe(clean_stack)["checks"]["choices"] == {"close_code": "ok", "state": "ok"}
    clean_stack.snow.set_choices("close_code", [(c, c) for c in ("Solved (Permanently)", "Solved (Work Around)",
                                                                 "Solution provided")])  # an older instance
    result = probe(clean_stack)
    assert result["ready"] is False
    assert result["checks"]["choices"]["close_code"] == {"missing": ["No resolution provided", "Resolved by caller",
                                                                     "Workaround provided"]}
    problems = " | ".join(result["problems"])
    for entry in ("classification_to_close_code.BenignPositive", "classification_to_close_code.FalsePositive",
                  "classification_to_close_code.Undetermined"):
        assert entry in problems
    assert "TruePositive" not in problems  # "Solution provided" is there
    mapped = json.dumps({"classification_to_close_code": {"BenignPositive": "Solved (Work Around)",
                                                          "FalsePositive": "Solved (Work Around)",
                                                          "Undetermined": "Solved (Work Around)"}})
    assert probe(clean_stack, SERVICENOW_MAPPING=mapped)["ready"] is True


def test_an_empty_choice_list_is_unknown(clean_stack):
    clean_stack.snow.allow_choice_query(SNOW_USER)
    clean_stack.snow.set_choices("close_code", [])
    result = probe(clean_stack)
    assert result["ready"] is True and result["checks"]["choices"]["close_code"].startswith("unknown")


def test_rejected_credentials_are_named_without_the_password(clean_stack):
    result = probe(clean_stack, SERVICENOW_USERNAME="megan.bowen", SERVICENOW_PASSWORD="not-her-password-7")
    assert result["ready"] is False and "SERVICENOW_PASSWORD" in result["checks"]["instance"]
    assert "not-her-password-7" not in json.dumps(result)


def test_a_busy_health_check_costs_nothing(clean_stack):
    ctx = StackContext(clean_stack)
    readiness(ctx, fresh=True)
    requests = len(clean_stack.snow.received)
    for _ in range(5):
        readiness(ctx)
    assert len(clean_stack.snow.received) == requests


@pytest.mark.e2e
def test_the_sync_itself_reports_hidden_work_notes(snow, sync_host):
    from tests.sync.conftest import fresh_incident, ticket_of

    body, incident_id = fresh_incident(sync_host.stack)
    assert sync_host.outbound(body).status_code == 200
    ticket = ticket_of(sync_host.stack, incident_id)
    snow.update_as(ticket["sys_id"], "megan.bowen", work_notes="Called the user.")
    snow.hide_journal_from(SNOW_USER)
    answer = sync_host.push_ticket(ticket["sys_id"])
    assert answer.status_code == 200 and answer.json()["journalHidden"] == 1
