"""What the sync writes to the Sentinel incident: fields from ServiceNow, labels, and comments.

Separate from the run logic (sync/service.py) because it is the part that must hold whatever order the
run is in: fields are applied to the incident as just read (inside its etag-guarded update), comments are
PUT under deterministic ids (a retry rewrites the same comment), and journal entries the pack wrote itself
are recognised by their marker and never copied back.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from core.concurrency import run_bounded
from core.errors import BadRequest
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

    def __init__(self, sentinel: SentinelClient, mapping: SyncMapping, username: str, concurrency: int) -> None:
        self.sentinel = sentinel
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
                      also: list = ()) -> int:
        """PUT the comments side by side (deterministic ids: a retry rewrites the same comment), and run ``also``
        (other independent writes) beside them; how many comments are new."""
        def put(item) -> None:
            if callable(item):
                item()
            else:
                self.sentinel.put_comment(link.incident_id, *item)

        outcomes = run_bounded(put, [*also, *puts], self.concurrency)
        for outcome in outcomes[:len(also)]:
            outcome.get()
        added = 0
        for outcome in outcomes[len(also):]:
            name = outcome.item[0]
            if outcome.error is not None:
                if isinstance(outcome.error, BadRequest):  # e.g. the incident holds 100 comments already
                    log.warning("comment %s not written to incident %s: %s", name, link.incident_key,
                                getattr(outcome.error, "message", outcome.error))
                else:
                    outcome.get()
            added += name not in known
            known.add(name)
        return added

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


__all__ = ["JOURNAL_COMMENT", "MARKER_RE", "IncidentWriter"]
