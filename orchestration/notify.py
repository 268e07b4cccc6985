"""Teams and Slack messages about an incident: builders, webhook clients and the send-once logic.

Teams gets an Adaptive Card through a Workflows (or incoming) webhook, Slack gets Block Kit through
an incoming webhook; each channel is optional (``TEAMS_WEBHOOK_URL``, ``SLACK_WEBHOOK_URL``) and
independent: one failing never stops the other, and a retried call posts only where it has not
posted yet (``orchestration/ledger.py``).

Everything that comes from the incident is untrusted text. Slack's control characters ``& < >``
are entity-encoded (so ``<!channel>`` or ``<http://evil|click>`` stay text). In Adaptive Cards Teams
reads a small Markdown subset in TextBlocks and facts (bold, italic, lists, ``[title](url)`` links) and
no HTML (https://learn.microsoft.com/microsoftteams/platform/task-modules-and-cards/cards/cards-format):
only those forms are backslash-escaped, because some Teams clients show backslash escapes literally
and would turn every escaped ``(`` or ``#`` into noise. Links are only ever ones the pack built itself.
Webhook URLs are secrets: they never reach a log line, an error message or an answer.

A Teams Workflows webhook answers 202 when the flow starts, not when the card is posted: a card the
flow cannot post (over ~28 KB, or not a card) fails inside the flow, unseen by the sender. So the
notify answer says ``accepted`` for Teams (Slack's 200 ``ok`` means posted: ``sent``), and the cards
are kept valid and small here: every card the pack builds parses without a warning in Microsoft's
``adaptivecards`` parser (tests/orchestration/test_cards.py) and stays under ``TEAMS_CARD_MAX_BYTES``,
long entity lists ending with "and N more". Teams and Slack are posted side by side.

Fast under real latency (issue #16): a notification's calls are the send-once claims (Teams and Slack side by
side), the posts, and the marks. What the message says (the incident's ticket from the sync's link map, and for a
manual run the incident itself) is read beside the claims, not before them: a claim does not depend on the text,
and a post waits only for what it shows. Three round trips: storage, webhook, storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import requests

from core.case import Case
from core.concurrency import run_all, run_bounded
from core.errors import ConfigurationError, DownstreamError, PackError, Throttled
from core.http import call, reject_broken_json

log = logging.getLogger(__name__)

SEVERITY_COLOR = {"High": "Attention", "Medium": "Warning", "Low": "Accent", "Informational": "Default"}
SEVERITY_EMOJI = {"High": ":red_circle:", "Medium": ":large_orange_circle:", "Low": ":large_blue_circle:",
                  "Informational": ":white_circle:"}
MAX_ENTITIES_SHOWN = 15
SLACK_SECTION_MAX = 3000
SLACK_HEADER_MAX = 150
# Teams refuses a message over about 28 KB ("Request Entity Too Large", inside the flow): the Teams
# connector's known limits, https://learn.microsoft.com/connectors/teams/#known-issues-and-limitations,
# and the incoming-webhook page. A margin of 1 KB stays for what the flow adds around the card.
TEAMS_CARD_MAX_BYTES = 27 * 1024
CARD_FIELD_MAX = {"headline": 200, "title": 1000, "entity": 300, "text": 2000, "caption": 300}
# Markdown that Teams interprets in a TextBlock or Fact: a backslash before punctuation (so a literal one
# must be doubled there), every ``*`` (bold/italic, intraword too), ``_`` at a word edge (intraword
# ``snake_case`` stays literal), ``[title](`` links, list markers at a line start, and entity references.
_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~])")
_ENTITY_REF = re.compile(r"&(?=#?[0-9A-Za-z]+;)")
_LINK = re.compile(r"\[([^\]\n]*)\](?=\()")
_EMPHASIS = re.compile(r"\*|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_LIST_START = re.compile(r"^(\s*)([-+]|\d+[.)])(?=\s|$)", re.M)
_SLACK_ERROR = re.compile(r"^[a-z_]{1,60}$")


# -- escaping ------------------------------------------------------------------------------------
def slack_escape(text: str) -> str:
    """Slack's three control characters as entities: mentions and links in the text stay text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def card_escape(text: str) -> str:
    """Adaptive Card Markdown (TextBlock, Fact) as literal text: no link or formatting forms.

    Only what Teams interprets is escaped; ``< > # ( ) | ~`` and backticks are shown as they are.
    """
    text = _BACKSLASH.sub(r"\\\\", text)
    text = _ENTITY_REF.sub(r"\\&", text)
    text = _LINK.sub(lambda m: "\\[" + m[1] + "\\]", text)
    text = _EMPHASIS.sub(lambda m: "\\" + m[0], text)
    return _LIST_START.sub(lambda m: m[1] + (m[2][:-1] + "\\" + m[2][-1] if m[2][-1] in ".)" else "\\" + m[2]), text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the message ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Button:
    label: str
    url: str
    style: str = "default"  # default | primary | danger


@dataclass(frozen=True)
class Notice:
    """What a message says, whichever channel carries it."""

    headline: str
    title: str
    severity: str | None = None
    number: int | None = None
    incident_url: str | None = None
    entities: tuple[str, ...] = ()
    ticket: str | None = None
    ticket_url: str | None = None
    text: str | None = None
    # Rows of buttons, each with a caption ("alice@contoso.com:") -- the approval links.
    button_rows: tuple[tuple[str, tuple[Button, ...]], ...] = field(default_factory=tuple)

    @classmethod
    def for_case(cls, case: Case, headline: str, *, ticket: dict | None = None, text: str | None = None,
                 button_rows: Sequence[tuple[str, Sequence[Button]]] = ()) -> Notice:
        return cls(
            headline=headline,
            title=case.title or case.label,
            severity=case.severity,
            number=case.number,
            incident_url=case.url if case.url and case.url.startswith("https://") else None,
            entities=entity_labels(case),
            ticket=(ticket or {}).get("number"),
            ticket_url=(ticket or {}).get("url"),
            text=text,
            button_rows=tuple((caption, tuple(buttons)) for caption, buttons in button_rows),
        )

    def facts(self, shown: int = MAX_ENTITIES_SHOWN, *, entity_max: int | None = None) -> list[tuple[str, str]]:
        """Label/value pairs; past ``shown`` entities the list ends with "and N more" (each label clipped
        to ``entity_max`` characters when given)."""
        facts = [("Severity", self.severity or "unknown")]
        if self.number is not None:
            facts.append(("Incident", str(self.number)))
        if self.ticket:
            facts.append(("Ticket", self.ticket))
        if self.entities:
            listed = [label if entity_max is None else _clip(label, entity_max) for label in self.entities[:shown]]
            if len(self.entities) > shown:
                listed.append(f"and {len(self.entities) - shown} more")
            facts.append(("Entities", ", ".join(listed)))
        return facts

    def links(self) -> list[Button]:
        links = []
        if self.incident_url:
            links.append(Button("Open incident", self.incident_url))
        if self.ticket_url:
            links.append(Button(f"Open ticket {self.ticket or ''}".strip(), self.ticket_url))
        return links


def entity_labels(case: Case) -> tuple[str, ...]:
    labels = [f"account {a.upn or a.name or a.aad_user_id}" for a in case.accounts]
    labels += [f"host {h.fqdn}" for h in case.hosts]
    labels += [f"IP {ip.address}" for ip in case.ips]
    return tuple(labels)


def card_size(message: dict[str, Any]) -> int:
    """Bytes of the webhook message as sent (compact UTF-8 JSON, as requests encodes ``json=``)."""
    return len(json.dumps(message).encode("utf-8"))


def adaptive_card(notice: Notice, max_bytes: int = TEAMS_CARD_MAX_BYTES) -> dict[str, Any]:
    """A Teams Workflows webhook message: one Adaptive Card attachment (schema 1.4) under ``max_bytes``.

    Each text is clipped to its field's length; when the card is still too large, fewer entities are
    listed (the list ends with "and N more") and then the free text is shortened.
    """
    shown = MAX_ENTITIES_SHOWN
    text_max = CARD_FIELD_MAX["text"]
    while True:
        message = _card(notice, shown, text_max)
        if card_size(message) <= max_bytes or (shown == 0 and text_max <= 200):
            if card_size(message) > max_bytes:
                log.warning("Teams card is %d bytes, over the %d limit: the flow may fail to post it",
                            card_size(message), max_bytes)
            return message
        if shown > 0:
            shown //= 2
        else:
            text_max = max(200, text_max // 2)


def _card(notice: Notice, shown: int, text_max: int) -> dict[str, Any]:
    limit = CARD_FIELD_MAX
    facts = notice.facts(shown, entity_max=limit["entity"])
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": card_escape(_clip(notice.headline, limit["headline"])), "weight": "Bolder",
         "size": "Medium", "color": SEVERITY_COLOR.get(notice.severity or "", "Default"), "wrap": True},
        {"type": "TextBlock", "text": card_escape(_clip(notice.title, limit["title"])), "weight": "Bolder",
         "wrap": True},
        {"type": "FactSet", "facts": [{"title": card_escape(k), "value": card_escape(v)} for k, v in facts]},
    ]
    if notice.text:
        body.append({"type": "TextBlock", "text": card_escape(_clip(notice.text, text_max)), "wrap": True})
    for caption, buttons in notice.button_rows:
        body.append({"type": "TextBlock", "text": card_escape(_clip(caption, limit["caption"])), "wrap": True,
                     "spacing": "Medium"})
        body.append({"type": "ActionSet", "actions": [
            {"type": "Action.OpenUrl", "title": b.label, "url": b.url,
             **({"style": "destructive" if b.style == "danger" else "positive"} if b.style != "default" else {})}
            for b in buttons]})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body, "msteams": {"width": "Full"}}
    links = notice.links()
    if links:
        card["actions"] = [{"type": "Action.OpenUrl", "title": b.label, "url": b.url} for b in links]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback ``text`` plus Block Kit blocks; no unfurling."""
    emoji = SEVERITY_EMOJI.get(notice.severity or "", ":white_circle:")
    fields = [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{slack_escape(v)}", 2000)} for k, v in notice.facts()]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(notice.headline, SLACK_HEADER_MAX),
                                    "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": _clip(f"{emoji} *{slack_escape(notice.title)}*", SLACK_SECTION_MAX)},
         "fields": fields[:10]},
    ]
    if notice.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _clip(slack_escape(notice.text), SLACK_SECTION_MAX)}})
    for row, (caption, buttons) in enumerate(notice.button_rows):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(slack_escape(caption), 3000)}})
        blocks.append({"type": "actions", "block_id": f"approval-{row}", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": _clip(b.label, 75)}, "url": b.url,
             "action_id": f"approval-{row}-{i}", **({"style": b.style} if b.style != "default" else {})}
            for i, b in enumerate(buttons)]})
    links = notice.links()
    if links:
        blocks.append({"type": "actions", "block_id": "links", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": _clip(b.label, 75)}, "url": b.url,
             "action_id": f"link-{i}"} for i, b in enumerate(links)]})
    fallback = f"{notice.headline}: {notice.title}" + (f" (incident {notice.number})" if notice.number else "")
    return {"text": _clip(slack_escape(fallback), 3000), "blocks": blocks[:50], "unfurl_links": False,
            "unfurl_media": False}


# -- webhook clients -----------------------------------------------------------------------------
class WebhookClient:
    """POSTs a JSON message to one webhook; the URL is held, never shown."""

    def __init__(self, session: requests.Session, url: str, service: str) -> None:
        self._session = session
        self._url = str(url)
        self.service = service

    def __repr__(self) -> str:
        return f"WebhookClient({self.service!r})"

    def post(self, payload: dict[str, Any]) -> None:
        # No redirects: a webhook that answers with one is misconfigured, and following it would
        # send the message (and our client) somewhere the URL did not name.
        response = call(self._session, "POST", self._url, service=self.service, json=payload,
                        allow_redirects=False)
        reject_broken_json(response, self.service)
        if 200 <= response.status_code < 300:
            return
        raise self._error(response)

    def _error(self, response: requests.Response) -> PackError:
        text = (response.text or "").strip()
        code = text if _SLACK_ERROR.match(text) else f"HTTP {response.status_code}"
        if response.status_code in (401, 403, 404, 410):
            return ConfigurationError(f"{self.service} refused the webhook ({code}): the webhook URL setting is "
                                      "wrong, revoked or its channel is gone", code=f"{self.service}WebhookRefused")
        return DownstreamError(f"{self.service} rejected the message ({code})", code=f"{self.service}Rejected")


def event_key(*parts: str) -> str:
    """A short, stable key naming one event (table keys must stay small and free of '/')."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


Payload = dict[str, Any] | Callable[[], dict[str, Any]]


def deliver_all(ledger, channels: dict[str, tuple[WebhookClient | None, Payload]],
                event: str) -> tuple[dict[str, str], list[PackError]]:
    """Send each configured channel's message once for ``event``, the channels side by side; every
    channel is tried, one failing never stops another. A payload may be a callable: it is built once the
    channel's claim is won, so what it shows can still be read while the claim is made.

    Returns (channel -> ``sent`` | ``already-sent`` | ``unconfirmed`` | ``in-progress`` | ``not-configured`` |
    ``failed: ...``, in the channels' order; the errors of the channels that failed).
    """
    configured = [(name, client, payload) for name, (client, payload) in channels.items() if client is not None]

    def deliver(channel: tuple[str, WebhookClient, Payload]) -> str:
        name, client, payload = channel
        return ledger.send_once(event, name, lambda: client.post(payload() if callable(payload) else payload))

    outcomes = {o.item[0]: o for o in run_bounded(deliver, configured, len(configured))}
    results: dict[str, str] = {}
    errors: list[PackError] = []
    for name in channels:
        outcome = outcomes.get(name)
        if outcome is None:
            results[name] = "not-configured"
        elif outcome.ok:
            results[name] = str(outcome.value)
        elif isinstance(outcome.error, PackError):
            log.warning("%s message failed: %s %s", name, outcome.error.code, outcome.error.message)
            results[name] = f"failed: {outcome.error.message}"
            errors.append(outcome.error)
        else:
            raise outcome.error  # a bug, not a channel outcome
    return results, errors


# A Teams Workflows webhook answers 202 when its flow starts; whether the card was posted is only in the
# flow's run history. So what the pack can say about Teams is "accepted", never "sent" (delivered).
ACCEPTED_ONLY = frozenset({"teams"})


def acknowledged(results: dict[str, str]) -> dict[str, str]:
    """Channel outcomes in words that claim no more than the service said: ``sent`` / ``already-sent``
    become ``accepted`` / ``already-accepted`` for channels that only acknowledge acceptance (Teams)."""
    words = {"sent": "accepted", "already-sent": "already-accepted"}
    return {name: words.get(result, result) if name in ACCEPTED_ONLY else result
            for name, result in results.items()}


def incomplete(results: dict[str, str], errors: list[PackError]) -> PackError:
    """The error to answer when some channel failed: the most retry-worthy, naming every channel's outcome.

    The Logic App's retry then sends only what is missing (the ledger remembers the rest).
    """
    summary = "; ".join(f"{name}: {result}" for name, result in results.items())
    retry_after = max((e.retry_after or 30) for e in errors)
    if any(isinstance(e, Throttled) for e in errors):
        return Throttled(f"notification incomplete ({summary})", retry_after=retry_after)
    if all(isinstance(e, ConfigurationError) for e in errors):
        return ConfigurationError(f"notification incomplete ({summary})", code=errors[0].code)
    return DownstreamError(f"notification incomplete ({summary})", retry_after=retry_after)


# -- the notify action ---------------------------------------------------------------------------
def ticket_of(ctx, case: Case) -> dict | None:
    """The incident's ServiceNow ticket, from the sync's link map; None when there is none (yet)."""
    if not case.incident_name or ctx.settings.values.get("SERVICENOW_INSTANCE_URL") is None:
        return None
    from sync.links import LinkStore

    link = LinkStore(ctx.state).get(case.incident_name.lower())
    if link is None or not link.number:
        return None
    ticket = {"number": link.number, "sysId": link.sys_id}
    try:
        from sync.service import client_from_settings

        ticket["url"] = client_from_settings(ctx.settings).ticket_url(link.sys_id)
    except PackError:
        pass  # the number alone still helps
    return ticket


class Notifier:
    """Teams and Slack clients from settings, and the send-once ledger."""

    def __init__(self, ctx) -> None:
        from orchestration.ledger import SendLedger

        self.ctx = ctx
        settings = ctx.settings
        teams, slack = settings["TEAMS_WEBHOOK_URL"], settings["SLACK_WEBHOOK_URL"]
        self.teams = WebhookClient(ctx.session, str(teams), "Teams") if teams else None
        self.slack = WebhookClient(ctx.session, str(slack), "Slack") if slack else None
        self.ledger = SendLedger(ctx.state)

    def send(self, notice: Notice | Callable[[], Notice], event: str, *, only: tuple[str, ...] = ("teams", "slack")
             ) -> tuple[dict[str, str], list[PackError]]:
        """Post ``notice`` to the ``only`` channels once per ``event``; outcomes in ``acknowledged`` words (Teams:
        ``accepted``), and the errors of the channels that failed. ``notice`` may be a callable that waits for what
        the message shows: it is called once a channel's claim is won."""
        made = _Later()

        def message(build: Callable[[Notice], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
            return lambda: build(made.once(notice if callable(notice) else lambda: notice))

        channels: dict[str, tuple[WebhookClient | None, Payload]] = {
            "teams": (self.teams, message(adaptive_card)), "slack": (self.slack, message(slack_message))}
        results, errors = deliver_all(self.ledger, {k: v for k, v in channels.items() if k in only}, event)
        return acknowledged(results), errors

    def notify(self, case: Case, body: dict) -> dict[str, Any]:
        """``POST orchestration/notify``: one message per channel per incident, alert or entity event.

        Accepts every trigger body: an incident (its update is a new event), an alert, an entity (with or
        without its incident), or ``{"incidentArmId": ...}`` (a manual run: the incident is read).
        """
        from dataclasses import replace

        from core.case import ci_get, ci_path

        if not (case.incident_id or case.alert_id or case.source == "entity"):
            from core.errors import BadRequest

            raise BadRequest("notify needs an incident, alert or entity trigger body (or {\"incidentArmId\": ...})")
        explicit = ci_get(body, "notifyKey")
        if explicit is not None:
            key_material = ["key", str(explicit)[:200]]
        elif case.source == "entity":
            # An entity run names the entity (its ARM id, else what it is) within its incident, if any.
            entity_id = ci_path(body, "Entity", "id") or "|".join(entity_labels(case))
            key_material = ["entity", str(entity_id)[:400], case.incident_id or ""]
        else:
            # The same trigger event (retried by the Logic App) gives the same key; a later update of
            # the incident is a new event, told apart by its modification time.
            modified = ci_path(body, "object", "properties", "lastModifiedTimeUtc") or ""
            key_material = [case.incident_id or case.alert_id or "", case.event_type or "Created", str(modified)]
        shown, ticket = _Later(), _Later()  # the case as the message shows it, and its ticket: read beside the claims

        def read_case() -> Case:
            if not (case.incident_id and (not case.entities_included or case.source == "entity")):
                return case
            incident = self.ctx.sentinel.get_incident(case.incident_id)
            props = incident.get("properties") or {}
            read = replace(case, title=props.get("title"), severity=props.get("severity"),
                           number=props.get("incidentNumber"), url=props.get("incidentUrl"))
            return self.ctx.with_entities(read)  # a manual run's entities; an entity run keeps its entity

        text = ci_get(body, "message")

        def notice() -> Notice:
            full = shown.get()
            made = Notice.for_case(full, _headline(full), ticket=ticket.get(), text=str(text)[:1000] if text else None)
            if full.source == "entity" and not full.title:
                named = made.entities or tuple(other.label for other in full.others)
                made = replace(made, title=_clip(", ".join(named), CARD_FIELD_MAX["title"]) or "an entity")
            return made

        _, _, (channels, errors) = run_all(lambda: shown.run(read_case), lambda: ticket.run(lambda: ticket_of(
            self.ctx, case)), lambda: self.send(notice, event_key("notify", *key_material)))
        if errors:
            raise incomplete(channels, errors)
        return {"incident": case.incident_id, "alert": case.alert_id, "case": shown.get().label, "channels": channels,
                "ticket": (ticket.get() or {}).get("number")}


class _Later:
    """A value one call of a ``run_all`` computes and another waits for (``get``); ``once`` computes it on first use."""

    def __init__(self) -> None:
        self._future: Future = Future()
        self._lock = threading.Lock()
        self._started = False

    def run(self, make: Callable[[], Any]) -> Any:
        try:
            value = make()
        except BaseException as error:
            self._future.set_exception(error)
            raise
        self._future.set_result(value)
        return value

    def once(self, make: Callable[[], Any]) -> Any:
        with self._lock:
            first, self._started = not self._started, True
        return self.run(make) if first else self.get()

    def get(self) -> Any:
        return self._future.result()


def _headline(case: Case) -> str:
    """Says what the run is about: an entity, an alert or an incident (new or updated)."""
    if case.source == "entity":
        return "Sentinel entity" + (" of an incident" if case.incident_id else "")
    if case.alert_id and not case.incident_id:
        return "New Sentinel alert"
    return "Sentinel incident updated" if (case.event_type or "").lower() == "update" else "New Sentinel incident"
