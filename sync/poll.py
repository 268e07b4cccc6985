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

Per page: the rows already handled are skipped; the links of the others are read side by side; the journal of
every due ticket comes in one query; the due tickets are reconciled side by side, at most
``SERVICENOW_SYNC_CONCURRENCY`` at a time. A failure that clears up by itself (ServiceNow or Sentinel down,
throttled) stops the run before that ticket, with everything before it kept. An idle run makes one ServiceNow
request and writes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.concurrency import run_bounded
from core.errors import PackError
from sync.links import PollCursor, TicketLink
from sync.query import GUID
from sync.service import now_stamp, retryable
from sync.servicenow import Position, ref_value

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
        complete, offset = False, 0
        while summary["pages"] < self.sync.max_pages:
            page = self.snow.changed_after(position, self.source, limit=self.sync.page_size, offset=offset)
            summary["pages"] += 1
            end = offset + self.sync.page_size
            risky = fresh_from(position, page.rows, page.instance_time, self.sync.overlap)
            if risky:
                pending = min(pending, risky) if pending else risky
            handled, stopped = self._page(page.rows, recent, summary)
            if stopped:
                position = handled or position
                summary["stopped"] = stopped
                break
            if page.total is None or page.total <= end:
                position, complete = handled or position, True
                break
            if handled is not None:
                position, offset = handled, 0
            else:  # rows counted but none readable (row ACLs apply after paging): step over them
                offset = end
        if complete and rechecking and (cursor.stamp, cursor.sys_id) > (position.stamp, position.sys_id):
            position = Position(cursor.stamp, cursor.sys_id)  # the re-read ended before the old end: keep it
        keep_from = min(pending or position.stamp, position.stamp)
        new = PollCursor(stamp=position.stamp, sys_id=position.sys_id, recheck=pending, complete=complete,
                         recent={k: v for k, v in recent.items() if v[0] >= keep_from})
        if new != cursor:
            self.links.save_cursor(new)
        summary["to"] = f"{new.stamp} {new.sys_id}".strip()
        summary["complete"] = complete
        return summary

    def _page(self, rows: list[dict], recent: dict[str, list], summary: dict) -> tuple[Position | None, str | None]:
        """Handle one page's rows in order; (the position after the last row handled, why it stopped or None)."""
        summary["examined"] += len(rows)
        status: dict[str, str] = {}
        todo = []
        for row in rows:
            seen = recent.get(row["sys_id"])
            if row.get("correlation_display") != self.source:
                status[row["sys_id"]] = "done"  # a condition the instance dropped matches everything: not ours
            elif seen is not None and int(seen[1]) >= int(row.get("sys_mod_count") or 0):
                status[row["sys_id"]], summary["known"] = "done", summary["known"] + 1
            else:
                todo.append(row)
        stopped: str | None = None

        def link_of(row: dict) -> TicketLink | None:
            key = str(row.get("correlation_id") or "").lower()
            return self.links.get(key) if GUID.match(key) else None

        due: list[tuple[dict, TicketLink]] = []
        journal: dict[str, list[dict]] = {}
        for outcome in run_bounded(link_of, todo, self.sync.concurrency, stop=_stops):
            row = outcome.item
            if outcome.error is not None:
                stopped = stopped or _reason(outcome.error)
                continue
            link = outcome.value
            if link is None or link.sys_id != row["sys_id"] or link.state not in ("linked", "closed") \
                    or int(row.get("sys_mod_count") or 0) <= link.mod_count:
                status[row["sys_id"]] = "done"  # not this pack's ticket, or nothing new since the last sync
            else:
                due.append((row, link))
        if due and stopped is None:
            try:
                journal = self._journal([link for _, link in due])
            except PackError as error:
                if not retryable(error):
                    raise
                stopped, due = _reason(error), []
            for outcome in run_bounded(lambda pair: self.sync.sync_polled(pair[1], pair[0], journal[pair[0]["sys_id"]]),
                                       due, self.sync.concurrency, stop=_stops):
                row = outcome.item[0]
                if outcome.error is not None:
                    if isinstance(outcome.error, PackError) and not retryable(outcome.error):
                        raise outcome.error
                    stopped = stopped or _reason(outcome.error)
                    continue
                status[row["sys_id"]] = "done"
                if outcome.value in ("synced", "failed"):
                    summary[outcome.value] += 1
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


def _stops(error: BaseException) -> bool:
    return not isinstance(error, PackError) or retryable(error)


def _reason(error: BaseException) -> str:
    if isinstance(error, PackError):
        return f"{error.code}: {error.message}"
    return f"{type(error).__name__}: {error}"


__all__ = ["Poller", "fresh_from", "shift_stamp"]
