"""``POST orchestration/close-incident``: close the Sentinel incident and its ServiceNow ticket.

The incident is closed with an etag-safe update (a concurrent edit is re-read and re-applied, and
an incident already closed the same way is not written again), one comment with a deterministic id
says why (through the incident's comment budget, core/comments.py; the id derives from what the comment
says, so closing again differently adds a comment instead of editing the first), and the linked ticket is
resolved by the sync area (``ServiceNowSync.close_ticket``) with the mapped close code and the same comment
as a work note.

Fast under real latency (issue #16): the ticket's resolution does not wait for Sentinel. What it needs of the
closed incident (its number, and the status, classification and comment this action writes) is the incident as
the trigger carried it with this action's change applied, so it starts at once, beside the incident's read; a
manual run (``{"incidentArmId": ...}``, what the compromised-user playbook sends) carries no incident, and its
ticket starts after the read. The incident is read once, and not skipped even when the trigger carries its etag:
the comment budget needs the incident's current comment count (a trigger body is as old as its trigger, and
close-incident usually runs after an approval wait), and the read is what makes the close a single write (a
stale etag would cost a refused PUT, a read and a second PUT). The close and its comment then go side by side.
Three calls without a ticket.
"""

from __future__ import annotations

import hashlib
import html
import logging
from typing import Any

from core.case import Case, ci_get
from core.comments import notice_text
from core.concurrency import run_all
from core.errors import BadRequest, PackError
from core.sentinel import comment_id

log = logging.getLogger(__name__)

# Sentinel's classification -> the reasons it accepts; the first is the default.
REASONS: dict[str, tuple[str, ...]] = {
    "TruePositive": ("SuspiciousActivity",),
    "BenignPositive": ("SuspiciousButExpected",),
    "FalsePositive": ("IncorrectAlertLogic", "InaccurateData"),
    "Undetermined": (),
}
COMMENT_MAX = 1000


def _canonical(value: Any, allowed: tuple[str, ...] | list[str], what: str) -> str:
    text = str(value or "").strip()
    for name in allowed:
        if name.lower() == text.lower():
            return name
    raise BadRequest(f"{what} {text[:40]!r} is not one of {', '.join(allowed)}")


def parse_close(body: dict) -> tuple[str, str | None, str]:
    """(classification, reason, comment) from the request, validated as Sentinel would."""
    raw = ci_get(body, "classification")
    if raw is None:
        raise BadRequest("classification is required: TruePositive, BenignPositive, FalsePositive or Undetermined")
    classification = _canonical(raw, list(REASONS), "classification")
    allowed = REASONS[classification]
    raw_reason = ci_get(body, "classificationReason")
    if not allowed:
        if raw_reason:
            raise BadRequest(f"{classification} takes no classificationReason")
        reason = None
    else:
        reason = _canonical(raw_reason, allowed, "classificationReason") if raw_reason else allowed[0]
    comment = str(ci_get(body, "comment", "classificationComment") or "").strip()[:COMMENT_MAX]
    return classification, reason, comment


class Closer:
    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def close(self, case: Case, body: dict) -> dict[str, Any]:
        if not case.incident_id or not case.incident_name:
            raise BadRequest("close-incident needs an incident: send the incident trigger body or "
                             "{\"incidentArmId\": ...}")
        classification, reason, comment = parse_close(body)
        if self.ctx.settings.values.get("SERVICENOW_INSTANCE_URL") is not None:
            from sync.service import incident_key

            incident_key(case)  # refuse a body the ticket could not be closed for before closing anything
        closed_by = str(ci_get(body, "closedBy") or "").strip()[:200]
        text = comment or f"Closed by the playbook as {classification}" + (f" ({reason})" if reason else "") + "."

        wanted = {"status": "Closed", "classification": classification, "classificationReason": reason,
                  "classificationComment": text}

        def apply(props: dict) -> bool:
            if all(props.get(k) == v for k, v in wanted.items()):
                return False
            props.update(wanted)
            if reason is None:
                props.pop("classificationReason", None)
            return True

        def as_closed(incident: dict) -> dict:
            """The incident as the close writes it: what the ticket's resolution needs of it."""
            properties = dict(incident.get("properties") or {})
            apply(properties)
            return {**incident, "properties": properties}

        seen: dict[str, bool] = {}

        def change(props: dict) -> bool:
            seen.setdefault("closed", props.get("status") == "Closed")  # as first read, before any retry
            return apply(props)

        digest = hashlib.sha256(f"{classification}|{reason}|{text}".encode()).hexdigest()[:16]
        cid = comment_id(case.incident_id, "close", digest)
        e = html.escape
        message = (f"<p><b>Incident closed: {e(classification)}" + (f" ({e(reason)})" if reason else "") + "</b></p>"
                   f"<p>{e(text)}</p>" + (f"<p>Decision by {e(closed_by)}.</p>" if closed_by else ""))

        def close_incident(current: dict):
            """The close and its comment side by side (the count the budget needs is in ``current``)."""
            return run_all(lambda: self.ctx.sentinel.update_incident(case.incident_id, change, current=current),
                           lambda: self.ctx.comments.write(case.incident_id, cid, message, incident=current))[1]

        def close_ticket(incident: dict) -> dict[str, Any]:
            return self._close_ticket(case, as_closed(incident), (cid, message))

        carried = case.resource
        if carried is not None:
            written, ticket = run_all(lambda: close_incident(self.ctx.sentinel.get_incident(case.incident_id)),
                                      lambda: close_ticket(carried))
        else:
            current = self.ctx.sentinel.get_incident(case.incident_id)
            written, ticket = run_all(lambda: close_incident(current), lambda: close_ticket(current))
        notice = notice_text(written)
        return {"incident": case.incident_id, "case": case.label, "status": "Closed", "classification": classification,
                "classificationReason": reason, "alreadyClosed": seen["closed"], "comment": written.comment_id,
                **({"commentNotice": notice} if notice else {}), "ticket": ticket}

    def _close_ticket(self, case: Case, incident: dict, comment: tuple[str, str]) -> dict[str, Any]:
        """Resolve the linked ticket (the sync maps the classification to its close code)."""
        if self.ctx.settings.values.get("SERVICENOW_INSTANCE_URL") is None:
            return {"result": "not-configured"}
        from sync.service import ServiceNowSync

        try:
            return ServiceNowSync(self.ctx).close_ticket(case, incident, comment)
        except PackError:
            log.warning("closing the ticket of %s failed; the Logic App retries the call", case.label)
            raise
