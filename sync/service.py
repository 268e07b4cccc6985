"""Sentinel <-> ServiceNow incident sync: create the ticket once, then keep both sides in step.

Three entry points share one idea: every run for an incident/ticket pair reads both sides fresh and
reconciles them with a three-way merge against what the last run saw (sync/merge.py). So it does not
matter what woke the sync up -- the Sentinel automation rule (``outbound``), the ServiceNow business rule
(``inbound``) or the timer (``poll``, sync/poll.py) -- nor how often: an event delivered twice, late or out
of order leads to the same result, and a run with nothing new writes nothing.

Calls, and why there are so few (issue 16): the incident is read once, by the etag-guarded update that
also writes it (the merge runs inside ``SentinelClient.update_incident``'s change callback, so a 409 re-plans
on the fresh incident); the ticket is read once (or comes from the poll page or the create answer); the
incident's comments are listed only when its ``commentsCount`` says there are ones the sync has not seen
(outbound always lists them: that trigger is how Sentinel comments announce themselves). The pair's lease
(sync/links.py) is taken only by a run that writes to ServiceNow, whose writes cannot be repeated safely; a run
that writes only to Sentinel (etag-guarded fields, comments with deterministic ids) saves the link
conditionally on the etag it read instead, and starts over if another run saved first.

No echo, by construction and by bookkeeping:
- fields: what the sync writes becomes the base the next run compares with, so it is not a change;
- the ticket's ``sys_mod_count`` after the sync's own PATCH is recorded: a push or poll that sees
  that count (the business rule firing on our update) stops before reading anything else;
- Sentinel comments copied from ServiceNow have deterministic ids (one per journal sys_id) and are
  recorded as handled; Sentinel comments copied to ServiceNow are recorded by id, and the work note
  carries a marker with that id, so even a run that died between the PATCH and saving the link
  recognises its own note instead of writing it again; journal entries by the integration user are
  the pack's own and never copied back.

Closed tickets: ServiceNow makes a Closed or Canceled incident read-only for the integration user (``itil``).
Once the ticket is closed the link says so (state ``closed``), one incident comment explains it, and nothing
more is written to the ticket. Reopening the Sentinel incident opens a follow-up ticket whose
``parent_incident`` is the closed one, and the sync goes on with it.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from core.case import Case, Workspace
from core.concurrency import run_all, run_bounded
from core.context import Context
from core.credentials import ARM_SCOPE
from core.errors import BadRequest, Busy, ConfigurationError, Conflict, DownstreamError, Forbidden, NotFound, PackError
from core.http import build_session, session_from_settings
from core.sentinel import comment_id
from core.settings import Settings
from core.telemetry import bind_incident
from sync import query, texts
from sync.incident import IncidentWriter, with_count
from sync.links import TABLE, LinkStore, TicketLink, new_owner
from sync.mapping import SyncMapping
from sync.merge import parse_sentinel_time, parse_servicenow_time, plan, sentinel_view, servicenow_view
from sync.servicenow import ACL_REFUSED, ServiceNowClient, ref_value
from sync.texts import MARKER
from sync.webhook import parse_push

log = logging.getLogger(__name__)

TICKET_COMMENT = "servicenow-ticket"
TICKET_LABEL = "ServiceNow: "  # + the ticket number: the incident label the sync adds
CLOSED_COMMENT = "servicenow-closed"
RESTARTS = 3
# A run that finds its pair leased waits for a holder in this process on an event (core/held_here.py: no
# Table reads while it waits, issue #16 item 3) and answers 429 + Retry-After at once when the holder is another
# process: the Logic App's retry syncs what the holder may not have seen. The poll (a timer, nobody retries it) waits
# less for a push on its ticket: past that it stops there, and its next run reads the ticket again (the cursor stays).
TRIGGER_WAIT = 20.0
POLL_WAIT = 5.0

_clients: dict[tuple[str, str], ServiceNowClient] = {}
_clients_lock = threading.Lock()
_cursor_started: set[str] = set()  # state tables whose poll cursor exists (written once per process)
UNKNOWN: Any = object()  # "not looked up yet", as opposed to None, "looked up: no ticket"


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


def incident_key(case: Case) -> str:
    """The incident's GUID, the only thing that becomes a ServiceNow correlation_id (and a query value).

    It is taken from the incident ARM id; a body whose ``name`` says something else is refused rather than
    trusted (the name is what a crafted body would use to smuggle query syntax or script into ServiceNow).
    """
    if not case.incident_id:
        raise BadRequest(f"the ServiceNow sync needs an incident: send the incident trigger body or "
                         f"{{\"incidentArmId\": ...}}; this {case.source} payload names none")
    key = query.guid(case.incident_id.rsplit("/", 1)[-1], "the incident name in the incident ARM id")
    if case.incident_name and case.incident_name.lower() != key:
        raise BadRequest("the body's incident name does not match its incident ARM id", code="UnsafeQueryValue")
    return key


def _has_ticket_label(case: Case) -> bool:
    """Whether the incident, as the trigger carried it, has the label the sync adds to an incident with a ticket."""
    labels = case.raw_properties.get("labels") if isinstance(case.raw_properties, dict) else None
    return any(isinstance(label, dict) and str(label.get("labelName") or "").lower().startswith(TICKET_LABEL.lower())
               for label in labels or ())


def _trigger_incident(case: Case) -> dict | None:
    """The incident as the incident trigger carried it (with its etag), when it can be written back as it is: a
    number JSON cannot carry (the parser takes ``Infinity``) means reading the incident instead."""
    resource = case.resource
    if resource is None:
        return None
    try:
        json.dumps(resource, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return resource


def ticket_defaults(settings: Settings) -> dict[str, str]:
    """The fields every new ticket gets from the settings: sys_ids and a category word, nothing else."""
    defaults: dict[str, str] = {}
    for field, name in (("caller_id", "SERVICENOW_CALLER_ID"), ("assignment_group", "SERVICENOW_ASSIGNMENT_GROUP")):
        if settings[name]:
            if not query.SYS_ID.match(str(settings[name])):
                raise ConfigurationError(f"setting {name} must be a sys_id (32 hexadecimal characters)")
            defaults[field] = str(settings[name])
    if settings["SERVICENOW_CATEGORY"]:
        defaults["category"] = query.word(settings["SERVICENOW_CATEGORY"], "setting SERVICENOW_CATEGORY")
    return defaults


def now_stamp() -> str:
    """The current time as ServiceNow writes it (UTC, whole seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def retryable(error: PackError) -> bool:
    """Failures that clear up by themselves or once the deployment is fixed (the next run retries);
    the rest would fail every time for this ticket alone (it is skipped so the others go on).

    Sentinel's 403 is the function's missing role on the workspace: every ticket fails alike until it
    is granted, so skipping would lose every update made meanwhile instead of holding up none.
    """
    return (isinstance(error, (DownstreamError, Conflict, ConfigurationError))
            or error.code == "SentinelAccessDenied")


class _Restart(Exception):
    """The pair changed under this run (another run saved the link first, or the ticket turned read-only)."""

    def __init__(self, ticket: dict | None = None) -> None:
        super().__init__("restart")
        self.ticket = ticket


class ServiceNowSync:
    """The sync over one Context (Sentinel client, state store, settings)."""

    def __init__(self, ctx: Context, snow: ServiceNowClient | None = None, mapping: SyncMapping | None = None) -> None:
        settings = ctx.settings
        self.mapping = mapping or SyncMapping.from_setting(settings["SERVICENOW_MAPPING"])  # type: ignore[arg-type]
        if snow is None:
            settings.require("SERVICENOW_INSTANCE_URL", "SERVICENOW_USERNAME", "SERVICENOW_PASSWORD")
        self._settings, self._snow = settings, snow
        self.sentinel = ctx.sentinel
        self.links = LinkStore(ctx.state)
        self.max_entities = int(settings["MAX_ENTITIES"])  # type: ignore[arg-type]
        self.concurrency = max(1, int(settings["SERVICENOW_SYNC_CONCURRENCY"]))  # type: ignore[arg-type]
        self.page_size = max(1, int(settings["SERVICENOW_POLL_BATCH"]))  # type: ignore[arg-type]
        self.max_pages = max(1, int(settings["SERVICENOW_POLL_MAX_PAGES"]))  # type: ignore[arg-type]
        self.overlap = max(0, int(settings["SERVICENOW_POLL_OVERLAP_SECONDS"]))  # type: ignore[arg-type]
        self.defaults = ticket_defaults(settings)
        username = snow.username if snow is not None else str(settings["SERVICENOW_USERNAME"])
        self.incident = IncidentWriter(self.sentinel, self.mapping, username, self.concurrency, ctx.comments)

    @property
    def snow(self) -> ServiceNowClient:
        """The process's client for the instance, built on first use: a cold process imports pysnow in the thread
        that first calls ServiceNow, beside the other first calls (and a close without a ticket never does)."""
        if self._snow is None:
            self._snow = client_from_settings(self._settings)
        return self._snow

    # == Sentinel -> ServiceNow =================================================================
    def outbound(self, case: Case) -> dict[str, Any]:
        """Incident created or updated: create the ticket once, then bring both sides in step.

        A new incident costs one round trip before the create (issue 16): the claim (a conditional insert, so
        concurrent triggers open one ticket) and the look-up for a ticket of this incident (one that a lost state
        table or an earlier deployment left) run side by side. The look-up runs beside the claim only when the
        incident trigger shows no ticket label, i.e. when the incident is most likely new; otherwise the claim
        fails and the look-up would be wasted (a claim that succeeds anyway looks up after it).
        """
        key, owner = incident_key(case), new_owner()
        bind_incident(case.incident_id)
        calls: list = [lambda: self.links.claim(key, case.incident_id, owner),
                       # The ARM token the Sentinel writes will need: in a cold process (or when it expired) it is
                       # fetched here, beside the first round; otherwise this is a cache look-up. A failure shows
                       # again, and is reported, where the token is used.
                       lambda: self.sentinel.tokens.bearer(ARM_SCOPE)]
        if case.source == "incident" and not _has_ticket_label(case):
            calls.append(lambda: self.snow.find_by_correlation(key, self.mapping.source))
        claimed, _, *looked_up = run_bounded(lambda call: call(), calls, len(calls))
        link = claimed.get()  # nothing was claimed when this fails
        if link is not None:
            return self._guarded(link, owner, lambda held: self._first_sync(
                case, held, owner, current=_trigger_incident(case),
                ticket=looked_up[0].get() if looked_up else UNKNOWN))
        link = self.links.get(key)
        if link is None:
            raise Busy(f"the link of incident {key} changed while it was read; retry", retry_after=5)
        link = self.links.wait_free(link, owner, wait=TRIGGER_WAIT)
        if link is None:
            raise Busy(f"the link of incident {key} changed while it was read; retry", retry_after=5)
        if link.state == "creating":  # an earlier run died before it linked the ticket: adopt or create it
            held = self.links.take(link, owner) or self.links.acquire(key, owner, wait=TRIGGER_WAIT)
            if held is None:
                raise Busy(f"the link of incident {key} changed while it was read; retry", retry_after=5)
            return self._guarded(held, owner, lambda leased: self._first_sync(case, leased, owner,
                                                                             current=_trigger_incident(case)))
        try:
            return {"created": False, **self._sync(link, owner, list_comments="always")}
        except NotFound as missing:
            if missing.code != "ServiceNowNotFound":
                raise
        return self._recreate(case, key, owner)

    def _recreate(self, case: Case, key: str, owner: str) -> dict[str, Any]:
        """The ticket was deleted in ServiceNow: every incident must have one, so open another."""
        link = self.links.acquire(key, owner, wait=TRIGGER_WAIT)
        if link is None:
            raise Busy(f"the link of incident {key} disappeared; retry", retry_after=5)
        gone = link.sys_id
        log.warning("ticket %s of incident %s no longer exists; creating a new one", link.number, key)

        def again(held: TicketLink) -> dict[str, Any]:
            held.state, held.base_sentinel, held.base_servicenow, held.mod_count = "creating", {}, {}, -1
            summary = self._first_sync(case, held, owner)
            if summary["ticket"]["sysId"] != gone:  # only now: a 404 that was not a deletion keeps the way back
                self.links.forget_ticket(gone)
            return summary

        return self._guarded(link, owner, again)

    def _guarded(self, link: TicketLink, owner: str, work) -> dict[str, Any]:
        """Run ``work`` on a leased link; a failure gives the lease back (what was saved stays)."""
        try:
            return work(link)
        except BaseException:
            self.links.release(link)
            raise

    def _first_sync(self, case: Case, link: TicketLink, owner: str, *, follows: TicketLink | None = None,
                    props: dict | None = None, current: dict | None = None, ticket: Any = UNKNOWN) -> dict[str, Any]:
        """Find the ticket an interrupted run created (by correlation id) or create it, link both ways, sync.

        ``ticket``: what the caller's look-up found (None: nothing), or ``UNKNOWN`` (the default: look up here).
        ``current``: the incident as the trigger carried it (with its etag), used by the update of a new ticket's
        incident instead of reading it: that update always writes (the new ticket's label), so a change made since
        the trigger fired is a 409 and a fresh read, never a write of stale fields.
        """
        props = props if props is not None else self._trigger_properties(case)
        previous = [entry[0] for entry in link.previous]

        def find() -> dict | None:
            return self.snow.find_by_correlation(link.incident_key, self.mapping.source, exclude=previous)

        read_here = props is None
        if read_here:  # nothing to open a ticket from: read the incident, beside the look-up
            if ticket is UNKNOWN:
                ticket, current = run_all(find, lambda: self.sentinel.get_incident(link.incident_id))
            else:
                current = self.sentinel.get_incident(link.incident_id)
            props = dict(current.get("properties") or {})
        elif ticket is UNKNOWN:
            ticket = find()
        created = ticket is None
        if ticket is None:
            if not case.entities_included:
                case = case.with_entities(self.sentinel.list_entities(link.incident_id), self.max_entities)
            self.links.renew(link)  # a slow instance: keep the pair through the create
            fields = self._ticket_fields(case, link, props)
            if follows is not None:
                fields["parent_incident"] = follows.sys_id
                fields["description"] = texts.description(case, props, follow_up_of=follows.number)
            try:
                ticket = self.snow.create_ticket(fields)
            except Forbidden as refused:
                raise self._unknown_close_code(refused, fields) from None
            log.info("created ServiceNow %s for incident %s", ticket.get("number"), link.incident_key)
        link.sys_id, link.number = ticket["sys_id"], str(ticket.get("number") or "")
        created_on = str(ticket.get("sys_created_on") or "")
        link.state = "linked"
        link.journal_since, link.journal_seen = str(ticket.get("sys_created_on") or ""), []
        if created:  # both sides hold what was just written: that is the base
            link.base_sentinel = sentinel_view(props)
            link.base_servicenow = servicenow_view(ticket, self.mapping)
            link.mod_count, link.comments_count = int(ticket.get("sys_mod_count") or 0), 0
        else:  # adopted after an interrupted run: no shared history, so a difference is decided by age
            link.base_sentinel, link.base_servicenow, link.mod_count, link.comments_count = {}, {}, -1, -1
        url = self.snow.ticket_url(link.sys_id)
        # One comment per ticket (its sys_id in the id): a follow-up or a replacement of a deleted ticket gets a new
        # comment; it never rewrites the first one (the Defender portal does not show edits, issue 15.11).
        note = comment_id(link.incident_id, TICKET_COMMENT, link.sys_id)
        text = texts.link_comment(link.number, url, follows=follows.number if follows else "")
        index = (link.sys_id, link.incident_key, link.incident_id)
        summary = self._reconcile(link, owner, ticket=ticket, journal=[] if created else None,
                                  label=f"{TICKET_LABEL}{link.number}", notes=[(note, text)],
                                  # The trigger's comment count may predate a comment (another playbook's): list them.
                                  list_comments="always" if created and current and not read_here else "changed",
                                  current=current if created or read_here else None,
                                  also=[lambda: self.links.index_ticket(*index),
                                        lambda: self._start_cursor(created_on)])
        return {"created": created, **summary}

    @staticmethod
    def _trigger_properties(case: Case) -> dict | None:
        """The incident as the incident trigger sent it: enough to open the ticket without reading it first.
        The update right after reads the incident anyway and brings any later change over."""
        props = case.raw_properties if case.source == "incident" else None
        return dict(props) if props and props.get("title") and props.get("status") else None

    def _start_cursor(self, created_on: str) -> None:
        """The poller reads from just before the first ticket: written once, then known for the process."""
        table = self.links.store.table_name(TABLE)
        if table not in _cursor_started and created_on:
            self.links.start_cursor(created_on)
            _cursor_started.add(table)

    def _ticket_fields(self, case: Case, link: TicketLink, props: dict) -> dict[str, str]:
        number = props.get("incidentNumber") or case.number or ""
        title = str(props.get("title") or case.title or "Microsoft Sentinel incident")
        wanted = {name: value for name, value in sentinel_view(props).items() if value}
        wanted = {name: value for name, value in wanted.items()
                  if name != "owner" or self.mapping.owner_sys_id(value) is not None}
        return {
            **self.defaults,
            "short_description": texts.short_description(number, title),
            "description": texts.description(case, props),
            "correlation_id": link.incident_key,
            "correlation_display": self.mapping.source,
            **self._servicenow_fields(wanted, props),
        }

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
            fields["close_notes"] = texts.close_notes(props, classification)
        if "severity" in values and (pair := self.mapping.impact_urgency_for(values["severity"])) is not None:
            fields["impact"], fields["urgency"] = pair
        if "owner" in values and (sys_id := self.mapping.owner_sys_id(values["owner"])) is not None:
            fields["assigned_to"] = sys_id
        return fields

    # == ServiceNow -> Sentinel: push ===========================================================
    def inbound(self, payload: Any) -> dict[str, Any]:
        """The business rule says ticket X changed: reconcile its pair (or ignore our own echo)."""
        sys_id, mod_count = parse_push(payload)
        key = self.links.incident_for_ticket(sys_id)
        link = self.links.get(key) if key else None
        if link is None:
            raise NotFound(f"ServiceNow ticket {sys_id} was not created by this pack (no link)", code="UnknownTicket")
        bind_incident(link.incident_id)
        if link.sys_id != sys_id:
            replaced = {entry[0]: entry[1] for entry in link.previous}
            if sys_id in replaced:
                return {"incident": link.incident_id, "ticket": self._ticket_ref(link), "changed": False,
                        "ignored": f"ticket {replaced[sys_id]} is closed; follow-up {link.number} tracks the incident"}
            raise NotFound(f"ServiceNow ticket {sys_id} is no longer linked to an incident", code="UnknownTicket")
        if mod_count is not None and mod_count <= link.mod_count:
            return {"incident": link.incident_id, "ticket": self._ticket_ref(link), "changed": False,
                    "ignored": f"update {mod_count} of the ticket was already synced (or written by the sync)"}
        owner = new_owner()
        link = self.links.wait_free(link, owner, wait=TRIGGER_WAIT)
        if link is None:
            raise NotFound(f"ServiceNow ticket {sys_id} is no longer linked to an incident", code="UnknownTicket")
        return self._sync(link, owner)

    # == ServiceNow -> Sentinel: poll ===========================================================
    def poll(self) -> dict[str, Any]:
        from sync.poll import Poller

        return Poller(self).run()

    def sync_polled(self, link: TicketLink, ticket: dict, journal: list[dict],
                    defer: list[tuple[TicketLink, str]] | None = None) -> str:
        """Sync one changed ticket of a poll page: "synced", "unchanged" (another run got there first) or
        "failed" (it would fail the same way at every run: accounted for, so the poller moves on).

        ``defer``: the link is not saved here but appended (with whether this run leased it) for the poller to save
        with the page's other links in one request (``LinkStore.save_all``)."""
        owner = new_owner()
        link = self.links.wait_free(link, owner, wait=POLL_WAIT)
        if link is None or link.sys_id != ticket.get("sys_id"):
            return "unchanged"
        if int(ticket.get("sys_mod_count") or 0) <= link.mod_count:  # synced meanwhile by a push
            return "unchanged"
        try:
            summary = self._sync(link, owner, ticket=ticket, journal=journal, defer=defer)
        except PackError as error:
            if retryable(error):
                raise
            log.error("poll: cannot sync ticket %s to incident %s (%s: %s); skipping this update",
                      link.number, link.incident_key, error.code, error.message)
            self._skip_update(link.incident_key, int(ticket.get("sys_mod_count") or 0))
            return "failed"
        return "unchanged" if summary.get("superseded") else "synced"

    def _skip_update(self, key: str, mod_count: int) -> None:
        current = self.links.get(key)
        if current is not None and not current.leased_by_other("", self.links.clock()):
            current.mod_count = max(current.mod_count, mod_count)
            self.links.save_if_unchanged(current)

    # == one pair ===============================================================================
    def _sync(self, link: TicketLink, owner: str, *, ticket: dict | None = None, journal: list[dict] | None = None,
              list_comments: str = "changed", defer: list[tuple[TicketLink, str]] | None = None) -> dict[str, Any]:
        """Reconcile the pair, starting over (with fresh reads) when another run changed it meanwhile."""
        held = [link]
        try:
            for _ in range(RESTARTS):
                try:
                    return self._reconcile(held[0], owner, ticket=ticket, journal=journal,
                                           list_comments=list_comments, held=held, defer=defer)
                except _Restart as restart:
                    ticket, journal = restart.ticket, None
                    if held[0].lease_owner != owner:  # not ours: read it again (it changed)
                        current = self.links.get(link.incident_key)
                        if current is None:
                            raise NotFound(f"the link of incident {link.incident_key} disappeared",
                                           code="UnknownTicket") from None
                        wait = POLL_WAIT if defer is not None else TRIGGER_WAIT  # the poll passes ``defer``
                        held[0] = self.links.wait_free(current, owner, wait=wait) or current
        except BaseException:
            if held[0].lease_owner == owner:
                self.links.release(held[0])
            raise
        raise Busy(f"the sync of incident {link.incident_key} kept changing under this run; retry",
                   code="SyncBusy", retry_after=5)

    def _reconcile(self, link: TicketLink, owner: str, *, ticket: dict | None = None,
                   journal: list[dict] | None = None, label: str | None = None,
                   notes: list[tuple[str, str]] = (), list_comments: str = "changed",
                   held: list[TicketLink] | None = None, also: list = (), current: dict | None = None,
                   defer: list[tuple[TicketLink, str]] | None = None) -> dict[str, Any]:
        """Bring one incident and its ticket in step; saves the link (and releases its lease if it took one).
        ``current``: the incident as the caller has it (with its etag), instead of reading it. ``defer``: see
        ``sync_polled``."""
        held = held if held is not None else [link]
        if link.lease_owner == owner:
            self.links.renew(link)
        if ticket is None:
            ticket = self.snow.get_ticket(link.sys_id)
        read_only = self.mapping.is_read_only(str(ticket.get("state") or ""))
        if link.state == "closed" and not read_only:
            link.state = "linked"  # an admin reopened the ticket: go on with it
        mod_count = int(ticket.get("sys_mod_count") or 0)
        hidden = 0
        if journal is None and mod_count != link.mod_count:
            journal, hidden = self.snow.journal([link.sys_id], link.journal_since or str(ticket.get("sys_created_on")))
        known = set(link.known_comments)

        # 1. Sentinel: one read, the merge on what it returned, one etag-guarded write (sync/merge.py); beside the
        #    write, the comments the sync adds (its own notes and the new journal entries) and ``also``: neither
        #    depends on the other, and the comment budget counts on the incident as read.
        box: dict[str, Any] = {}

        def change(props: dict) -> bool:
            box["count"] = (props.get("additionalData") or {}).get("commentsCount")
            decided = plan(sentinel_view(props), servicenow_view(ticket, self.mapping), link.base_sentinel,
                           link.base_servicenow, self.mapping,
                           sentinel_changed_at=parse_sentinel_time(props.get("lastModifiedTimeUtc")),
                           servicenow_changed_at=parse_servicenow_time(ticket.get("sys_updated_on")))
            if read_only:
                decided.to_servicenow.clear()
            box["plan"] = decided
            box["applied"] = self.incident.apply(props, decided.to_sentinel, ticket)
            labelled = bool(label) and self.incident.add_label(props, label)  # type: ignore[arg-type]
            return bool(box["applied"] or labelled)

        start = current if current is not None else self.sentinel.get_incident(link.incident_id)
        copies = self.incident.journal_comments(link, journal or [], known)
        puts = [(name, text) for name, text in notes if name not in known] + copies

        def update() -> dict:
            try:
                return self.sentinel.update_incident(link.incident_id, change, current=start)
            except BadRequest:
                if current is None:
                    raise
                # The caller's copy (the trigger's) holds something ARM does not take back: read the incident.
                return self.sentinel.update_incident(link.incident_id, change)

        def comment() -> tuple[int, str | None]:
            return self.incident.put_comments(link, puts, known, also=also, incident=start)

        # Listing the comments does not depend on the update either: when it is due anyway ("always"), it runs beside.
        listing = list_comments == "always"
        calls = [update, *([comment] if puts or also else []),
                 *([lambda: self.sentinel.list_comments(link.incident_id)] if listing else [])]
        incident, *rest = run_all(*calls) if len(calls) > 1 else [update()]
        added, budget = rest.pop(0) if puts or also else (0, None)
        listed: list[dict] | None = rest.pop(0) if listing else None
        props = dict(incident.get("properties") or {})
        decided = box["plan"]
        for conflict in decided.conflicts:
            log.info("conflict on %s of incident %s: Sentinel %r, ServiceNow %r -> %s wins", conflict["field"],
                     link.incident_key, conflict["sentinel"], conflict["servicenow"], conflict["winner"])
        count = box["count"] if isinstance(box["count"], int) else None

        if read_only:
            if props.get("status") != "Closed":  # reopened in Sentinel: a follow-up ticket takes over
                return self._follow_up(link, owner, props, held)
            return self._freeze(link, owner, ticket, incident, known, count, added, budget, defer)

        # 3. New Sentinel comments become work notes; field changes ride on the last PATCH.
        comments: list[dict] = []
        if listed is not None or count is None or count != link.comments_count:
            listed = listed if listed is not None else self.sentinel.list_comments(link.incident_id)
            comments = [c for c in listed if c.get("name") not in known]
            comments.sort(key=lambda c: str((c.get("properties") or {}).get("createdTimeUtc") or ""))
        patches: list[tuple[str | None, dict[str, str]]] = [
            (c["name"], {"work_notes": texts.work_note(props, c)}) for c in comments]
        fields = self._servicenow_fields(decided.to_servicenow, props)
        if fields:
            if patches:
                patches[-1][1].update(fields)
            else:
                patches.append((None, fields))
        base_servicenow, new_count, answer = servicenow_view(ticket, self.mapping), mod_count, None
        if patches:
            link = self._lease(link, owner, held)
            for name, payload in patches:
                self.links.renew(link)
                answer = self._write_ticket(link, payload, known)
                if name:
                    known.add(name)
            after = servicenow_view(answer, self.mapping)
            for name in decided.to_servicenow:
                base_servicenow[name] = after[name]
            answered = int(answer.get("sys_mod_count") or 0)
            if answered == mod_count + len(patches):
                new_count = answered
            else:  # someone else updated the ticket between our read and write: look again next time
                log.info("ticket %s changed while it was synced (count %s, expected %s)", link.number, answered,
                         mod_count + len(patches))

        link.base_sentinel, link.base_servicenow, link.mod_count = sentinel_view(props), base_servicenow, new_count
        link.known_comments = sorted(known)
        link.comments_count = count + added if count is not None else -1
        superseded = self._save(link, owner, defer)
        if hidden:
            log.error("ServiceNow hid %d journal entries of %s from the integration user: grant it read access to "
                      "sys_journal_field (docs/servicenow.md)", hidden, link.number)
        final_state = str((answer or ticket).get("state") or "")
        return {
            "incident": link.incident_id,
            "ticket": {**self._ticket_ref(link), "state": final_state},
            "changed": bool(added or box["applied"] or patches),
            "sentinel": {"fields": sorted(box["applied"]), "comments": len(copies)},
            "servicenow": {"fields": sorted(fields), "workNotes": sum(1 for name, _ in patches if name)},
            "conflicts": decided.conflicts,
            **({"superseded": True} if superseded else {}),
            **({"journalHidden": hidden} if hidden else {}),
            **({"commentBudget": budget} if budget else {}),
        }

    def _lease(self, link: TicketLink, owner: str, held: list[TicketLink]) -> TicketLink:
        """The pair's lease before writing to ServiceNow: a run that read the link without it takes it now, and
        starts over if the link changed since it was read (another run synced the pair meanwhile)."""
        if link.lease_owner == owner and link.lease_until > self.links.clock():
            return link
        leased = self.links.take(link, owner)
        if leased is None:
            raise _Restart()
        held[0] = leased
        return leased

    def _write_ticket(self, link: TicketLink, payload: dict[str, str], known: set[str]) -> dict:
        """One PATCH; a ticket that turned read-only meanwhile (ACL refusal) restarts the run on its new state."""
        try:
            return self.snow.update_ticket(link.sys_id, payload)
        except Forbidden as refused:
            if refused.code != ACL_REFUSED:
                raise self._unknown_close_code(refused, payload) from None
            fresh = self.snow.get_ticket(link.sys_id)
            if not self.mapping.is_read_only(str(fresh.get("state") or "")):
                raise
            link.known_comments = sorted(known)
            self.links.save(link, release=False)  # keep what was written before the refusal
            raise _Restart(fresh) from None

    def _unknown_close_code(self, refused: Forbidden, payload: dict[str, str]) -> PackError:
        """ServiceNow drops a close_code its choice list lacks, then refuses the resolve ("Resolution code" is
        mandatory): name the mapping entry that holds the code, which is what has to change."""
        code = payload.get("close_code")
        if not code or "Resolution code" not in refused.message:
            return refused
        entry = self.mapping.written_values()["close_code"].get(code, "classification_to_close_code")
        return ConfigurationError(f"ServiceNow has no close code {code!r} (it dropped it and then refused to resolve "
                                  f"the ticket): change setting SERVICENOW_MAPPING {entry} to one of the instance's "
                                  "incident close codes (GET /api/health/details lists the ones missing)",
                                  code="ServiceNowUnknownCloseCode")

    def _save(self, link: TicketLink, owner: str, defer: list[tuple[TicketLink, str]] | None = None) -> bool:
        """Save the link; True when a run without the lease found that another run saved first. With ``defer``,
        the link (its lease released) goes there to be saved by the caller, and this says False."""
        if defer is not None:
            leased = link.lease_owner == owner
            if leased:
                link.lease_owner, link.lease_until = "", 0.0
            defer.append((link, owner if leased else ""))
            return False
        if link.lease_owner == owner:
            self.links.save(link)
            return False
        if self.links.save_if_unchanged(link):
            return False
        log.info("the link of incident %s was saved by another run meanwhile; this run's writes were idempotent",
                 link.incident_key)
        return True

    def _ticket_ref(self, link: TicketLink) -> dict[str, Any]:
        ref: dict[str, Any] = {"number": link.number, "sysId": link.sys_id, "url": self.snow.ticket_url(link.sys_id)}
        if link.state == "closed":
            ref["readOnly"] = True
        if link.previous:
            ref["previous"] = [number for _, number in link.previous]
        return ref

    # -- closed tickets -----------------------------------------------------------------------
    def _freeze(self, link: TicketLink, owner: str, ticket: dict, incident: dict, known: set[str], count: int | None,
                added: int, budget: str | None, defer: list | None = None) -> dict[str, Any]:
        """The ticket is closed (read-only): say so once on the incident, and write nothing more to it."""
        props = dict(incident.get("properties") or {})
        note = comment_id(link.incident_id, CLOSED_COMMENT, link.sys_id)
        if note not in known:
            more, budget = self.incident.put_comments(
                link, [(note, texts.closed_comment(link.number, self.snow.ticket_url(link.sys_id)))], known,
                incident=None if count is None else with_count(incident, count + added))
            added += more
        link.state = "closed"
        link.base_sentinel = sentinel_view(props)
        link.base_servicenow = servicenow_view(ticket, self.mapping)
        link.mod_count = int(ticket.get("sys_mod_count") or 0)
        link.known_comments = sorted(known)
        link.comments_count = count + added if count is not None else -1
        superseded = self._save(link, owner, defer)
        return {"incident": link.incident_id,
                "ticket": {**self._ticket_ref(link), "state": str(ticket.get("state") or "")},
                "changed": bool(added), "sentinel": {"fields": [], "comments": added},
                "servicenow": {"fields": [], "workNotes": 0, "skipped": "the ticket is closed (read-only)"},
                "conflicts": [], **({"superseded": True} if superseded else {}),
                **({"commentBudget": budget} if budget else {})}

    def _follow_up(self, link: TicketLink, owner: str, props: dict, held: list[TicketLink]) -> dict[str, Any]:
        """The Sentinel incident was reopened while its ticket is closed: open a follow-up ticket linked to it."""
        link = self._lease(link, owner, held)
        closed = TicketLink(link.incident_key, link.incident_id, sys_id=link.sys_id, number=link.number)
        if [link.sys_id, link.number] not in link.previous:
            link.previous = [*link.previous, [link.sys_id, link.number]]
        link.state = "creating"
        self.links.save(link, release=False)  # a crash from here on adopts the follow-up instead of another one
        case = Case(source="manual", incident_id=link.incident_id, workspace=Workspace(None, None, None),
                    incident_name=link.incident_key, entities_included=False)
        summary = self._first_sync(case, link, owner, follows=closed, props=props)
        log.info("incident %s reopened: follow-up ServiceNow %s for closed %s", link.incident_key, link.number,
                 closed.number)
        return {**summary, "followUpOf": closed.number}

    # == close-incident ==========================================================================
    def close_ticket(self, case: Case, incident: dict, comment: tuple[str, str] | None = None) -> dict[str, Any]:
        """The incident was just closed (``incident`` as the close wrote it): resolve its ticket in one PATCH,
        carrying the closing comment as a work note, without reading the incident or the ticket again."""
        key = incident_key(case)
        link = self.links.get(key)
        if link is None or link.state == "creating":
            return {"result": "no-ticket"}
        if link.state == "closed":
            return {"result": "ticket-closed", "number": link.number}
        props = dict(incident.get("properties") or {})
        now = sentinel_view(props)
        wanted = {"status": now["status"], "classification": now["classification"]}
        fields = self._servicenow_fields(wanted, props)
        mapped = servicenow_view(fields, self.mapping)
        done = all(link.base_servicenow.get(name) == mapped[name] for name in ("status", "classification"))
        note = comment if comment and comment[0] not in link.known_comments else None
        if done and note is None:
            return {"result": "synced", "number": link.number, "state": link.base_servicenow.get("status")}
        owner = new_owner()
        link = self.links.wait_free(link, owner, wait=TRIGGER_WAIT)
        leased = self.links.take(link, owner) if link is not None else None
        if leased is None:  # another run is on the pair: let the full sync settle it
            return {"result": "synced", **self._ticket_result(self.outbound(case))}

        def close(held: TicketLink) -> dict[str, Any]:
            payload = {} if done else dict(fields)
            if note is not None:
                payload["work_notes"] = texts.work_note(props, {"name": note[0], "properties": {
                    "message": note[1], "author": {"name": "sentinel-playbooks"}}})
            try:
                answer = self.snow.update_ticket(held.sys_id, payload)
            except (Forbidden, NotFound) as refused:
                if refused.code not in (ACL_REFUSED, "ServiceNowNotFound"):
                    raise (self._unknown_close_code(refused, payload) if isinstance(refused, Forbidden)
                           else refused) from None
                self.links.release(held)  # closed or deleted meanwhile: the full sync knows what to do
                return {"result": "synced", **self._ticket_result(self.outbound(case))}
            after = servicenow_view(answer, self.mapping)
            for name in ("status", "classification"):
                held.base_sentinel[name], held.base_servicenow[name] = now[name], after[name]
            if int(answer.get("sys_mod_count") or 0) == held.mod_count + 1:
                held.mod_count += 1
            if note is not None:
                held.known_comments = sorted({*held.known_comments, note[0]})
                if held.comments_count >= 0:
                    held.comments_count += 1  # the closing comment, written beside this call
            self.links.save(held)
            return {"result": "synced", "number": held.number, "state": str(answer.get("state") or "")}

        return self._guarded(leased, owner, close)

    @staticmethod
    def _ticket_result(summary: dict) -> dict[str, Any]:
        ticket = summary.get("ticket") if isinstance(summary.get("ticket"), dict) else {}
        return {"number": ticket.get("number"), "state": ticket.get("state")}


__all__ = ["MARKER", "ServiceNowSync", "client_from_settings", "incident_key", "now_stamp", "ref_value",
           "retryable"]
