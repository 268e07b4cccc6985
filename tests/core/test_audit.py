"""Audit comments: deterministic ids, escaping, the size limit, and what a retry may not overwrite."""

from __future__ import annotations

import uuid

import pytest

from core.audit import AuditEntry, AuditTrail, merge, render
from core.case import normalise
from core.comments import CommentBudget
from core.credentials import TokenProvider
from core.errors import DownstreamError
from core.http import build_session
from core.sentinel import COMMENT_MAX_CHARS, SentinelClient
from core.state import StateStore
from tests.core import test_sentinel
from tests.fixtures import INCIDENT_4711, sample


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


# -- what the stored entries cost: read only when they can matter, written beside the comment --------------------
servers, arm = test_sentinel.servers, test_sentinel.arm


class CountingStore(StateStore):
    """The real store (Azurite), counting the audit rows it reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []

    def get(self, table: str, partition: str, row: str) -> dict | None:
        self.reads.append(table)
        return super().get(table, partition, row)


@pytest.fixture
def trail(servers, stack):
    entra, arm_emulator = servers
    tokens = TokenProvider(test_sentinel.EmulatorCredential(entra))
    sentinel = SentinelClient(build_session(timeout=2, retries=0, backoff=0.01), tokens, arm_emulator.url)
    store = CountingStore(connection_string=stack.azurite.connection_string, prefix="au" + uuid.uuid4().hex[:8])
    return AuditTrail(sentinel, store, CommentBudget(sentinel), edits=False)


def test_a_first_call_that_acted_reads_no_earlier_entries(arm, trail):
    case = normalise(sample("incident-trigger.json"))
    started = [AuditEntry("ws-1", "pending", "requested", ("a1",), fresh=True), AuditEntry("adele", "done", "disabled"),
               AuditEntry("10.0.0.5", "refused", "private")]
    first = trail.record(case, "mde-isolate", "Isolate", started, subjects=["ws-1"], dry_run=False)
    assert trail.store.reads == []
    # A retry that finds the action it started pending, and the user disabled: reads them, and keeps the first words.
    found = [AuditEntry("ws-1", "pending", "already requested", ("a1",)), AuditEntry("adele", "already", "disabled"),
             AuditEntry("10.0.0.5", "refused", "private")]
    again = trail.record(case, "mde-isolate", "Isolate", found, subjects=["ws-1"], dry_run=False)
    assert trail.store.reads == ["auditlog"] and again == first  # the same content: the same comment, not a new one
    assert len(arm.comments(INCIDENT_4711)) == 1


def test_the_entries_are_kept_when_the_comment_fails(arm, trail):
    """Written beside the comment, not after it: a comment that fails still leaves what the call did to its retry."""
    case = normalise(sample("incident-trigger.json"))
    arm.fail(500, times=1, method="PUT", path=r"/comments/")
    with pytest.raises(DownstreamError):
        trail.record(case, "entra-disable-user", "Disable", [AuditEntry("adele", "done", "disabled", ("u1",))],
                     subjects=["adele"], dry_run=False)
    assert arm.comments(INCIDENT_4711) == []
    trail.record(case, "entra-disable-user", "Disable", [AuditEntry("adele", "already", "already disabled", ("u1",))],
                 subjects=["adele"], dry_run=False)
    (comment,) = arm.comments(INCIDENT_4711)
    assert "already" not in comment["properties"]["message"] and "disabled" in comment["properties"]["message"]
