"""Audit comments: deterministic ids, escaping, the size limit, and what a retry may not overwrite."""

from __future__ import annotations

from core.audit import AuditEntry, AuditTrail, merge, render
from core.case import normalise
from core.sentinel import COMMENT_MAX_CHARS
from tests.fixtures import sample


def test_comment_key_depends_on_incident_action_subjects_and_mode_only():
    case = normalise(sample("incident-trigger.json"))
    key = AuditTrail.comment_key(case, "mde-isolate", ["B", "a"], dry_run=False)
    assert key == AuditTrail.comment_key(case, "mde-isolate", ["A", "b", "a"], dry_run=False)
    assert key != AuditTrail.comment_key(case, "mde-isolate", ["a", "b"], dry_run=True)
    assert key != AuditTrail.comment_key(case, "mde-release", ["a", "b"], dry_run=False)
    assert key != AuditTrail.comment_key(case, "mde-isolate", ["a"], dry_run=False)


def test_render_escapes_what_comes_from_outside():
    text = render("incident 1", "Isolate", [AuditEntry("<img src=x onerror=alert(1)>", "refused", "a & b", ("1",))],
                  dry_run=True, note="<b>")
    assert "<img" not in text and "&lt;img" in text and "a &amp; b" in text and "&lt;b&gt;" in text
    assert "DRY RUN" in text


def test_render_stays_within_sentinel_limit():
    entries = [AuditEntry(f"host-{i}.corp.contoso.com", "done", "x" * 300) for i in range(300)]
    text = render("incident 1", "Isolate", entries, dry_run=False)
    assert len(text) <= COMMENT_MAX_CHARS and "more not shown" in text and text.endswith("</p>")


def test_a_retry_keeps_what_the_first_attempt_did():
    first = [AuditEntry("adele", "done", "disabled", ("u1",)), AuditEntry("ws-1", "pending", "requested", ("a1",)),
             AuditEntry("ws-2", "pending", "requested", ("a2",)), AuditEntry("10.0.0.5", "refused", "private")]
    retry = [AuditEntry("adele", "already", "already disabled", ("u1",)),
             AuditEntry("ws-1", "pending", "already requested", ("a1",)),
             AuditEntry("ws-2", "pending", "requested", ("a3",)),  # a new action: the new entry counts
             AuditEntry("10.0.0.5", "refused", "private"), AuditEntry("bob", "failed", "403")]
    merged = merge(first, retry)
    assert [e.detail for e in merged] == ["disabled", "requested", "requested", "private", "403"]
    assert merged[2].ids == ("a3",)
    assert merge([AuditEntry("x", "failed", "503")], [AuditEntry("x", "done", "ok")])[0].outcome == "done"
