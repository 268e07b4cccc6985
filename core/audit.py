"""Audit trail of actions that change something outside Sentinel (isolate, disable, block, ...).

Every call of such an action, whether it acted, found nothing to do or was refused, leaves:
- one structured log line per target (``audit {json}``), searchable in Application Insights;
- one incident comment per call, when the case names an incident: what was asked, on which
  entity, the result and the ids the downstream service gave (machine actions, indicators).

The comment id is derived from the incident, the action, the targets named by the payload and
the mode (dry run or live), so a Logic App retry of the same call overwrites the same comment
instead of adding one, and a later live run does not overwrite the dry run's record.

The Defender portal does not show comment edits (issue #15, item 11). With ``edits=False`` a retry whose
content differs (the first attempt failed, the retry did it) writes a new comment, under an id derived
from the call and the content; a retry with the same content rewrites the same comment. The default
(``edits=True``) keeps the older behaviour, in which a retry rewrites the call's one comment, for the
callers that still rely on it (response/run.py: its owner switches). Either way the comment goes through
the incident's comment budget (core/comments.py); the case's incident-trigger body gives the count.

A retry must not erase what the first attempt did: when the first attempt disabled a user and its
answer was lost, the retry finds the user "already disabled". The entries written under a comment
id are kept in the state store (table ``auditlog``, PartitionKey = the comment id), and a target
that was acted on (``done``, ``pending``) keeps that entry when a later write only finds it in
place. Values from outside (host names, UPNs, messages) are HTML-escaped.

What it costs (issue #16): the stored entries are read only when an entry could take an earlier one's place
(``already``, or ``pending`` found rather than started by this call): a first call that acted reads nothing. They
are written side by side with the comment, not after it (a comment that fails then still leaves them for the retry).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

from core.case import Case
from core.comments import CommentBudget
from core.concurrency import run_all
from core.sentinel import COMMENT_MAX_CHARS, SentinelClient, comment_id

if TYPE_CHECKING:
    from core.state import StateStore

log = logging.getLogger(__name__)

# How each outcome of one target shows in the comment.
OUTCOMES = {
    "done": "&#x2705; done",
    "pending": "&#x23F3; pending",
    "already": "&#x2714;&#xFE0F; already in place",
    "would": "&#x1F50E; dry run: would do",
    "refused": "&#x26D4; refused",
    "unavailable": "&#x26A0;&#xFE0F; not available",
    "failed": "&#x274C; failed",
}
ACTED = frozenset({"done", "pending"})  # the call changed something (or started to)
TABLE = "auditlog"


@dataclass(frozen=True)
class AuditEntry:
    """What happened to one target of an action."""

    target: str
    outcome: str  # a key of OUTCOMES
    detail: str = ""
    ids: tuple[str, ...] = ()
    data: dict = field(default_factory=dict, compare=False)  # extra fields for the JSON answer
    # This call started what the entry reports (e.g. a new machine action): no earlier attempt can have recorded
    # it, so it never stands in for an earlier entry (``merge``) and needs no read of the stored ones.
    fresh: bool = field(default=False, compare=False)

    def to_dict(self) -> dict:
        return {"target": self.target, "outcome": self.outcome, "detail": self.detail, "ids": list(self.ids),
                **self.data}

    @classmethod
    def from_dict(cls, data: dict) -> AuditEntry:
        known = ("target", "outcome", "detail", "ids")
        return cls(str(data["target"]), str(data["outcome"]), str(data.get("detail", "")),
                   tuple(data.get("ids") or ()), {k: v for k, v in data.items() if k not in known})


def may_replace(entry: AuditEntry) -> bool:
    """Whether ``merge`` could keep an earlier entry in ``entry``'s place: it found the result in place, or found the
    action pending (a pending action this call started itself is new: no earlier attempt knew its id)."""
    return entry.outcome == "already" or (entry.outcome == "pending" and not entry.fresh)


def merge(previous: Sequence[AuditEntry], current: Sequence[AuditEntry]) -> list[AuditEntry]:
    """``current``, except that a target acted on before keeps that entry when a retry only finds the result
    in place (``already``) or the same action still pending."""
    before = {e.target: e for e in previous}
    merged = []
    for entry in current:
        earlier = before.get(entry.target)
        keep = earlier is not None and earlier.outcome in ACTED and (
            entry.outcome == "already" or (entry.outcome == "pending" and set(entry.ids) == set(earlier.ids)))
        merged.append(earlier if keep and earlier is not None else entry)
    return merged


@dataclass(frozen=True)
class PendingAudit:
    """The two writes of one call's audit (``AuditTrail.prepare``): the comment (its id, or None) and the entries."""

    comment: Callable[[], str | None]
    keep: Callable[[], None]


class AuditTrail:
    """Writes the log lines and the incident comment of one action call."""

    def __init__(self, sentinel: SentinelClient, store: StateStore | None = None, budget: CommentBudget | None = None,
                 *, edits: bool = True) -> None:
        self.sentinel = sentinel
        self.store = store  # keeps what a retry must not overwrite
        self.budget = budget or CommentBudget.from_settings(sentinel)
        self.edits = edits

    @staticmethod
    def comment_key(case: Case, action: str, subjects: Iterable[str], dry_run: bool) -> str:
        """Deterministic comment id: same incident, action, subjects and mode -> same comment."""
        material = "|".join(sorted({s.lower() for s in subjects}))
        digest = hashlib.sha256(material.encode()).hexdigest()[:16]
        return comment_id(case.incident_id or "", "audit", action, digest, "dry-run" if dry_run else "live")

    def record(self, case: Case, action: str, title: str, entries: Sequence[AuditEntry], *,
               subjects: Iterable[str], dry_run: bool, note: str = "") -> str | None:
        """Log, then write (or overwrite) the call's comment, merged with what an earlier attempt of the
        same call recorded, and keep the entries beside it; its id, or None without an incident."""
        pending = self.prepare(case, action, title, entries, subjects=subjects, dry_run=dry_run, note=note)
        return run_all(pending.comment, pending.keep)[0]

    def prepare(self, case: Case, action: str, title: str, entries: Sequence[AuditEntry], *,
                subjects: Iterable[str], dry_run: bool, note: str = "") -> PendingAudit:
        """``record`` in two writes the caller may order: ``comment()`` and ``keep()`` (the entries a retry merges).
        A caller holding leases keeps the entries *before* it gives the leases back, so the next run on the same
        targets finds them (response/run.py); the log lines are written here."""
        _log(action, case.label, case.incident_id, case.alert_id, entries, dry_run, note)
        if not case.incident_id:
            return PendingAudit(lambda: None, lambda: None)
        key = self.comment_key(case, action, subjects, dry_run)
        written = self._merged(key, entries) if any(may_replace(e) for e in entries) else list(entries)
        message = render(case.label, title, written, dry_run=dry_run, note=note)
        cid = key if self.edits else comment_id(key, hashlib.sha256(message.encode()).hexdigest()[:24])
        incident_id, store = case.incident_id, self.store

        def comment() -> str | None:
            return self.budget.write(incident_id, cid, message, incident=case.resource).comment_id

        def keep() -> None:
            if store is not None and any(e.outcome in ACTED for e in written):
                store.upsert(TABLE, {"PartitionKey": key, "RowKey": "entries",
                                     "entries": json.dumps([e.to_dict() for e in written])[:60000]})

        return PendingAudit(comment, keep)

    def _merged(self, key: str, entries: Sequence[AuditEntry]) -> list[AuditEntry]:
        if self.store is None:
            return list(entries)
        row = self.store.get(TABLE, key, "entries")
        if row is None:
            return list(entries)
        try:
            previous = [AuditEntry.from_dict(item) for item in json.loads(row.get("entries") or "[]")]
        except (ValueError, KeyError, TypeError):
            previous = []
        return merge(previous, entries)

    def record_followup(self, incident_id: str | None, label: str, action: str, title: str,
                        entries: Sequence[AuditEntry], key_parts: Sequence[str]) -> str | None:
        """A later comment about the same call (e.g. the final state of an asynchronous action)."""
        _log(action, label, incident_id, None, entries, False, "")
        key = self.followup_key(incident_id, action, key_parts)
        if key and incident_id:
            return self.budget.write(incident_id, key, render(label, title, entries, dry_run=False)).comment_id
        return key

    @staticmethod
    def followup_key(incident_id: str | None, action: str, key_parts: Sequence[str]) -> str | None:
        return comment_id(incident_id, "audit", action, *key_parts) if incident_id else None


def _log(action: str, label: str, incident: str | None, alert: str | None, entries: Sequence[AuditEntry],
         dry_run: bool, note: str) -> None:
    """One structured line per target (one for the call when it had none)."""
    base = {"action": action, "case": label, "incident": incident, "alert": alert, "dryRun": dry_run}
    for entry in entries:
        log.info("audit %s", json.dumps(base | {"target": entry.target, "outcome": entry.outcome,
                                                "detail": entry.detail, "ids": list(entry.ids)}, sort_keys=True))
    if not entries:
        log.info("audit %s", json.dumps(base | {"outcome": "nothing", "detail": note}, sort_keys=True))


def render(label: str, title: str, entries: Sequence[AuditEntry], *, dry_run: bool, note: str = "") -> str:
    """The comment: a header naming the action and the case, then one table row per target."""
    mode = " · <b>DRY RUN: nothing was changed</b>" if dry_run else ""
    head = f"<p><b>{escape(title)}</b> · {escape(label)}{mode}</p>"
    if note:
        head += f"<p>{escape(note[:2000])}</p>"
    rows = [f"<tr><td>{escape(e.target)}</td><td>{OUTCOMES.get(e.outcome, escape(e.outcome))}</td>"
            f"<td>{escape(e.detail)}</td><td>{escape(', '.join(e.ids))}</td></tr>" for e in entries]
    footer = "<p><i>sentinel-playbooks response audit</i></p>"
    start, end = "<table><tr><th>Target</th><th>Result</th><th>Detail</th><th>Ids</th></tr>", "</table>"
    room = COMMENT_MAX_CHARS - len(head) - len(start) - len(end) - len(footer) - 80
    kept: list[str] = []
    for row in rows:  # the blast-radius cap keeps calls small; stay within Sentinel's limit anyway
        if len(row) > room:
            kept.append(f"<tr><td colspan=\"4\">{len(rows) - len(kept)} more not shown</td></tr>")
            break
        kept.append(row)
        room -= len(row)
    return head + (start + "".join(kept) + end if rows else "") + footer


__all__ = ["ACTED", "OUTCOMES", "AuditEntry", "AuditTrail", "PendingAudit", "may_replace", "merge", "render"]
