"""The incident <-> ticket map and the sync bookkeeping, in Table Storage.

Table ``snowlinks`` (one table, three kinds of row):
- PartitionKey ``incident``, RowKey = incident GUID (lower case): a ``TicketLink``. It is created by
  a conditional insert, so of two concurrent "incident created" runs exactly one creates the ticket.
  It holds what the last sync saw on each side (the merge base, the ticket's ``sys_mod_count``, the
  journal position, the Sentinel comments already handled and how many the incident had) and a short,
  renewable lease: a run that writes to ServiceNow takes it first, so ServiceNow writes to a pair never
  interleave. A run that writes only to Sentinel (its writes are etag-guarded or have deterministic ids)
  saves the row conditionally on the etag it read instead (``save_if_unchanged``).
- PartitionKey ``ticket``, RowKey = ticket sys_id: the way back (inbound push) to the incident.
- PartitionKey ``poll``, RowKey ``watermark``: the poll cursor (``PollCursor``), first written when the pack
  creates its first ticket; before that there is nothing to poll. RowKey ``lastrun``: the last poll run that
  did something (synced, failed or stopped), with its summary.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from core.concurrency import run_bounded
from core.errors import Busy
from core.held_here import HeldHere, new_owner
from core.state import MAX_TRANSACTION, StateStore, TransactionFailed, key_safe, op_replace

log = logging.getLogger(__name__)

TABLE = "snowlinks"
INCIDENT = "incident"
TICKET = "ticket"
POLL, WATERMARK, LAST_RUN = "poll", "watermark", "lastrun"
# A lease long enough for one pair's sync (a few requests) and short enough that a run killed mid-way (storage
# gone, instance recycled) holds the pair back for half a minute, not two; a long run renews it.
LEASE_SECONDS = 30.0
CHUNK = 30_000  # characters per string property (Table Storage allows 64 KiB, UTF-16)
MAX_RECENT = 5_000
KEYS_PER_QUERY = 14  # a filter holds at most 15 comparisons: the partition and 14 keys (core/state.py get_many)
# An entity group transaction carries at most 100 rows and 4 MiB; links are a few KB, but a long-lived pair's
# bookkeeping grows, so a batch also stops at about 2 MB of JSON.
BATCH_BYTES = 2_000_000


# Pairs whose lease a run of this process holds: a run that finds its pair leased waits on the holder's event when it
# is here (no Table reads while it waits: issue #16, no spinning locks) and answers Busy (429 + Retry-After) at once
# when it is not: its Logic App's retry then syncs what the other run may not have seen.
HELD_HERE = HeldHere()


@dataclass
class TicketLink:
    """One Sentinel incident and its ServiceNow ticket, with what the last sync saw of both."""

    incident_key: str  # incident GUID, lower case
    incident_id: str  # full ARM id
    sys_id: str = ""
    number: str = ""
    state: str = "creating"  # creating | linked | closed (the ticket is read-only: nothing is written to it)
    base_sentinel: dict[str, str] = field(default_factory=dict)  # Sentinel-side values at the last sync
    base_servicenow: dict[str, str] = field(default_factory=dict)  # ServiceNow-side values at the last sync
    mod_count: int = -1  # the ticket's sys_mod_count the last sync accounted for
    journal_since: str = ""  # sys_created_on of the newest journal entry handled
    journal_seen: list[str] = field(default_factory=list)  # journal sys_ids handled at journal_since
    known_comments: list[str] = field(default_factory=list)  # Sentinel comments not to push (done, or ours)
    comments_count: int = -1  # the incident's commentsCount after the last sync (-1: unknown)
    previous: list[list[str]] = field(default_factory=list)  # [sys_id, number] of earlier tickets, now closed
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
            "comments_count": self.comments_count, "previous": json.dumps(self.previous),
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
            comments_count=int(row.get("comments_count", -1)), previous=json.loads(row.get("previous") or "[]"),
            lease_until=float(row.get("lease_until", 0.0)), lease_owner=row.get("lease_owner", ""),
            etag=row.get("_etag"),
        )

    def leased_by_other(self, owner: str, now: float) -> bool:
        return bool(self.lease_owner) and self.lease_owner != owner and self.lease_until > now


@dataclass
class PollCursor:
    """Where the poller stands (see sync/poll.py).

    ``stamp``/``sys_id``: the next run reads the tickets after this position in (sys_updated_on, sys_id)
    order. ``recheck``: a second from which, once a run has caught up, the next run reads again, because
    changes stamped there may still have been committing when they were read past. ``complete``: the last run
    read to the end. ``recent``: sys_id -> [sys_updated_on, sys_mod_count] of the changes handled that a
    re-read may meet again, so they cost nothing the second time.
    """

    stamp: str
    sys_id: str = ""
    recheck: str = ""
    complete: bool = True
    recent: dict[str, list] = field(default_factory=dict)

    def entity(self) -> dict:
        row = {"PartitionKey": POLL, "RowKey": WATERMARK, "stamp": self.stamp, "sys_id": self.sys_id,
               "recheck": self.recheck, "complete": self.complete}
        text = json.dumps(self.recent, separators=(",", ":"))
        for index in range(0, max(1, len(text)), CHUNK):
            row[f"recent{index // CHUNK}"] = text[index:index + CHUNK]
        return row

    @classmethod
    def from_entity(cls, row: dict) -> PollCursor:
        if "stamp" not in row:  # a watermark row of the earlier design: read again from its older mark
            since, floor = row.get("since", ""), row.get("floor") or ""
            return cls(stamp=min(since, floor) if floor else since, complete=False)
        text = "".join(row.get(f"recent{i}", "") for i in range(64) if f"recent{i}" in row)
        return cls(stamp=row.get("stamp", ""), sys_id=row.get("sys_id", ""), recheck=row.get("recheck", ""),
                   complete=bool(row.get("complete", True)), recent=json.loads(text or "{}"))


class LinkStore:
    """Conditional inserts and leases over ``snowlinks``; every write of a link is etag-guarded."""

    def __init__(self, store: StateStore, *, lease_seconds: float = LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.clock = clock

    # -- links --------------------------------------------------------------------------------
    def get(self, incident_key: str) -> TicketLink | None:
        row = self.store.get(TABLE, INCIDENT, key_safe(incident_key))
        return TicketLink.from_entity(row) if row else None

    def claim(self, incident_key: str, incident_id: str, owner: str) -> TicketLink | None:
        """Create the link, leased to ``owner``; None when it exists already (someone else created it).
        Its etag comes with the insert's answer: the next conditional write needs no read first."""
        link = TicketLink(incident_key, incident_id, lease_owner=owner, lease_until=self.clock() + self.lease_seconds)
        link.etag = self.store.insert(TABLE, link.entity())
        if link.etag is None:
            return None
        HELD_HERE.hold(incident_key, owner)
        return link

    def acquire(self, incident_key: str, owner: str, *, wait: float = 20.0) -> TicketLink | None:
        """The link, leased to ``owner``; None if there is none. Busy (429, retry later) when another process holds
        it, or a run of this one past ``wait`` seconds (``HELD_HERE``)."""
        deadline = time.monotonic() + wait
        while True:
            link = self.get(incident_key)
            if link is None:
                return None
            if not link.leased_by_other(owner, self.clock()):
                leased = self.take(link, owner)
                if leased is not None:
                    return leased
                continue  # someone else took it between our read and write: look again at once
            self._wait_for_holder(link, deadline)

    def wait_free(self, link: TicketLink, owner: str, *, wait: float) -> TicketLink | None:
        """``link`` as read, or read again once no other run holds its lease; None if it disappeared."""
        deadline = time.monotonic() + wait
        while link.leased_by_other(owner, self.clock()):
            self._wait_for_holder(link, deadline)
            current = self.get(link.incident_key)
            if current is None:
                return None
            link = current
        return link

    @staticmethod
    def _wait_for_holder(link: TicketLink, deadline: float) -> None:
        """Wait until a run of this process gives ``link``'s lease back (an event, no reads); Busy at once when the
        holder is another process (or a crashed run whose lease has not expired), or past ``deadline``."""
        held = HELD_HERE.event(link.incident_key)
        left = deadline - time.monotonic()
        if held is None or left <= 0 or not held.wait(left):
            raise Busy(f"the sync of incident {link.incident_key} is busy in another run; retry shortly",
                       code="SyncBusy", retry_after=5)

    def take(self, link: TicketLink, owner: str) -> TicketLink | None:
        """Lease ``link`` (as read, with its etag) to ``owner``; None when it changed since it was read."""
        leased = replace(link, lease_owner=owner, lease_until=self.clock() + self.lease_seconds)
        leased.etag = self.store.replace(TABLE, leased.entity(), link.etag or "*")
        if leased.etag is None:
            return None
        HELD_HERE.hold(link.incident_key, owner)
        return leased

    def renew(self, link: TicketLink) -> None:
        """Extend a lease we hold when less than half of it is left (a long run); Busy if it was lost."""
        if link.lease_until - self.clock() > self.lease_seconds / 2:
            return
        link.lease_until = self.clock() + self.lease_seconds
        self._write(link)

    def save(self, link: TicketLink, *, release: bool = True) -> None:
        """Write the link if we still hold it; Busy (429) when our lease expired and another run took it."""
        owner = link.lease_owner
        if release:
            link.lease_owner, link.lease_until = "", 0.0
        self._write(link, owner)
        if release:
            HELD_HERE.give_back(link.incident_key, owner)

    def save_if_unchanged(self, link: TicketLink) -> bool:
        """Write a link read without a lease if nobody wrote it since; False when another run did."""
        etag = self.store.replace(TABLE, link.entity(), link.etag or "*")
        if etag is None:
            return False
        link.etag = etag
        return True

    def _write(self, link: TicketLink, owner: str | None = None) -> None:
        """Write a link this run (``owner``, by default the link's lease owner) holds, keeping the etag the write
        answered; Busy (429) when it changed hands."""
        etag = self.store.replace(TABLE, link.entity(), link.etag or "*")
        if etag is None:
            HELD_HERE.give_back(link.incident_key, link.lease_owner if owner is None else owner)  # it is lost
            raise Busy(f"the sync of incident {link.incident_key} took longer than its lease; retry",
                       code="SyncLeaseLost", retry_after=5)
        link.etag = etag

    def release(self, link: TicketLink) -> None:
        """Give the lease back after a failure, keeping what was saved; best effort."""
        if not link.lease_owner:
            return
        current = self.get(link.incident_key)
        if current is None or current.lease_owner != link.lease_owner:
            return
        current.lease_owner, current.lease_until = "", 0.0
        if not self.store.replace_if_unchanged(TABLE, current.entity(), current.etag or "*"):
            log.info("lease of %s changed hands before release", link.incident_key)
        HELD_HERE.give_back(link.incident_key, link.lease_owner)

    def get_many(self, incident_keys: list[str], *, pool: int = 16) -> dict[str, TicketLink]:
        """The links of ``incident_keys`` (missing ones absent), in queries of 14 keys run side by side: a poll
        page's links cost one round trip, not one per ticket."""
        keys = sorted({key_safe(k) for k in incident_keys})
        chunks = [keys[i:i + KEYS_PER_QUERY] for i in range(0, len(keys), KEYS_PER_QUERY)]
        found: dict[str, TicketLink] = {}
        for outcome in run_bounded(lambda chunk: self.store.get_many(TABLE, INCIDENT, chunk), chunks, pool):
            found.update({key: TicketLink.from_entity(row) for key, row in outcome.get().items()})
        return found

    def save_all(self, batch: list[tuple[TicketLink, str]]) -> dict[str, BaseException | None]:
        """Save links of one run in entity group transactions (one request per up to 100 links), each still
        conditional on the etag this run holds; per link key: None (saved), ``Superseded`` (read without the lease
        and written by another run since: nothing of this run's bookkeeping is needed) or the error of a leased link
        (``Busy``: its lease was lost). ``batch``: (link, the owner whose lease this save gives back, "" for a link read
        without the lease). A transaction one link of which was
        refused writes nothing, so its links are then saved one by one, each with its own outcome."""
        outcomes: dict[str, BaseException | None] = {}
        for chunk in _chunks(batch):
            ops = [op_replace(link.entity(), link.etag or "*") for link, _ in chunk]
            try:
                answers = self.store.transaction(TABLE, ops)
            except TransactionFailed:
                for link, leased in chunk:
                    outcomes[link.incident_key] = self._save_one(link, leased)
                continue
            for (link, leased), answer in zip(chunk, answers, strict=True):
                link.etag = str(answer.get("etag") or "") or None
                outcomes[link.incident_key] = None
                if leased and not link.lease_owner:
                    HELD_HERE.give_back(link.incident_key, leased)
        return outcomes

    def _save_one(self, link: TicketLink, leased: str) -> BaseException | None:
        if not leased:
            return None if self.save_if_unchanged(link) else Superseded(link.incident_key)
        try:
            self._write(link, leased)
        except Busy as lost:
            return lost
        if not link.lease_owner:
            HELD_HERE.give_back(link.incident_key, leased)
        return None

    # -- the way back -------------------------------------------------------------------------
    def index_ticket(self, sys_id: str, incident_key: str, incident_id: str) -> None:
        self.store.upsert(TABLE, {"PartitionKey": TICKET, "RowKey": key_safe(sys_id), "incident_key": incident_key,
                                  "incident_id": incident_id})

    def incident_for_ticket(self, sys_id: str) -> str | None:
        row = self.store.get(TABLE, TICKET, key_safe(sys_id))
        return row.get("incident_key") if row else None

    def forget_ticket(self, sys_id: str) -> None:
        self.store.delete(TABLE, TICKET, key_safe(sys_id))

    # -- poll cursor --------------------------------------------------------------------------
    def cursor(self) -> PollCursor | None:
        """The poll cursor, or None before the first ticket."""
        row = self.store.get(TABLE, POLL, WATERMARK)
        return PollCursor.from_entity(row) if row else None

    def start_cursor(self, stamp: str) -> None:
        """Set the first cursor (just before the first ticket's creation); later calls change nothing."""
        self.store.insert_if_absent(TABLE, PollCursor(stamp=stamp).entity())

    def save_cursor(self, cursor: PollCursor, *, run: dict | None = None) -> None:
        """Save the cursor; with ``run`` (the run's summary, see ``record_poll``) in the same request: both rows are
        in the ``poll`` partition, so one entity group transaction writes them."""
        recent = cursor.recent
        if len(recent) > MAX_RECENT:  # the oldest go: a re-read of those costs a state read each, nothing more
            newest = sorted(recent.items(), key=lambda item: (item[1][0], item[0]))[-MAX_RECENT:]
            cursor.recent = dict(newest)
        if run is None:
            self.store.upsert(TABLE, cursor.entity())
        else:
            self.store.transaction(TABLE, [_op_upsert(cursor.entity()), _op_upsert(self._run_row(run))])

    def record_poll(self, summary: dict) -> None:
        """Keep the summary of a poll run that did something (one write; idle runs write nothing)."""
        self.store.upsert(TABLE, self._run_row(summary))

    def _run_row(self, summary: dict) -> dict:
        return {"PartitionKey": POLL, "RowKey": LAST_RUN, "finished_at": self.clock(),
                "summary": json.dumps(summary, default=str)[:30_000]}

    def last_poll(self) -> dict | None:
        row = self.store.get(TABLE, POLL, LAST_RUN)
        if row is None:
            return None
        return {"finished_at": float(row.get("finished_at", 0.0)), "summary": json.loads(row.get("summary") or "{}")}


class Superseded(Exception):
    """A link read without the lease was saved by another run first (this run's writes were idempotent)."""


def _op_upsert(entity: dict) -> tuple:
    """Insert or replace a whole row (every property: a cursor with fewer ``recent`` chunks drops the others)."""
    from azure.data.tables import UpdateMode

    return ("upsert", entity, {"mode": UpdateMode.REPLACE})


def _chunks(batch: list[tuple[TicketLink, str]]) -> list[list[tuple[TicketLink, str]]]:
    """``batch`` cut into transactions of at most 100 rows and about ``BATCH_BYTES`` of JSON each."""
    chunks: list[list[tuple[TicketLink, str]]] = []
    size = 0
    for item in batch:
        weight = len(json.dumps(item[0].entity()))
        if not chunks or len(chunks[-1]) >= MAX_TRANSACTION or size + weight > BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += weight
    return chunks


__all__ = ["LEASE_SECONDS", "LinkStore", "PollCursor", "Superseded", "TicketLink", "new_owner"]
