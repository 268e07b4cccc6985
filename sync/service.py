"""Sentinel <-> ServiceNow incident sync: create the ticket once, then keep both sides in step.

Three entry points share one idea: every run for an incident/ticket pair takes the pair's lease
(sync/links.py), reads both sides fresh, and reconciles them with a three-way merge against what
the last run saw (sync/merge.py). So it does not matter what woke the sync up -- the Sentinel
automation rule (``outbound``), the ServiceNow business rule (``inbound``) or the timer (``poll``) --
nor how often: an event delivered twice, late or out of order leads to the same result, and a run
with nothing new writes nothing.

No echo, by construction and by bookkeeping:
- fields: what the sync writes becomes the base the next run compares with, so it is not a change;
- the ticket's ``sys_mod_count`` after the sync's own PATCH is recorded: a push or poll that sees
  that count (the business rule firing on our update) stops before reading anything else;
- Sentinel comments copied from ServiceNow have deterministic ids (one per journal sys_id) and are
  recorded as handled; Sentinel comments copied to ServiceNow are recorded by id, and the work note
  carries a marker with that id, so even a run that died between the PATCH and saving the link
  recognises its own note instead of writing it again; journal entries by the integration user are
  the pack's own and never copied back.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from datetime import UTC, datetime
from typing import Any

from core.case import Case
from core.context import Context
from core.errors import BadRequest, Busy, ConfigurationError, Conflict, DownstreamError, NotFound, PackError
from core.http import build_session, session_from_settings
from core.sentinel import COMMENT_MAX_CHARS, comment_id
from core.settings import Settings
from core.telemetry import action_scope, bind_incident
from sync.journal import journal_html, journal_text
from sync.links import LinkStore, TicketLink, new_owner
from sync.mapping import SyncMapping, split_classification
from sync.merge import parse_sentinel_time, parse_servicenow_time, plan, sentinel_view, servicenow_view
from sync.servicenow import ServiceNowClient, ref_value
from sync.webhook import parse_push

log = logging.getLogger(__name__)

TICKET_COMMENT = "servicenow-ticket"
JOURNAL_COMMENT = "servicenow-journal"
MARKER = "sentinel-playbooks comment"
MARKER_RE = re.compile(re.escape(MARKER) + r" ([A-Za-z0-9._-]+)")
# ServiceNow stamps sys_updated_on when a transaction saves it, and a slow transaction can become
# visible a little after a later one was polled. What a run could have missed that way was stamped
# at most this long before the run started: the next run reads again from there (see poll_cursor).
LOOKBACK_SECONDS = 5
MAX_PAGES_PER_RUN = 20
WORK_NOTE_MAX_CHARS = 30_000
CLOSE_NOTES_MAX_CHARS = 4_000
MAX_ENTITIES_IN_DESCRIPTION = 50

_clients: dict[tuple[str, str], ServiceNowClient] = {}
_clients_lock = threading.Lock()


def client_from_settings(settings: Settings) -> ServiceNowClient:
    """One client (two connection pools) per process and instance."""
    settings.require("SERVICENOW_INSTANCE_URL", "SERVICENOW_USERNAME", "SERVICENOW_PASSWORD")
    url, user = str(settings["SERVICENOW_INSTANCE_URL"]), str(settings["SERVICENOW_USERNAME"])
    with _clients_lock:
        if (url, user) not in _clients:
            timeout = float(settings["HTTP_TIMEOUT_SECONDS"])
            _clients[(url, user)] = ServiceNowClient(
                url, user, str(settings["SERVICENOW_PASSWORD"]), read_session=session_from_settings(settings),
                write_session=build_session(timeout=timeout, retries=0), timeout=timeout)
        return _clients[(url, user)]


def shift_stamp(stamp: str, seconds: int) -> str:
    """A ServiceNow timestamp moved by ``seconds`` (same format, UTC)."""
    moved = parse_servicenow_time(stamp) + seconds
    return datetime.fromtimestamp(max(moved, 0), UTC).strftime("%Y-%m-%d %H:%M:%S")


def now_stamp() -> str:
    """The current time as ServiceNow writes it (UTC, whole seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def poll_cursor(since: str, floor: str | None) -> str:
    """Where a poll run starts reading.

    ``since`` is the newest change handled. ``floor`` is the start of the last run that read every
    page, minus the look-back, or None when that run stopped early (or never ran). Everything stamped
    before ``floor`` was visible to that run and handled, so reading from ``min(since, floor)`` loses
    nothing; idle, ``floor`` passes ``since`` and a run reads just the records of that one second.
    Without a floor, the run re-reads ``LOOKBACK_SECONDS`` before ``since``. Records read twice are
    recognised by their update count and cost no write.
    """
    return min(since, floor) if floor else shift_stamp(since, -LOOKBACK_SECONDS)


def _retryable(error: PackError) -> bool:
    """Failures that clear up by themselves or once the deployment is fixed (the next run retries);
    the rest would fail every time for this ticket alone (it is skipped so the others go on).

    Sentinel's 403 is the function's missing role on the workspace: every ticket fails alike until it
    is granted, so skipping would lose every update made meanwhile instead of holding up none.
    """
    return (isinstance(error, (DownstreamError, Conflict, ConfigurationError))
            or error.code == "SentinelAccessDenied")


class ServiceNowSync:
    """The sync over one Context (Sentinel client, state store, settings)."""

    def __init__(self, ctx: Context, snow: ServiceNowClient | None = None, mapping: SyncMapping | None = None) -> None:
        settings = ctx.settings
        self.mapping = mapping or SyncMapping.from_setting(settings["SERVICENOW_MAPPING"])  # type: ignore[arg-type]
        self.snow = snow or client_from_settings(settings)
        self.sentinel = ctx.sentinel
        self.links = LinkStore(ctx.state)
        self.max_entities = int(settings["MAX_ENTITIES"])
        self.page_size = max(1, int(settings["SERVICENOW_POLL_BATCH"]))
        self.defaults = {field: str(settings[name]) for field, name in (
            ("caller_id", "SERVICENOW_CALLER_ID"), ("assignment_group", "SERVICENOW_ASSIGNMENT_GROUP"),
            ("category", "SERVICENOW_CATEGORY")) if settings[name]}

    # == Sentinel -> ServiceNow =================================================================
    def outbound(self, case: Case) -> dict[str, Any]:
        """Incident created or updated: create the ticket once, then bring both sides in step."""
        if not case.incident_id or not case.incident_name:
            raise BadRequest(f"the ServiceNow sync needs an incident: send the incident trigger body or "
                             f"{{\"incidentArmId\": ...}}; this {case.source} payload names none")
        key, owner = case.incident_name.lower(), new_owner()
        link = self.links.claim(key, case.incident_id, owner) or self.links.acquire(key, owner)
        if link is None:
            raise Busy(f"the link of incident {key} changed while it was read; retry", retry_after=5)
        try:
            created, ticket = False, None
            if link.state != "linked":
                ticket, created = self._create(case, link)
            try:
                summary = self._reconcile(link, ticket=ticket)
            except NotFound as missing:
                if missing.code != "ServiceNowNotFound" or created:
                    raise
                # Someone deleted the ticket in ServiceNow: every incident must have one, so open another.
                log.warning("ticket %s of incident %s no longer exists; creating a new one", link.number, key)
                gone = link.sys_id
                link.state, link.base_sentinel, link.base_servicenow, link.mod_count = "creating", {}, {}, -1
                ticket, created = self._create(case, link)
                if link.sys_id != gone:  # only now: a 404 that was not a deletion must not lose the way back
                    self.links.forget_ticket(gone)
                summary = self._reconcile(link, ticket=ticket)
        except BaseException:
            self.links.release(link)
            raise
        return {"created": created, **summary}

    def _create(self, case: Case, link: TicketLink) -> tuple[dict, bool]:
        """Find the ticket of an earlier, interrupted run by correlation id, or create it; link both ways."""
        incident = self.sentinel.get_incident(link.incident_id)
        props = incident.get("properties") or {}
        ticket = self.snow.find_by_correlation(link.incident_key, self.mapping.source)
        created = ticket is None
        if ticket is None:
            if not case.entities_included:
                case = case.with_entities(self.sentinel.list_entities(link.incident_id), self.max_entities)
            ticket = self.snow.create_ticket(self._ticket_fields(case, link, props))
            log.info("created ServiceNow %s for incident %s", ticket.get("number"), link.incident_key)
        link.sys_id, link.number = ticket["sys_id"], ticket.get("number", "")
        self.links.index_ticket(link.sys_id, link.incident_key, link.incident_id)
        self.links.start_watermark(ticket.get("sys_created_on") or ticket.get("sys_updated_on") or "")
        url = self.snow.ticket_url(link.sys_id)
        note = comment_id(link.incident_id, TICKET_COMMENT)
        self.sentinel.put_comment(link.incident_id, note, (
            f'<p><b>ServiceNow</b> ticket <a href="{html.escape(url)}">{html.escape(link.number)}</a> tracks this '
            f"incident. Status, severity, owner, classification and comments stay in sync both ways.</p>"))
        self.sentinel.add_labels(link.incident_id, f"ServiceNow: {link.number}")
        link.known_comments = sorted(set(link.known_comments) | {note})
        link.state = "linked"
        link.journal_since, link.journal_seen = ticket.get("sys_created_on", ""), []
        if created:  # both sides hold what was just written: that is the base
            link.base_sentinel = sentinel_view(props)
            link.base_servicenow = servicenow_view(ticket, self.mapping)
            link.mod_count = int(ticket.get("sys_mod_count") or 0)
        else:  # adopted after an interrupted run: no shared history, so a difference is decided by age
            link.base_sentinel, link.base_servicenow, link.mod_count = {}, {}, -1
        self.links.save(link, release=False)
        return ticket, created

    def _ticket_fields(self, case: Case, link: TicketLink, props: dict) -> dict[str, str]:
        number = props.get("incidentNumber") or case.number or ""
        title = str(props.get("title") or case.title or "Microsoft Sentinel incident")
        current = sentinel_view(props)
        wanted = {name: value for name, value in current.items() if value}
        wanted = {name: value for name, value in wanted.items()
                  if name != "owner" or self.mapping.owner_sys_id(value) is not None}
        return {
            **self.defaults,
            "short_description": f"[Sentinel #{number}] {title}"[:160],
            "description": self._description(case, props),
            "correlation_id": link.incident_key,
            "correlation_display": self.mapping.source,
            **self._servicenow_fields(wanted, props),
        }

    def _description(self, case: Case, props: dict) -> str:
        entities = [ip.address for ip in case.ips] + [host.host_name for host in case.hosts]
        entities += [account.upn or account.name or account.key for account in case.accounts]
        entities += [other.label for other in case.others]
        shown = ", ".join(entities[:MAX_ENTITIES_IN_DESCRIPTION])
        if len(entities) > MAX_ENTITIES_IN_DESCRIPTION:
            shown += f" and {len(entities) - MAX_ENTITIES_IN_DESCRIPTION} more"
        lines = [f"Microsoft Sentinel incident {props.get('incidentNumber') or case.number or ''} "
                 f"({props.get('severity') or case.severity or 'unknown severity'})",
                 f"Incident ARM id: {case.incident_id}",
                 f"Portal: {props.get('incidentUrl') or case.url or ''}",
                 f"Entities: {shown or 'none'}"]
        if props.get("description"):
            lines += ["", str(props["description"])]
        return "\n".join(lines)

    def _servicenow_fields(self, values: dict[str, str], props: dict) -> dict[str, str]:
        """ServiceNow fields expressing Sentinel-side ``values`` (status carries the close code with it)."""
        fields: dict[str, str] = {}
        closing = False
        if "status" in values and (state := self.mapping.state_for(values["status"])) is not None:
            fields["state"] = state
            closing = self.mapping.is_closed_state(state)
        if closing or ("classification" in values and "status" not in values):
            classification = values.get("classification") or self.mapping.default_classification
            fields["close_code"] = self.mapping.close_code_for(classification)
            fields["close_notes"] = self._close_notes(props, classification)
        if "severity" in values and (pair := self.mapping.impact_urgency_for(values["severity"])) is not None:
            fields["impact"], fields["urgency"] = pair
        if "owner" in values and (sys_id := self.mapping.owner_sys_id(values["owner"])) is not None:
            fields["assigned_to"] = sys_id
        return fields

    @staticmethod
    def _close_notes(props: dict, classification: str) -> str:
        comment = str(props.get("classificationComment") or "").strip()
        name, reason = split_classification(classification)
        text = comment or f"Closed in Microsoft Sentinel as {name}" + (f" ({reason})" if reason else "") + "."
        return text[:CLOSE_NOTES_MAX_CHARS]

    # == ServiceNow -> Sentinel: push ===========================================================
    def inbound(self, payload: Any) -> dict[str, Any]:
        """The business rule says ticket X changed: reconcile its pair (or ignore our own echo)."""
        sys_id, mod_count = parse_push(payload)
        key = self.links.incident_for_ticket(sys_id)
        if key is None:
            raise NotFound(f"ServiceNow ticket {sys_id} was not created by this pack (no link)", code="UnknownTicket")
        owner = new_owner()
        link = self.links.acquire(key, owner)
        if link is None or link.sys_id != sys_id:
            raise NotFound(f"ServiceNow ticket {sys_id} is no longer linked to an incident", code="UnknownTicket")
        bind_incident(link.incident_id)
        try:
            if mod_count is not None and mod_count <= link.mod_count:
                self.links.save(link)
                return {"incident": link.incident_id, "ticket": self._ticket_ref(link), "changed": False,
                        "ignored": f"update {mod_count} of the ticket was already synced (or written by the sync)"}
            return self._reconcile(link)
        except BaseException:
            self.links.release(link)
            raise

    # == ServiceNow -> Sentinel: poll ===========================================================
    def poll(self) -> dict[str, Any]:
        """Pull tickets changed since the watermark (paged, overlap-safe, bounded) and sync them."""
        mark = self.links.poll_mark()
        if mark is None:
            return {"skipped": "no ticket has been created yet"}
        started = now_stamp()
        watermark, floor = mark
        cursor, skip = poll_cursor(watermark, floor), 0
        newest, summary = watermark, {"examined": 0, "synced": 0, "failed": 0, "pages": 0, "stopped": None}
        source = self.mapping.source
        complete = False
        while summary["pages"] < MAX_PAGES_PER_RUN:
            page = self.snow.changed_since(cursor, source, limit=self.page_size, offset=skip)
            summary["pages"] += 1
            # Guard against a condition the instance dropped (a dropped condition matches everything).
            ours = [t for t in page if t.get("correlation_display") == source
                    and str(t.get("sys_updated_on") or "") >= cursor]
            due = self._due(ours)
            journal = self._prefetch_journal(due)
            for ticket in ours:
                summary["examined"] += 1
                link = due.get(ticket["sys_id"])
                if link is not None:
                    try:
                        with action_scope("servicenow_poll_ticket", link.incident_id):
                            outcome = self._sync_polled(ticket, link, journal.get(ticket["sys_id"], []))
                    except PackError as error:
                        if not _retryable(error):
                            raise
                        summary["stopped"] = f"{error.code}: {error.message}"
                        break
                    if outcome in ("synced", "failed"):
                        summary[outcome] += 1
                newest = max(newest, str(ticket.get("sys_updated_on") or ""))
            self.links.set_watermark(newest)  # progress is kept page by page
            if summary["stopped"]:
                break
            if len(page) < self.page_size:
                complete = True
                break
            last = str(page[-1].get("sys_updated_on") or "")
            if last > cursor:  # continue after the page: same second -> skip what this page already held
                cursor, skip = last, sum(1 for t in page if t.get("sys_updated_on") == last)
            else:  # a whole page within one second
                skip += len(page)
        if complete:
            self.links.set_watermark(newest, floor=shift_stamp(started, -LOOKBACK_SECONDS))
        summary["watermark"] = newest
        summary["from"] = cursor
        return summary

    def _due(self, tickets: list[dict]) -> dict[str, TicketLink]:
        """The tickets changed since their last sync (a state read each; no ServiceNow call)."""
        due: dict[str, TicketLink] = {}
        for ticket in tickets:
            link = self.links.get(str(ticket.get("correlation_id") or "").lower())
            if link is None or link.sys_id != ticket.get("sys_id") or link.state != "linked":
                continue  # not a ticket of this pack (or not finished being created)
            if int(ticket.get("sys_mod_count") or 0) > link.mod_count:
                due[ticket["sys_id"]] = link
        return due

    def _prefetch_journal(self, due: dict[str, TicketLink]) -> dict[str, list[dict]]:
        """The journal of every due ticket of a page in one query (grouped per ticket)."""
        if not due:
            return {}
        since = min(link.journal_since or "" for link in due.values())
        grouped: dict[str, list[dict]] = {sys_id: [] for sys_id in due}
        for entry in self.snow.journal(list(due), since):
            grouped.setdefault(ref_value(entry.get("element_id")), []).append(entry)
        return grouped

    def _sync_polled(self, ticket: dict, stale: TicketLink, journal: list[dict]) -> str:
        """Sync one changed ticket of a poll page: "synced", "unchanged" (a push got there first) or "failed"."""
        owner = new_owner()
        link = self.links.acquire(stale.incident_key, owner, wait=5.0)
        if link is None:
            return "unchanged"
        try:
            if int(ticket.get("sys_mod_count") or 0) <= link.mod_count:  # synced meanwhile by a push
                self.links.save(link)
                return "unchanged"
            try:
                self._reconcile(link, ticket=ticket, journal=journal)
            except PackError as error:
                if _retryable(error):
                    raise
                # It would fail the same way at every run (incident deleted, request refused):
                # account for this update so the poller moves on, and say so.
                log.error("poll: cannot sync ticket %s to incident %s (%s: %s); skipping this update",
                          link.number, link.incident_key, error.code, error.message)
                current = self.links.get(link.incident_key)
                if current is not None and current.lease_owner == owner:
                    current.mod_count = int(ticket.get("sys_mod_count") or 0)
                    self.links.save(current)
                return "failed"
        except BaseException:
            self.links.release(link)
            raise
        return "synced"

    # == one pair ===============================================================================
    def _reconcile(self, link: TicketLink, *, ticket: dict | None = None,
                   journal: list[dict] | None = None) -> dict[str, Any]:
        """Bring one incident and its ticket in step; saves the link and releases its lease."""
        incident = self.sentinel.get_incident(link.incident_id)
        props = dict(incident.get("properties") or {})
        if ticket is None:
            ticket = self.snow.get_ticket(link.sys_id)
        mod_count = int(ticket.get("sys_mod_count") or 0)
        known = set(link.known_comments)

        # 1. New ServiceNow work notes and comments become incident comments.
        if journal is None and mod_count != link.mod_count:
            journal = self.snow.journal([link.sys_id], link.journal_since or str(ticket.get("sys_created_on") or ""))
        copied = self._copy_journal(link, journal or [], known)

        # 2. Fields: three-way merge (sync/merge.py).
        sentinel_now = sentinel_view(props)
        servicenow_now = servicenow_view(ticket, self.mapping)
        decided = plan(sentinel_now, servicenow_now, link.base_sentinel, link.base_servicenow, self.mapping,
                       sentinel_changed_at=parse_sentinel_time(props.get("lastModifiedTimeUtc")),
                       servicenow_changed_at=parse_servicenow_time(ticket.get("sys_updated_on")))
        for conflict in decided.conflicts:
            log.info("conflict on %s of incident %s: Sentinel %r, ServiceNow %r -> %s wins", conflict["field"],
                     link.incident_key, conflict["sentinel"], conflict["servicenow"], conflict["winner"])
        base_sentinel = dict(sentinel_now)
        to_sentinel: list[str] = []
        if decided.to_sentinel:
            applied, result = self._apply_to_sentinel(link, decided.to_sentinel, sentinel_now, ticket)
            after = sentinel_view(result.get("properties") or {})
            for name in applied:
                base_sentinel[name] = after[name]
            to_sentinel = sorted(applied)

        # 3. New Sentinel comments become work notes; field changes ride on the last PATCH.
        comments = [c for c in self.sentinel.list_comments(link.incident_id) if c.get("name") not in known]
        comments.sort(key=lambda c: str((c.get("properties") or {}).get("createdTimeUtc") or ""))
        patches: list[tuple[str | None, dict[str, str]]] = [
            (c["name"], {"work_notes": self._work_note(link, props, c)}) for c in comments]
        fields = self._servicenow_fields(decided.to_servicenow, props)
        if fields:
            if patches:
                patches[-1][1].update(fields)
            else:
                patches.append((None, fields))
        base_servicenow, new_count, answer = dict(servicenow_now), mod_count, None
        for name, payload in patches:
            answer = self.snow.update_ticket(link.sys_id, payload)
            if name:
                known.add(name)
        if answer is not None:
            after = servicenow_view(answer, self.mapping)
            for name in decided.to_servicenow:
                base_servicenow[name] = after[name]
            answered = int(answer.get("sys_mod_count") or 0)
            if answered == mod_count + len(patches):
                new_count = answered
            else:  # someone else updated the ticket between our read and write: look again next time
                log.info("ticket %s changed while it was synced (count %s, expected %s)", link.number, answered,
                         mod_count + len(patches))

        link.base_sentinel, link.base_servicenow, link.mod_count = base_sentinel, base_servicenow, new_count
        link.known_comments = sorted(known)
        self.links.save(link)
        changed = bool(copied or to_sentinel or patches)
        final_state = str((answer or ticket).get("state") or "")
        return {
            "incident": link.incident_id,
            "ticket": {**self._ticket_ref(link), "state": final_state},
            "changed": changed,
            "sentinel": {"fields": to_sentinel, "comments": copied},
            "servicenow": {"fields": sorted(fields), "workNotes": sum(1 for name, _ in patches if name)},
            "conflicts": decided.conflicts,
        }

    def _ticket_ref(self, link: TicketLink) -> dict[str, str]:
        return {"number": link.number, "sysId": link.sys_id, "url": self.snow.ticket_url(link.sys_id)}

    # -- journal -> comments ------------------------------------------------------------------
    def _copy_journal(self, link: TicketLink, journal: list[dict], known: set[str]) -> int:
        copied = 0
        for entry in sorted(journal, key=lambda e: (str(e.get("sys_created_on") or ""), str(e.get("sys_id")))):
            created, sys_id = str(entry.get("sys_created_on") or ""), str(entry.get("sys_id") or "")
            if created < link.journal_since or (created == link.journal_since and sys_id in link.journal_seen):
                continue  # handled by an earlier run
            value = str(entry.get("value") or "")
            if entry.get("sys_created_by") == self.snow.username:
                # The pack's own note. Its marker is the last one: a copied comment may quote marker text.
                markers = MARKER_RE.findall(value)
                if markers:
                    known.add(markers[-1])  # a Sentinel comment this pack copied: never copy it back
            else:
                note = comment_id(link.incident_id, JOURNAL_COMMENT, sys_id)
                try:
                    self.sentinel.put_comment(link.incident_id, note, self._comment_text(link, entry))
                    copied += 1
                except BadRequest as refused:  # e.g. the incident holds 100 comments already
                    log.warning("journal entry %s of %s not copied: %s", sys_id, link.number, refused.message)
                known.add(note)
            if created > link.journal_since:
                link.journal_since, link.journal_seen = created, []
            link.journal_seen.append(sys_id)
        return copied

    @staticmethod
    def _comment_text(link: TicketLink, entry: dict) -> str:
        kind = "work note" if entry.get("element") == "work_notes" else "comment"
        value = str(entry.get("value") or "")
        body = html.escape(value).replace("\n", "<br>")
        header = (f"<p><b>ServiceNow {html.escape(link.number)}</b> · {kind} by "
                  f"{html.escape(str(entry.get('sys_created_by') or 'unknown'))} · "
                  f"{html.escape(str(entry.get('sys_created_on') or ''))} UTC</p>")
        limit = COMMENT_MAX_CHARS - len(header) - 20
        if len(body) > limit:
            body = body[:limit] + "…"
        return f"{header}<p>{body}</p>"

    # -- comments -> work notes ---------------------------------------------------------------
    @staticmethod
    def _work_note(link: TicketLink, props: dict, comment: dict) -> str:
        p = comment.get("properties") or {}
        author = (p.get("author") or {}).get("name") or (p.get("author") or {}).get("email") or "unknown"
        header = (f"<p>Synced from Microsoft Sentinel incident {journal_text(str(props.get('incidentNumber', '')))}"
                  f" · comment by {journal_text(str(author))} · {journal_text(str(p.get('createdTimeUtc') or ''))}</p>")
        footer = f"<p><i>{MARKER} {journal_text(str(comment['name']))}</i></p>"
        room = WORK_NOTE_MAX_CHARS - len(header) - len(footer) - 400  # 400: the closing tags journal_html adds
        # [code] keeps the comment's formatting (Sentinel comments are HTML), rebuilt from safe tags only: the
        # comment is not trusted HTML, and ServiceNow renders a [code] block as it is (sync/journal.py).
        return f"[code]{header}{journal_html(str(p.get('message') or ''), room)}{footer}[/code]"

    # -- fields -> Sentinel -------------------------------------------------------------------
    def _apply_to_sentinel(self, link: TicketLink, values: dict[str, str], seen: dict[str, str],
                           ticket: dict) -> tuple[dict[str, str], dict]:
        """Write ``values`` with the etag; a field that changed in Sentinel since ``seen`` is left alone."""
        applied: dict[str, str] = {}

        def change(properties: dict) -> bool:
            applied.clear()
            now = sentinel_view(properties)
            for name, value in values.items():
                if name == "classification" and "status" in values:
                    continue  # written with the status below
                if now[name] != seen[name]:
                    continue  # an analyst changed it a moment ago: the newer change stands
                if name == "status":
                    properties["status"] = value
                    if value == "Closed":
                        self._classify(properties, values.get("classification")
                                       or self.mapping.default_classification, ticket)
                        applied["classification"] = values.get("classification", "")
                elif name == "classification":
                    self._classify(properties, value, ticket)
                elif name == "severity":
                    properties["severity"] = value
                elif name == "owner":
                    properties["owner"] = self._owner(value)
                applied[name] = value
            return bool(applied)

        result = self.sentinel.update_incident(link.incident_id, change)
        return dict(applied), result

    @staticmethod
    def _classify(properties: dict, classification: str, ticket: dict) -> None:
        name, reason = split_classification(classification)
        properties["classification"] = name
        properties["classificationReason"] = reason
        notes = str(ticket.get("close_notes") or "").strip()
        fallback = f"Closed in ServiceNow ({ticket.get('close_code') or 'no close code'})"
        properties["classificationComment"] = (notes or fallback)[:CLOSE_NOTES_MAX_CHARS]

    def _owner(self, upn: str) -> dict[str, Any]:
        if not upn:
            return {"objectId": None, "email": None, "assignedTo": None, "userPrincipalName": None}
        owner: dict[str, Any] = {"email": upn, "userPrincipalName": upn, "assignedTo": upn, "ownerType": "User"}
        if object_id := self.mapping.owner_object_id(upn):
            owner["objectId"] = object_id
        return owner


__all__ = ["LOOKBACK_SECONDS", "MARKER", "ServiceNowSync", "client_from_settings"]
