"""The ServiceNow poll: every change applied once, however many arrive and however late they commit.

The poll reads the tickets of this pack in ``(sys_updated_on, sys_id)`` order after a cursor
(``PollCursor`` in sync/links.py): "a later second, or the same second and a later sys_id", which an encoded
query says with ``^NQ`` (sync/servicenow.py). Paging moves the cursor itself, never an offset, so a run that
hits its page cap (``SERVICENOW_POLL_MAX_PAGES``) leaves the next run exactly where it stopped: however many
changes share one second, every run makes progress.

Late commits: ServiceNow stamps ``sys_updated_on`` when a transaction starts saving, so a change can become
visible after a later one was read. A change stamped ``T`` is visible by ``T + SERVICENOW_POLL_OVERLAP_SECONDS``;
the instance's own clock (the answer's ``Date`` header) tells which rows of a page were read before that. When
a page held such fresh rows, the cursor remembers the second they start at (``recheck``), and once a run has
caught up, the next one reads from there again. Changes read twice are recognised by ``sys_id`` and
``sys_mod_count`` (``recent``) and cost nothing; the re-read never starts while a backlog is being worked
through, so it cannot hold progress back.

Per page: the links of its tickets are read in batched queries side by side (one round trip), the journal of
every due ticket comes in one query, and all of that is read while the page before is being applied (the next
page starts after this one's last row, so it is known before this one is done). The rows already handled are
skipped; the due tickets are reconciled side by side, at most ``SERVICENOW_SYNC_CONCURRENCY`` at a time, and
their links are saved together once their incidents are written (one entity group transaction per 100 links,
each still conditional on its etag). A failure that clears up by itself (ServiceNow or Sentinel down,
throttled) stops the run before that ticket, with everything before it kept. The cursor and the run's record
go in one request. An idle run makes one ServiceNow request and writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.concurrency import run_all, run_bounded
from core.errors import Busy, PackError
from sync.links import PollCursor, Superseded, TicketLink
from sync.query import GUID
from sync.service import now_stamp, retryable
from sync.servicenow import Page, Position, ref_value

if TYPE_CHECKING:
    from sync.service import ServiceNowSync

log = logging.getLogger(__name__)

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def shift_stamp(stamp: str, seconds: float) -> str:
    """A ServiceNow date-time moved by ``seconds`` (same format, UTC)."""
    moved = datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC) + timedelta(seconds=seconds)
    return moved.strftime(STAMP_FORMAT)


def fresh_from(start: Position, rows: list[dict], instance_time: str | None, overlap: int) -> str:
    """The first second of this page where a change may still have been committing when it was read ("" if none).

    Everything stamped at or before ``instance_time - overlap - 1`` was committed when the page was read (the
    extra second: both stamps have whole-second resolution).
    """
    if not rows:
        return ""
    settled = shift_stamp(instance_time or now_stamp(), -(overlap + 1))
    if str(rows[-1].get("sys_updated_on") or "") <= settled:
        return ""
    return max(start.stamp, shift_stamp(settled, 1))


@dataclass
class _Page:
    """One page and what applying it needs, read ahead while the page before is applied."""

    position: Position
    offset: int
    page: Page | None = None
    links: dict[str, TicketLink] = field(default_factory=dict)  # by incident key
    journal: dict[str, list[dict]] = field(default_factory=dict)  # by ticket sys_id, for the tickets due
    error: PackError | None = None  # why it could not be read
    unread: bool = False  # the page or its links are missing (nothing of it can be decided)

    @property
    def rows(self) -> list[dict]:
        return self.page.rows if self.page is not None else []


class Poller:
    """One poll run over a ServiceNowSync."""

    def __init__(self, sync: ServiceNowSync) -> None:
        self.sync = sync
        self.links = sync.links
        self.snow = sync.snow
        self.source = sync.mapping.source

    def run(self) -> dict[str, Any]:
        cursor = self.links.cursor()
        if cursor is None:
            return {"skipped": "no ticket has been created yet"}
        rechecking = cursor.complete and bool(cursor.recheck) and cursor.recheck <= cursor.stamp
        position = Position(cursor.recheck) if rechecking else Position(cursor.stamp, cursor.sys_id)
        pending = "" if rechecking else cursor.recheck
        recent = {sys_id: list(entry) for sys_id, entry in cursor.recent.items()}
        summary: dict[str, Any] = {"examined": 0, "synced": 0, "failed": 0, "known": 0, "pages": 0, "stopped": None,
                                   "from": f"{position.stamp} {position.sys_id}".strip(), "recheck": rechecking}
        complete = False
        ahead = self._read(position, 0, recent)
        if ahead.error is not None and ahead.page is None:
            raise ahead.error  # not even the first page: nothing to do but report it
        while summary["pages"] < self.sync.max_pages:
            current, ahead = ahead, None
            summary["pages"] += 1
            page = current.page
            end = current.offset + self.sync.page_size
            last = page is None or page.total is None or page.total <= end
            if page is not None:
                risky = fresh_from(current.position, page.rows, page.instance_time, self.sync.overlap)
                if risky:
                    pending = min(pending, risky) if pending else risky
            if last or current.unread or summary["pages"] >= self.sync.max_pages:
                handled, stopped = self._apply(current, recent, summary)
            else:  # the next page (from this one's last row) is read while this one is applied
                nxt = (Position(str(page.rows[-1].get("sys_updated_on") or ""), page.rows[-1]["sys_id"]), 0) \
                    if page.rows else (current.position, end)  # rows counted but none readable: step over them
                # ``recent`` as a copy: the page being applied adds to it meanwhile
                (handled, stopped), ahead = run_all(lambda got=current: self._apply(got, recent, summary),
                                                    lambda at=nxt, seen=dict(recent): self._read(*at, seen))
            if stopped:
                position = handled or current.position
                summary["stopped"] = stopped
                break
            position = handled or current.position
            if last:
                complete = True
                break
            if ahead is None:
                break  # the page cap: the next run goes on from here
        if complete and rechecking and (cursor.stamp, cursor.sys_id) > (position.stamp, position.sys_id):
            position = Position(cursor.stamp, cursor.sys_id)  # the re-read ended before the old end: keep it
        keep_from = min(pending or position.stamp, position.stamp)
        new = PollCursor(stamp=position.stamp, sys_id=position.sys_id, recheck=pending, complete=complete,
                         recent={k: v for k, v in recent.items() if v[0] >= keep_from})
        summary["to"] = f"{new.stamp} {new.sys_id}".strip()
        summary["complete"] = complete
        did = bool(summary["synced"] or summary["failed"] or summary["stopped"])
        if new != cursor:
            self.links.save_cursor(new, run=summary if did else None)  # one request for both rows
            summary["recorded"] = did
        return summary

    def _read(self, position: Position, offset: int, seen: dict[str, list]) -> _Page:
        """A page after ``position``, the links of its tickets (one round of batched reads; not of the changes in
        ``seen``, handled already) and the journal of those that are due, in one query. A failure is kept in the
        answer: the run stops where it applies."""
        got = _Page(position, offset)
        try:
            got.page = self.snow.changed_after(position, self.source, limit=self.sync.page_size, offset=offset)
            keys = [key for row in got.page.rows if row.get("correlation_display") == self.source
                    and not _known(row, seen) and GUID.match(key := str(row.get("correlation_id") or "").lower())]
            got.links = self.links.get_many(keys, pool=self.sync.concurrency) if keys else {}
        except PackError as error:
            got.error, got.unread = error, True
            return got
        due = [link for row in got.rows if (link := self._due(row, got.links)) is not None]
        if due:
            try:
                got.journal = self._journal(due)
            except PackError as error:
                got.error = error
        return got

    def _due(self, row: dict, links: dict[str, TicketLink]) -> TicketLink | None:
        """The link of a row this pack must sync (None: not its ticket, or nothing new since the last sync)."""
        if row.get("correlation_display") != self.source:
            return None  # a condition the instance dropped matches everything: not ours
        link = links.get(str(row.get("correlation_id") or "").lower())
        if link is None or link.sys_id != row["sys_id"] or link.state not in ("linked", "closed") \
                or int(row.get("sys_mod_count") or 0) <= link.mod_count:
            return None
        return link

    def _apply(self, got: _Page, recent: dict[str, list], summary: dict) -> tuple[Position | None, str | None]:
        """Apply one page's rows; (the position after the last row handled in order, why it stopped or None)."""
        if got.unread:
            if not retryable(got.error):  # type: ignore[arg-type]
                raise got.error  # type: ignore[misc]
            return None, _reason(got.error)  # type: ignore[arg-type]
        rows = got.rows
        summary["examined"] += len(rows)
        status: dict[str, str] = {}
        due: list[tuple[dict, TicketLink]] = []
        for row in rows:
            if row.get("correlation_display") == self.source and _known(row, recent):
                status[row["sys_id"]], summary["known"] = "done", summary["known"] + 1
            elif (link := self._due(row, got.links)) is None:
                status[row["sys_id"]] = "done"  # not this pack's ticket, or nothing new since the last sync
            else:
                due.append((row, link))
        stopped: str | None = None
        if due and got.error is not None:  # the journal could not be read
            if not retryable(got.error):
                raise got.error
            stopped, due = _reason(got.error), []
        stopped = self._sync_all(due, got.journal, status, summary) or stopped
        handled: Position | None = None
        for row in rows:  # in order: progress stops at the first row not handled
            if status.get(row["sys_id"]) != "done":
                break
            handled = Position(str(row.get("sys_updated_on") or ""), row["sys_id"])
        for row in rows:  # handled rows a re-read may meet again, including those after a stop
            if status.get(row["sys_id"]) == "done":
                recent[row["sys_id"]] = [str(row.get("sys_updated_on") or ""), int(row.get("sys_mod_count") or 0)]
        if stopped is None and len(status) < len(rows):
            stopped = "not every ticket of the page could be handled"
        return handled, stopped

    def _sync_all(self, due: list[tuple[dict, TicketLink]], journal: dict[str, list[dict]], status: dict[str, str],
                  summary: dict) -> str | None:
        """Reconcile the due tickets side by side, then save their links in one request per 100 (a link is saved
        only after its incident was written); mark the rows done; why it stopped, or None."""
        stopped: str | None = None
        failure: PackError | None = None
        saves: dict[str, list[tuple[TicketLink, str]]] = {row["sys_id"]: [] for row, _ in due}
        outcomes = run_bounded(lambda pair: self.sync.sync_polled(pair[1], pair[0], journal.get(pair[0]["sys_id"], []),
                                                                   defer=saves[pair[0]["sys_id"]]),
                               due, self.sync.concurrency, stop=_stops)
        done: dict[str, str] = {}
        for outcome in outcomes:
            row = outcome.item[0]
            if outcome.error is not None:
                if isinstance(outcome.error, PackError) and not retryable(outcome.error):
                    failure = failure or outcome.error
                stopped = stopped or _reason(outcome.error)
                continue
            done[row["sys_id"]] = str(outcome.value)
        batch = [entry for sys_id in done for entry in saves[sys_id]]
        try:
            saved = self.links.save_all(batch) if batch else {}
        except PackError as error:  # Table Storage down: nothing of this page is kept; the next run does it again
            if not retryable(error):
                raise
            return _reason(error)
        for sys_id, value in done.items():
            problems = [saved.get(link.incident_key) for link, _ in saves[sys_id]]
            if any(isinstance(p, Busy) for p in problems):
                stopped = stopped or _reason(next(p for p in problems if isinstance(p, Busy)))
                continue
            status[sys_id] = "done"
            if value == "synced" and any(isinstance(p, Superseded) for p in problems):
                value = "unchanged"  # another run saved the pair first; this run's writes were idempotent
            if value in ("synced", "failed"):
                summary[value] += 1
        if failure is not None:
            raise failure
        return stopped

    def _journal(self, links: list[TicketLink]) -> dict[str, list[dict]]:
        """The journal of every due ticket of a page in one query (chunked), grouped per ticket."""
        since = min(link.journal_since or "1970-01-01 00:00:00" for link in links)
        grouped: dict[str, list[dict]] = {link.sys_id: [] for link in links}
        entries, hidden = self.snow.journal([link.sys_id for link in links], since)
        if hidden:
            log.error("ServiceNow hid %d journal entries from the integration user: grant it read access to "
                      "sys_journal_field (docs/servicenow.md)", hidden)
        for entry in entries:
            grouped.setdefault(ref_value(entry.get("element_id")), []).append(entry)
        return grouped


def _known(row: dict, seen: dict[str, list]) -> bool:
    """Whether this change of the ticket (its ``sys_mod_count``) was handled already (a re-read meets it again)."""
    entry = seen.get(row["sys_id"])
    return entry is not None and int(entry[1]) >= int(row.get("sys_mod_count") or 0)


def _stops(error: BaseException) -> bool:
    return not isinstance(error, PackError) or retryable(error)


def _reason(error: BaseException) -> str:
    if isinstance(error, PackError):
        return f"{error.code}: {error.message}"
    return f"{type(error).__name__}: {error}"


__all__ = ["Poller", "fresh_from", "shift_stamp"]
