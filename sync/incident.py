"""What the sync writes to the Sentinel incident: fields from ServiceNow, labels, and comments.

Separate from the run logic (sync/service.py) because it is the part that must hold whatever order the
run is in: fields are applied to the incident as just read (inside its etag-guarded update), comments are
PUT under deterministic ids (a retry rewrites the same comment), and journal entries the pack wrote itself
are recognised by their marker and never copied back.

Comments go through the incident's comment budget (core/comments.py, issue 15.11): a long-lived incident
whose ticket keeps collecting work notes never takes the incident past Sentinel's 100 comments, the last
``SENTINEL_COMMENT_RESERVE`` stay for analysts, and one summary comment says when the sync stops copying.
No comment is ever rewritten with new content (the Defender portal does not show edits): each has an id of
its own (one per journal entry, one per ticket, one per closed ticket).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from core.comments import CommentBudget, Written, comments_count, notice_text
from core.concurrency import run_all
from core.sentinel import SentinelClient, comment_id
from sync import texts
from sync.links import TicketLink
from sync.mapping import SyncMapping, split_classification
from sync.texts import MARKER

log = logging.getLogger(__name__)

JOURNAL_COMMENT = "servicenow-journal"
MARKER_RE = re.compile(re.escape(MARKER) + r" ([A-Za-z0-9._-]+)")


class IncidentWriter:
    """Writes to one Sentinel workspace's incidents on behalf of the sync."""

    def __init__(self, sentinel: SentinelClient, mapping: SyncMapping, username: str, concurrency: int,
                 comments: CommentBudget | None = None) -> None:
        self.sentinel = sentinel
        self.comments = comments or CommentBudget.from_settings(sentinel)
        self.mapping = mapping
        self.username = username  # the integration user: its journal entries are the pack's own
        self.concurrency = concurrency

    # -- comments ---------------------------------------------------------------------------
    def journal_comments(self, link: TicketLink, journal: list[dict], known: set[str]) -> list[tuple[str, str]]:
        """The journal entries not handled yet, as (comment id, text); moves the link's journal position."""
        out: list[tuple[str, str]] = []
        for entry in sorted(journal, key=lambda e: (str(e.get("sys_created_on") or ""), str(e.get("sys_id")))):
            created, sys_id = str(entry.get("sys_created_on") or ""), str(entry.get("sys_id") or "")
            if created < link.journal_since or (created == link.journal_since and sys_id in link.journal_seen):
                continue  # handled by an earlier run
            if entry.get("sys_created_by") == self.username:
                # The pack's own note. Its marker is the last one: a copied comment may quote marker text.
                markers = MARKER_RE.findall(str(entry.get("value") or ""))
                if markers:
                    known.add(markers[-1])  # a Sentinel comment this pack copied: never copy it back
            else:
                out.append((comment_id(link.incident_id, JOURNAL_COMMENT, sys_id),
                            texts.journal_comment(link.number, entry)))
            if created > link.journal_since:
                link.journal_since, link.journal_seen = created, []
            link.journal_seen.append(sys_id)
        return out

    def put_comments(self, link: TicketLink, puts: list[tuple[str, str]], known: set[str], *,
                     also: list = (), incident: dict | None = None) -> tuple[int, str | None]:
        """Write the comments through the incident's comment budget (``incident``, as the run read or wrote it,
        gives the comment count), running ``also`` (other independent writes) beside them: how many comments are
        new on the incident, and a notice when the budget wrote a summary or left comments out. Every id written
        (a budget summary too) is recorded in ``known``, so the sync never copies its own comments to ServiceNow."""
        _, written = run_all(lambda: run_all(*also) if also else [],
                             lambda: self._write(link, puts, incident) if puts else [])
        added, notice = 0, None
        for result in written:
            if result.comment_id is not None:
                added += result.comment_id not in known
                known.add(result.comment_id)
            notice = notice_text(result) or notice
        left_out = len(puts) - sum(1 for result in written if result.ok)
        if left_out:
            log.warning("%d comment(s) of the sync not written to incident %s: %s", left_out, link.incident_key,
                        notice)
        return added, notice

    def _write(self, link: TicketLink, puts: list[tuple[str, str]], incident: dict | None) -> list[Written]:
        """``CommentBudget.write_all`` in chunks of the sync's concurrency (a ticket adopted with a long journal
        does not open a connection per entry); stops where the budget does."""
        written: list[Written] = []
        for start in range(0, len(puts), self.concurrency):
            chunk = puts[start:start + self.concurrency]
            results = self.comments.write_all(link.incident_id, chunk, incident=incident)
            written += results
            if len(results) < len(chunk) or any(r.outcome != "written" for r in results):
                break
            count = comments_count(incident)
            incident = None if count is None else with_count(incident or {}, count + len(results))
        return written

    # -- fields -> Sentinel -------------------------------------------------------------------
    def apply(self, properties: dict, values: dict[str, str], ticket: dict) -> dict[str, str]:
        """Write ``values`` into ``properties`` (the incident as just read); what was applied."""
        applied: dict[str, str] = {}
        for name, value in values.items():
            if name == "classification" and "status" in values:
                continue  # written with the status below
            if name == "status":
                properties["status"] = value
                if value == "Closed":
                    self._classify(properties, values.get("classification") or self.mapping.default_classification,
                                   ticket)
                    applied["classification"] = values.get("classification", "")
            elif name == "classification":
                self._classify(properties, value, ticket)
            elif name == "severity":
                properties["severity"] = value
            elif name == "owner":
                properties["owner"] = self._owner(value)
            applied[name] = value
        return applied

    @staticmethod
    def add_label(properties: dict, label: str) -> bool:
        current = list(properties.get("labels") or [])
        if any(str(item.get("labelName", "")).lower() == label.lower() for item in current):
            return False
        properties["labels"] = [*current, {"labelName": label, "labelType": "User"}]
        return True

    @staticmethod
    def _classify(properties: dict, classification: str, ticket: dict) -> None:
        name, reason = split_classification(classification)
        properties["classification"] = name
        properties["classificationReason"] = reason
        properties["classificationComment"] = texts.classification_comment(ticket)

    def _owner(self, upn: str) -> dict[str, Any]:
        if not upn:
            return {"objectId": None, "email": None, "assignedTo": None, "userPrincipalName": None}
        owner: dict[str, Any] = {"email": upn, "userPrincipalName": upn, "assignedTo": upn, "ownerType": "User"}
        if object_id := self.mapping.owner_object_id(upn):
            owner["objectId"] = object_id
        return owner


def with_count(incident: dict, count: int) -> dict:
    """The incident as ARM would now report it: its comment count after this run's comments."""
    properties = dict(incident.get("properties") or {})
    properties["additionalData"] = {**(properties.get("additionalData") or {}), "commentsCount": count}
    return {**incident, "properties": properties}


__all__ = ["JOURNAL_COMMENT", "MARKER_RE", "IncidentWriter", "with_count"]
