"""The incident <-> ticket map and the sync bookkeeping, in Table Storage.

Table ``snowlinks`` (one table, three kinds of row):
- PartitionKey ``incident``, RowKey = incident GUID (lower case): a ``TicketLink``. It is created by
  a conditional insert, so of two concurrent "incident created" runs exactly one creates the ticket.
  It holds what the last sync saw on each side (the merge base, the ticket's ``sys_mod_count``, the
  journal position, the Sentinel comments already handled) and a short lease: every sync of one
  incident/ticket pair takes the lease first, so writes to a pair never interleave.
- PartitionKey ``ticket``, RowKey = ticket sys_id: the way back (inbound push, poll) to the incident.
- PartitionKey ``poll``, RowKey ``watermark``: the newest ``sys_updated_on`` the poller has handled
  (``since``) and, after a run that read everything, the start of that run minus the look-back
  (``floor``, see ``sync/service.py``). It is first written when the pack creates its first ticket;
  before that there is nothing to poll.
- PartitionKey ``poll``, RowKey ``lastrun``: how many poll runs finished, when the last one did and
  its summary (what an operator looks at first when tickets seem not to sync).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import Busy
from core.state import StateStore, key_safe

log = logging.getLogger(__name__)

TABLE = "snowlinks"
INCIDENT = "incident"
TICKET = "ticket"
POLL, WATERMARK, LAST_RUN = "poll", "watermark", "lastrun"


def new_owner() -> str:
    """A lease owner id: one per sync run."""
    return uuid.uuid4().hex


@dataclass
class TicketLink:
    """One Sentinel incident and its ServiceNow ticket, with what the last sync saw of both."""

    incident_key: str  # incident GUID, lower case
    incident_id: str  # full ARM id
    sys_id: str = ""
    number: str = ""
    state: str = "creating"  # creating | linked
    base_sentinel: dict[str, str] = field(default_factory=dict)  # Sentinel-side values at the last sync
    base_servicenow: dict[str, str] = field(default_factory=dict)  # ServiceNow-side values at the last sync
    mod_count: int = -1  # the ticket's sys_mod_count the last sync accounted for
    journal_since: str = ""  # sys_created_on of the newest journal entry handled
    journal_seen: list[str] = field(default_factory=list)  # journal sys_ids handled at journal_since
    known_comments: list[str] = field(default_factory=list)  # Sentinel comments not to push (done, or ours)
    lease_until: float = 0.0
    lease_owner: str = ""
    etag: str | None = None

    def entity(self) -> dict:
        return {
            "PartitionKey": INCIDENT, "RowKey": key_safe(self.incident_key), "incident_id": self.incident_id,
            "sys_id": self.sys_id, "number": self.number, "state": self.state,
            "base_sentinel": json.dumps(self.base_sentinel), "base_servicenow": json.dumps(self.base_servicenow),
            "mod_count": self.mod_count, "journal_since": self.journal_since,
            "journal_seen": json.dumps(self.journal_seen), "known_comments": json.dumps(self.known_comments),
            "lease_until": float(self.lease_until), "lease_owner": self.lease_owner,
        }

    @classmethod
    def from_entity(cls, row: dict) -> TicketLink:
        return cls(
            incident_key=row["RowKey"], incident_id=row.get("incident_id", ""), sys_id=row.get("sys_id", ""),
            number=row.get("number", ""), state=row.get("state", "creating"),
            base_sentinel=json.loads(row.get("base_sentinel") or "{}"),
            base_servicenow=json.loads(row.get("base_servicenow") or "{}"),
            mod_count=int(row.get("mod_count", -1)), journal_since=row.get("journal_since", ""),
            journal_seen=json.loads(row.get("journal_seen") or "[]"),
            known_comments=json.loads(row.get("known_comments") or "[]"),
            lease_until=float(row.get("lease_until", 0.0)), lease_owner=row.get("lease_owner", ""),
            etag=row.get("_etag"),
        )


class LinkStore:
    """Conditional inserts and leases over ``snowlinks``; every write is etag-guarded."""

    def __init__(self, store: StateStore, *, lease_seconds: float = 120.0, poll_seconds: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.clock = clock

    # -- links --------------------------------------------------------------------------------
    def get(self, incident_key: str) -> TicketLink | None:
        row = self.store.get(TABLE, INCIDENT, key_safe(incident_key))
        return TicketLink.from_entity(row) if row else None

    def claim(self, incident_key: str, incident_id: str, owner: str) -> TicketLink | None:
        """Create the link, leased to ``owner``; None when it exists already (someone else created it)."""
        link = TicketLink(incident_key, incident_id, lease_owner=owner, lease_until=self.clock() + self.lease_seconds)
        if not self.store.insert_if_absent(TABLE, link.entity()):
            return None
        return self._reload(link)

    def acquire(self, incident_key: str, owner: str, *, wait: float = 20.0) -> TicketLink | None:
        """The link, leased to ``owner``; None if there is none. Busy (429, retry later) when busy too long."""
        deadline = self.clock() + wait
        while True:
            link = self.get(incident_key)
            if link is None:
                return None
            if link.lease_until <= self.clock() or link.lease_owner == owner:
                link.lease_owner, link.lease_until = owner, self.clock() + self.lease_seconds
                if self.store.replace_if_unchanged(TABLE, link.entity(), link.etag or "*"):
                    return self._reload(link)
                continue  # someone else took it between our read and write: look again at once
            if self.clock() >= deadline:
                raise Busy(f"the sync of incident {incident_key} is busy in another run; retry shortly",
                           code="SyncBusy", retry_after=5)
            time.sleep(self.poll_seconds)

    def save(self, link: TicketLink, *, release: bool = True) -> None:
        """Write the link if we still hold it; Busy (429) when our lease expired and another run took it."""
        if release:
            link.lease_owner, link.lease_until = "", 0.0
        if not self.store.replace_if_unchanged(TABLE, link.entity(), link.etag or "*"):
            raise Busy(f"the sync of incident {link.incident_key} took longer than its lease; retry",
                       code="SyncLeaseLost", retry_after=5)
        if not release:
            self._reload(link)

    def release(self, link: TicketLink) -> None:
        """Give the lease back after a failure, keeping what was saved; best effort."""
        current = self.get(link.incident_key)
        if current is None or current.lease_owner != link.lease_owner or not link.lease_owner:
            return
        current.lease_owner, current.lease_until = "", 0.0
        if not self.store.replace_if_unchanged(TABLE, current.entity(), current.etag or "*"):
            log.info("lease of %s changed hands before release", link.incident_key)

    def _reload(self, link: TicketLink) -> TicketLink:
        row = self.store.get(TABLE, INCIDENT, key_safe(link.incident_key))
        if row is None:
            raise Busy(f"the link of incident {link.incident_key} disappeared; retry", retry_after=5)
        link.etag = row.get("_etag")
        return link

    # -- the way back -------------------------------------------------------------------------
    def index_ticket(self, sys_id: str, incident_key: str, incident_id: str) -> None:
        self.store.upsert(TABLE, {"PartitionKey": TICKET, "RowKey": key_safe(sys_id), "incident_key": incident_key,
                                  "incident_id": incident_id})

    def incident_for_ticket(self, sys_id: str) -> str | None:
        row = self.store.get(TABLE, TICKET, key_safe(sys_id))
        return row.get("incident_key") if row else None

    def forget_ticket(self, sys_id: str) -> None:
        self.store.delete(TABLE, TICKET, key_safe(sys_id))

    # -- poll watermark -----------------------------------------------------------------------
    def watermark(self) -> str | None:
        mark = self.poll_mark()
        return mark[0] if mark else None

    def poll_mark(self) -> tuple[str, str | None] | None:
        """(since, floor or None), or None before the first ticket."""
        row = self.store.get(TABLE, POLL, WATERMARK)
        return (row.get("since", ""), row.get("floor") or None) if row else None

    def start_watermark(self, since: str) -> None:
        """Set the first watermark (the first ticket's creation); later calls change nothing."""
        self.store.insert_if_absent(TABLE, {"PartitionKey": POLL, "RowKey": WATERMARK, "since": since})

    def set_watermark(self, since: str, floor: str | None = None) -> None:
        row = {"PartitionKey": POLL, "RowKey": WATERMARK, "since": since}
        if floor:
            row["floor"] = floor
        self.store.upsert(TABLE, row)

    def record_poll(self, summary: dict) -> int:
        """Count a finished poll run and keep its summary; returns the run count."""
        row = self.store.get(TABLE, POLL, LAST_RUN)
        runs = int(row.get("runs", 0)) + 1 if row else 1
        self.store.upsert(TABLE, {"PartitionKey": POLL, "RowKey": LAST_RUN, "runs": runs,
                                  "finished_at": self.clock(), "summary": json.dumps(summary, default=str)[:30_000]})
        return runs

    def last_poll(self) -> dict | None:
        row = self.store.get(TABLE, POLL, LAST_RUN)
        if row is None:
            return None
        return {"runs": int(row.get("runs", 0)), "finished_at": float(row.get("finished_at", 0.0)),
                "summary": json.loads(row.get("summary") or "{}")}


__all__ = ["LinkStore", "TicketLink", "new_owner"]
