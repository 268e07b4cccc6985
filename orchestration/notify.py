"""Teams and Slack messages about an incident: builders, webhook clients and the send-once logic.

Teams gets an Adaptive Card through a Workflows (or incoming) webhook, Slack gets Block Kit through
an incoming webhook; each channel is optional (``TEAMS_WEBHOOK_URL``, ``SLACK_WEBHOOK_URL``) and
independent: one failing never stops the other, and a retried call posts only where it has not
posted yet (``orchestration/ledger.py``).

Everything that comes from the incident is untrusted text. Slack's control characters ``& < >``
are entity-encoded (so ``<!channel>`` or ``<http://evil|click>`` stay text); in Adaptive Cards, whose
TextBlocks and facts read Markdown, ``< > &`` are encoded and Markdown punctuation is backslash
escaped (so ``[click](http://evil)`` stays text). Links are only ever ones the pack built itself.
Webhook URLs are secrets: they never reach a log line, an error message or an answer.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from core.case import Case
from core.errors import ConfigurationError, DownstreamError, PackError, Throttled
from core.http import call, reject_broken_json

log = logging.getLogger(__name__)

SEVERITY_COLOR = {"High": "Attention", "Medium": "Warning", "Low": "Accent", "Informational": "Default"}
SEVERITY_EMOJI = {"High": ":red_circle:", "Medium": ":large_orange_circle:", "Low": ":large_blue_circle:",
                  "Informational": ":white_circle:"}
MAX_ENTITIES_SHOWN = 15
SLACK_SECTION_MAX = 3000
SLACK_HEADER_MAX = 150
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#|~])")
_LIST_START = re.compile(r"^(\s*)([-+]|\d+\.)(?=\s)", re.M)
_SLACK_ERROR = re.compile(r"^[a-z_]{1,60}$")


# -- escaping ------------------------------------------------------------------------------------
def slack_escape(text: str) -> str:
    """Slack's three control characters as entities: mentions and links in the text stay text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def card_escape(text: str) -> str:
    """Adaptive Card Markdown (TextBlock, Fact) as literal text: no link, mention or formatting forms."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _LIST_START.sub(lambda m: m[1] + "\\" + m[2], _MARKDOWN.sub(r"\\\1", text))


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

    def facts(self) -> list[tuple[str, str]]:
        facts = [("Severity", self.severity or "unknown")]
        if self.number is not None:
            facts.append(("Incident", str(self.number)))
        if self.ticket:
            facts.append(("Ticket", self.ticket))
        if self.entities:
            shown = list(self.entities[:MAX_ENTITIES_SHOWN])
            if len(self.entities) > MAX_ENTITIES_SHOWN:
                shown.append(f"and {len(self.entities) - MAX_ENTITIES_SHOWN} more")
            facts.append(("Entities", ", ".join(shown)))
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


def adaptive_card(notice: Notice) -> dict[str, Any]:
    """A Teams Workflows webhook message: one Adaptive Card attachment (schema 1.4)."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": card_escape(notice.headline), "weight": "Bolder", "size": "Medium",
         "color": SEVERITY_COLOR.get(notice.severity or "", "Default"), "wrap": True},
        {"type": "TextBlock", "text": card_escape(notice.title), "weight": "Bolder", "wrap": True},
        {"type": "FactSet", "facts": [{"title": card_escape(k), "value": card_escape(v)} for k, v in notice.facts()]},
    ]
    if notice.text:
        body.append({"type": "TextBlock", "text": card_escape(notice.text), "wrap": True})
    for caption, buttons in notice.button_rows:
        body.append({"type": "TextBlock", "text": card_escape(caption), "wrap": True, "spacing": "Medium"})
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


def deliver_all(ledger, channels: dict[str, tuple[WebhookClient | None, dict[str, Any]]],
                event: str) -> tuple[dict[str, str], list[PackError]]:
    """Send each configured channel's message once for ``event``; every channel is tried.

    Returns (channel -> ``sent`` | ``already-sent`` | ``unconfirmed`` | ``in-progress`` | ``not-configured`` |
    ``failed: ...``,
    the errors of the channels that failed).
    """
    results: dict[str, str] = {}
    errors: list[PackError] = []
    for name, (client, payload) in channels.items():
        if client is None:
            results[name] = "not-configured"
            continue
        try:
            results[name] = ledger.send_once(event, name, lambda c=client, p=payload: c.post(p))
        except PackError as error:
            log.warning("%s message failed: %s %s", name, error.code, error.message)
            results[name] = f"failed: {error.message}"
            errors.append(error)
    return results, errors


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

    def send(self, notice: Notice, event: str, *, only: tuple[str, ...] = ("teams", "slack")
             ) -> tuple[dict[str, str], list[PackError]]:
        channels = {"teams": (self.teams, adaptive_card(notice)), "slack": (self.slack, slack_message(notice))}
        return deliver_all(self.ledger, {k: v for k, v in channels.items() if k in only}, event)

    def notify(self, case: Case, body: dict) -> dict[str, Any]:
        """``POST orchestration/notify``: one message per channel per incident event."""
        from core.case import ci_get, ci_path

        explicit = ci_get(body, "notifyKey")
        if explicit is not None:
            key_material = ["key", str(explicit)[:200]]
        else:
            # The same trigger event (retried by the Logic App) gives the same key; a later update of
            # the incident is a new event, told apart by its modification time.
            modified = ci_path(body, "object", "properties", "lastModifiedTimeUtc") or ""
            key_material = [case.incident_id or case.alert_id or "", case.event_type or "Created", str(modified)]
        if not (case.incident_id or case.alert_id):
            from core.errors import BadRequest

            raise BadRequest("notify needs an incident or alert trigger body (or {\"incidentArmId\": ...})")
        if not case.entities_included and case.incident_id:
            incident = self.ctx.sentinel.get_incident(case.incident_id)
            props = incident.get("properties") or {}
            from dataclasses import replace

            case = replace(case, title=props.get("title"), severity=props.get("severity"),
                           number=props.get("incidentNumber"), url=props.get("incidentUrl"))
            case = self.ctx.with_entities(case)
        ticket = ticket_of(self.ctx, case)
        headline = "Sentinel incident updated" if (case.event_type or "").lower() == "update" \
            else "New Sentinel incident"
        text = ci_get(body, "message")
        notice = Notice.for_case(case, headline, ticket=ticket, text=str(text)[:1000] if text else None)
        channels, errors = self.send(notice, event_key("notify", *key_material))
        if errors:
            raise incomplete(channels, errors)
        return {"incident": case.incident_id, "case": case.label, "channels": channels,
                "ticket": (ticket or {}).get("number")}
