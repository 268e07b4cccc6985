"""The comment budget (core/comments.py) against the ARM emulator over real HTTP: Sentinel's 100 comments."""

from __future__ import annotations

import pytest

from core.comments import MAX_COMMENTS, CommentBudget
from core.credentials import TokenProvider
from core.http import build_session
from core.sentinel import SentinelClient, comment_id
from tests.core import test_sentinel
from tests.fixtures import INCIDENT_4711, sample

RESERVE = 10
# The ARM emulator fixtures of the Sentinel client's tests: one emulator per module, reset per test.
servers, arm = test_sentinel.servers, test_sentinel.arm


@pytest.fixture(scope="module")
def budget(servers):
    entra, arm = servers
    tokens = TokenProvider(test_sentinel.EmulatorCredential(entra))
    client = SentinelClient(build_session(timeout=2, retries=1, backoff=0.01), tokens, arm.url)
    return CommentBudget(client, reserve=RESERVE)


def analyst_comments(budget: CommentBudget, count: int) -> None:
    for i in range(count):
        budget.sentinel.put_comment(INCIDENT_4711, f"analyst-{i}", f"<p>analyst note {i}</p>")


def test_a_long_lived_incident_keeps_room_for_analysts(arm, budget):
    """Runs keep adding new information; the pack stops one summary short of the analysts' reserve."""
    outcomes = []
    for run in range(120):
        key = comment_id(INCIDENT_4711, "test-run", str(run))
        outcomes.append(budget.write(INCIDENT_4711, key, f"<p>run {run}: new verdicts</p>").outcome)
    ours = MAX_COMMENTS - RESERVE - 1
    assert outcomes[:ours] == ["written"] * ours
    assert outcomes[ours] == "summary" and set(outcomes[ours + 1:]) == {"skipped"}
    comments = arm.comments(INCIDENT_4711)
    assert len(comments) == MAX_COMMENTS - RESERVE
    summary = comments[-1]["properties"]["message"]
    assert "comment budget reached" in summary and f"run {ours}: new verdicts" in summary
    analyst_comments(budget, RESERVE)  # the analysts still have their ten
    assert len(arm.comments(INCIDENT_4711)) == MAX_COMMENTS


def test_a_retry_near_the_limit_still_rewrites_its_own_comment(arm, budget):
    analyst_comments(budget, MAX_COMMENTS - RESERVE - 2)
    key = comment_id(INCIDENT_4711, "test-run", "last")
    assert budget.write(INCIDENT_4711, key, "<p>same</p>").outcome == "written"
    budget.sentinel.put_comment(INCIDENT_4711, "analyst-late", "<p>late</p>")  # now past the pack's share
    assert budget.write(INCIDENT_4711, key, "<p>same</p>").outcome == "written"  # a retry of what exists
    assert budget.write(INCIDENT_4711, comment_id(INCIDENT_4711, "other"), "<p>new</p>").outcome == "skipped"


def test_the_count_of_an_incident_already_read_costs_no_call(arm, budget):
    incident = budget.sentinel.get_incident(INCIDENT_4711)
    arm.reset()
    arm.seed_from_trigger(sample("incident-trigger.json"))
    budget.write(INCIDENT_4711, comment_id(INCIDENT_4711, "x"), "<p>x</p>", incident=incident)
    assert [r.method for r in arm.received] == ["PUT"]


def test_a_full_incident_is_a_skip_not_an_error(arm, budget):
    """Comments added after our count (analysts racing the run) may fill the incident: Sentinel's 400 is a skip."""
    stale = budget.sentinel.get_incident(INCIDENT_4711)
    analyst_comments(budget, MAX_COMMENTS)
    written = budget.write(INCIDENT_4711, comment_id(INCIDENT_4711, "late"), "<p>late</p>", incident=stale)
    assert written.outcome == "skipped" and "100" in written.detail


def test_the_audit_trail_writes_changed_content_as_a_new_comment(arm, budget):
    """AuditTrail(edits=False): a retry that did what the first attempt failed to do adds a comment; a retry with
    the same result rewrites the same one. The first attempt's comment is never edited."""
    from core.audit import AuditEntry, AuditTrail
    from core.case import normalise

    case = normalise(sample("incident-trigger.json"))
    trail = AuditTrail(budget.sentinel, budget=budget, edits=False)
    failed = trail.record(case, "mde-isolate", "Isolate", [AuditEntry("ws-1", "failed", "throttled")],
                          subjects=["ws-1"], dry_run=False)
    done = trail.record(case, "mde-isolate", "Isolate", [AuditEntry("ws-1", "pending", "requested", ("a1",))],
                        subjects=["ws-1"], dry_run=False)
    again = trail.record(case, "mde-isolate", "Isolate", [AuditEntry("ws-1", "pending", "requested", ("a1",))],
                         subjects=["ws-1"], dry_run=False)
    assert failed != done == again
    texts = {c["name"]: c["properties"]["message"] for c in arm.comments(INCIDENT_4711)}
    assert "throttled" in texts[failed] and "requested" in texts[done] and len(texts) == 2
    legacy = AuditTrail(budget.sentinel, budget=budget)  # edits=True: the call's one comment, rewritten
    assert legacy.record(case, "mde-release", "Release", [AuditEntry("ws-1", "failed", "x")], subjects=["ws-1"],
                         dry_run=False) == legacy.record(case, "mde-release", "Release",
                                                         [AuditEntry("ws-1", "done", "y")], subjects=["ws-1"],
                                                         dry_run=False)
