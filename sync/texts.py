"""What the sync writes as text: the ticket's fields, work notes, and the comments it adds to the incident.

Every text a person reads on the other side is built here, so its escaping is in one place: Sentinel
comments render limited HTML (``html.escape`` everything), ServiceNow journal entries render HTML only inside
``[code]`` blocks (sync/journal.py), and ServiceNow fields are clipped to what they hold (sync/fields.py).
"""

from __future__ import annotations

import html
from typing import Any

from core.case import Case
from core.sentinel import COMMENT_MAX_CHARS
from sync.fields import ELLIPSIS, clip, clip_field, clipped
from sync.journal import journal_html, journal_text
from sync.mapping import split_classification

MARKER = "sentinel-playbooks comment"
WORK_NOTE_MAX_CHARS = 30_000
MAX_ENTITIES_IN_DESCRIPTION = 50


def short_description(number: Any, title: str) -> str:
    return clip_field("short_description", f"[Sentinel #{number}] {title}")


def description(case: Case, props: dict, *, follow_up_of: str = "") -> str:
    """The ticket's description: what the incident is, where it is, its entities; clipped with a note."""
    entities = [ip.address for ip in case.ips] + [host.host_name for host in case.hosts]
    entities += [account.upn or account.name or account.key for account in case.accounts]
    entities += [other.label for other in case.others]
    shown = ", ".join(entities[:MAX_ENTITIES_IN_DESCRIPTION])
    if len(entities) > MAX_ENTITIES_IN_DESCRIPTION:
        shown += f" and {len(entities) - MAX_ENTITIES_IN_DESCRIPTION} more"
    number = props.get("incidentNumber") or case.number or ""
    title = str(props.get("title") or case.title or "Microsoft Sentinel incident")
    lines = []
    if follow_up_of:
        lines += [f"Follow-up of {follow_up_of}, which is closed: the Sentinel incident was reopened.", ""]
    lines += [f"Microsoft Sentinel incident {number} ({props.get('severity') or case.severity or 'unknown severity'})",
              f"Incident ARM id: {case.incident_id}",
              f"Portal: {props.get('incidentUrl') or case.url or ''}",
              f"Entities: {shown or 'none'}"]
    if clipped("short_description", f"[Sentinel #{number}] {title}"):
        lines.append(f"Title (clipped in the short description): {title}")
    if props.get("description"):
        lines += ["", str(props["description"])]
    return clip_field("description", "\n".join(lines))


def close_notes(props: dict, classification: str) -> str:
    comment = str(props.get("classificationComment") or "").strip()
    name, reason = split_classification(classification)
    text = comment or f"Closed in Microsoft Sentinel as {name}" + (f" ({reason})" if reason else "") + "."
    return clip_field("close_notes", text)


def classification_comment(ticket: dict) -> str:
    """What Sentinel's classificationComment says when ServiceNow closed the incident (Sentinel keeps 4,000)."""
    notes = str(ticket.get("close_notes") or "").strip()
    fallback = f"Closed in ServiceNow ({ticket.get('close_code') or 'no close code'})"
    return clip(notes or fallback, 4_000)


def work_note(props: dict, comment: dict) -> str:
    """A Sentinel comment as a ServiceNow work note: its HTML rebuilt from safe tags, with the marker that lets
    the sync recognise its own note."""
    p = comment.get("properties") or {}
    author = (p.get("author") or {}).get("name") or (p.get("author") or {}).get("email") or "unknown"
    header = (f"<p>Synced from Microsoft Sentinel incident {journal_text(str(props.get('incidentNumber', '')))}"
              f" · comment by {journal_text(str(author))} · {journal_text(str(p.get('createdTimeUtc') or ''))}</p>")
    footer = f"<p><i>{MARKER} {journal_text(str(comment['name']))}</i></p>"
    room = WORK_NOTE_MAX_CHARS - len(header) - len(footer) - 400  # 400: the closing tags journal_html adds
    # [code] keeps the comment's formatting (Sentinel comments are HTML), rebuilt from safe tags only: the
    # comment is not trusted HTML, and ServiceNow renders a [code] block as it is (sync/journal.py).
    return f"[code]{header}{journal_html(str(p.get('message') or ''), room)}{footer}[/code]"


def journal_comment(number: str, entry: dict) -> str:
    """A ServiceNow work note or comment as a Sentinel comment."""
    kind = "work note" if entry.get("element") == "work_notes" else "comment"
    body = html.escape(str(entry.get("value") or "")).replace("\n", "<br>")
    header = (f"<p><b>ServiceNow {html.escape(number)}</b> · {kind} by "
              f"{html.escape(str(entry.get('sys_created_by') or 'unknown'))} · "
              f"{html.escape(str(entry.get('sys_created_on') or ''))} UTC</p>")
    limit = COMMENT_MAX_CHARS - len(header) - 20
    if len(body) > limit:
        body = body[:limit] + ELLIPSIS
    return f"{header}<p>{body}</p>"


def link_comment(number: str, url: str, *, follows: str = "") -> str:
    lead = f"ServiceNow {html.escape(follows)} is closed; " if follows else ""
    what = "follow-up ticket" if follows else "ticket"
    return (f'<p><b>ServiceNow</b> {lead}{what} <a href="{html.escape(url)}">{html.escape(number)}</a> tracks this '
            f"incident. Status, severity, owner, classification and comments stay in sync both ways.</p>")


def closed_comment(number: str, url: str) -> str:
    """Said once, when the ticket became read-only to the integration user."""
    return (f'<p><b>ServiceNow</b> ticket <a href="{html.escape(url)}">{html.escape(number)}</a> is closed, and a '
            f"closed ticket is read-only in ServiceNow: changes made here are no longer copied to it. Reopening "
            f"this incident opens a follow-up ticket linked to {html.escape(number)}.</p>")


__all__ = ["MARKER", "classification_comment", "close_notes", "closed_comment", "description", "journal_comment",
           "link_comment", "short_description", "work_note"]
