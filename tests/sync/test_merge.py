"""The three-way merge: who wins which field, and why a second run writes nothing."""

from __future__ import annotations

import json

import pytest

from sync.mapping import SyncMapping
from sync.merge import parse_sentinel_time, parse_servicenow_time, plan, sentinel_view, servicenow_view

MEGAN_SYS_ID = "7b3e9a15f2c84d06e9a1b7c53d2f8e46"
MAPPING = SyncMapping.from_setting(json.dumps({"owners": {"megan.bowen@contoso.com": MEGAN_SYS_ID}}))
T0 = 1_800_000_000.0


def sen(status="Active", severity="High", owner="", classification=""):
    return {"status": status, "severity": severity, "owner": owner, "classification": classification}


def snow(state="2", priority="2", owner="", close_code=""):
    return {"status": state, "severity": priority, "owner": owner, "classification": close_code}


def decide(s, n, base_s, base_n, s_at=T0, n_at=T0):
    return plan(s, n, base_s, base_n, MAPPING, sentinel_changed_at=s_at, servicenow_changed_at=n_at)


def test_in_step_means_nothing_to_do():
    assert not decide(sen(), snow(), sen(), snow())


def test_a_change_on_one_side_is_copied_to_the_other():
    result = decide(sen(severity="Low"), snow(), sen(), snow())
    assert result.to_servicenow == {"severity": "Low"} and not result.to_sentinel
    result = decide(sen(), snow(priority="3"), sen(), snow())
    assert result.to_sentinel == {"severity": "Medium"} and not result.to_servicenow


def test_lossy_mapping_is_quiet():
    # In Progress -> On Hold is still Sentinel "Active": nothing to write anywhere.
    assert not decide(sen(), snow(state="3"), sen(), snow(state="2"))
    # ...and the sync's own write (New -> state 1) reads back as New: not a change.
    assert not decide(sen(status="New"), snow(state="1"), sen(status="New"), snow(state="1"))


def test_closing_carries_the_classification_both_ways():
    result = decide(sen(status="Closed", classification="FalsePositive/InaccurateData"), snow(), sen(), snow())
    assert result.to_servicenow == {"status": "Closed", "classification": "FalsePositive/InaccurateData"}
    result = decide(sen(), snow(state="7", close_code="Solution provided"), sen(), snow())
    assert result.to_sentinel == {"status": "Closed", "classification": "TruePositive/SuspiciousActivity"}
    result = decide(sen(), snow(state="8"), sen(), snow())  # canceled, no close code
    assert result.to_sentinel == {"status": "Closed", "classification": "Undetermined"}


def test_reopening_both_ways():
    closed_s, closed_n = sen(status="Closed", classification="Undetermined"), snow(state="6",
                                                                                  close_code="Workaround provided")
    assert decide(sen(status="Active"), closed_n, closed_s, closed_n).to_servicenow == {"status": "Active"}
    assert decide(closed_s, snow(state="2"), closed_s, closed_n).to_sentinel == {"status": "Active"}


def test_classification_alone_is_merged_while_both_are_closed():
    closed_s = sen(status="Closed", classification="Undetermined")
    closed_n = snow(state="6", close_code="Workaround provided")
    result = decide(closed_s, snow(state="6", close_code="Solution provided"), closed_s, closed_n)
    assert result.to_sentinel == {"classification": "TruePositive/SuspiciousActivity"}


@pytest.mark.parametrize(("s_at", "n_at", "winner"), [
    (T0, T0 + 2, "servicenow"),
    (T0 + 2, T0, "sentinel"),
    (T0 + 0.9, T0, "sentinel"),  # same second: a tie goes to Sentinel
])
def test_conflict_newest_change_wins(s_at, n_at, winner):
    result = decide(sen(severity="Low"), snow(priority="5"), sen(), snow(), s_at=s_at, n_at=n_at)
    assert result.conflicts == [{"field": "severity", "sentinel": "Low", "servicenow": "5", "winner": winner}]
    if winner == "servicenow":
        assert result.to_sentinel == {"severity": "Informational"} and not result.to_servicenow
    else:
        assert result.to_servicenow == {"severity": "Low"} and not result.to_sentinel


def test_owner_only_where_it_maps():
    assert decide(sen(owner="megan.bowen@contoso.com"), snow(), sen(), snow()).to_servicenow == {
        "owner": "megan.bowen@contoso.com"}
    assert not decide(sen(owner="someone@contoso.com"), snow(), sen(), snow())  # no mapping: not synced
    assert not decide(sen(owner="someone@contoso.com"), snow(), sen(owner="someone@contoso.com"), snow())
    assert decide(sen(), snow(owner=MEGAN_SYS_ID), sen(), snow()).to_sentinel == {"owner": "megan.bowen@contoso.com"}
    assert not decide(sen(), snow(owner="ffff"), sen(), snow())


def test_views_of_the_samples():
    from tests.fixtures import sample

    props = sample("incident-trigger-updated.json")["object"]["properties"]
    assert sentinel_view(props) == {"status": "Closed", "severity": "High", "owner": "megan.bowen@contoso.com",
                                    "classification": "TruePositive/SuspiciousActivity"}
    import json

    from tests.fixtures import FIXTURES

    ticket = json.loads((FIXTURES / "servicenow-incident.json").read_text())["result"]
    assert servicenow_view(ticket, MAPPING) == {"status": "2", "severity": "2",
                                                "owner": "7b3e9a15f2c84d06e9a1b7c53d2f8e46", "classification": ""}


def test_times():
    assert parse_sentinel_time("2026-11-20T11:42:17.5531208Z") == pytest.approx(
        parse_servicenow_time("2026-11-20 11:42:17") + 0.5531208)
    assert parse_sentinel_time(None) == 0.0 and parse_servicenow_time("garbage") == 0.0
