"""How an approval asks: a personal mail per approver (the only place decision links go) and a notice in
Teams / Slack with one "Review" link, which decides nothing by itself (the review page needs the signed-in
approver). Each message is sent once per approval and channel (core/sendonce.py), so a retried subscribe
asks nobody twice.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

from core.case import Case
from core.directory import Person
from core.errors import ConfigurationError, PackError
from core.pages import deadline_text

if TYPE_CHECKING:
    from orchestration.approvals import Approval, Approvals

log = logging.getLogger(__name__)
REACHED = ("sent", "already-sent", "accepted", "already-accepted", "in-progress", "unconfirmed")


def ask(service: Approvals, approval: Approval, case: Case, channels: tuple[str, ...]) -> dict[str, str]:
    from core.sendonce import SendLedger
    from orchestration.notify import Button, Notice, Notifier, event_key, incomplete

    settings = service.settings
    event = event_key("approval", approval.id)
    results: dict[str, str] = {}
    errors: list[PackError] = []
    mailbox = settings["APPROVAL_MAILBOX"]
    if "email" in channels and mailbox:
        from core.mail import GraphMailer

        mailer = GraphMailer(service.ctx.session, service.ctx.tokens, str(settings["GRAPH_ENDPOINT"]), str(mailbox))
        ledger = SendLedger(service.ctx.state)
        for person in approval.people():
            channel = f"mail:{person.address}"
            try:
                results[channel] = ledger.send_once(event, channel, lambda p=person: mailer.send(
                    p.address, f"Approval needed: {approval.title}"[:255], mail_html(service, approval, case, p)))
            except PackError as error:
                log.warning("approval mail failed: %s %s", error.code, error.message)
                results[channel] = f"failed: {error.message}"
                errors.append(error)
    elif "email" in channels:
        results["email"] = "not-configured"
    chat = tuple(c for c in ("teams", "slack") if c in channels)
    if chat:
        review = Button("Review (approvers sign in to decide)", approval.link(service.signer, "review"), "primary")
        notice = Notice.for_case(case, "Approval needed", text=notice_text(service, approval),
                                 button_rows=[("Approvers open the review page and decide there after signing in; "
                                               "the first decision wins.", [review])])
        chat_results, chat_errors = Notifier(service.ctx).send(notice, event, only=chat)
        results.update(chat_results)
        errors += chat_errors
    reached = any(r in REACHED for r in results.values())
    retryable = [e for e in errors if not isinstance(e, ConfigurationError)]
    if errors and (retryable or not reached):
        raise incomplete(results, errors)
    if not reached:
        raise ConfigurationError("nobody can be asked: set APPROVAL_MAILBOX, TEAMS_WEBHOOK_URL or "
                                 "SLACK_WEBHOOK_URL (and request that channel)")
    return results


def _deadline(service: Approvals, approval: Approval) -> str:
    return deadline_text(approval.expires_at, str(service.settings["DISPLAY_TIME_ZONE"]))


def notice_text(service: Approvals, approval: Approval) -> str:
    lines = [approval.question, ""]
    for title, items in approval.target_list().sections():
        lines.append(f"{title}: {'; '.join(items)}")
    lines += ["", f"Decide by {_deadline(service, approval)}. Approvers: "
              + ", ".join(p.label for p in approval.people()) + "."]
    return "\n".join(lines)


def mail_html(service: Approvals, approval: Approval, case: Case, person: Person) -> str:
    e = html.escape
    buttons = " ".join(
        f'<a href="{e(approval.link(service.signer, c, person.key))}" style="display:inline-block;padding:10px 18px;'
        f'margin:0 8px 8px 0;border:1px solid #444;border-radius:6px;text-decoration:none;font-weight:600">{e(c)}</a>'
        for c in approval.choices)
    facts = "".join(f"<tr><td style=\"padding-right:12px\"><b>{e(k)}</b></td><td>{e(v)}</td></tr>" for k, v in (
        ("Incident", case.label), ("Title", approval.title), ("Severity", case.severity or "unknown"),
        ("Deadline", _deadline(service, approval))))
    sections = "".join(f"<p><b>{e(title)}</b></p><ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>"
                       for title, items in approval.target_list().sections())
    link = (f'<p><a href="{e(case.url)}">Open the incident in Microsoft Sentinel</a></p>'
            if case.url and case.url.startswith("https://") else "")
    return (f"<p>{e(approval.question)}</p><table>{facts}</table>{sections}{link}<p>{buttons}</p>"
            f"<p>These links are yours ({e(person.label)}). Each opens a page where you sign in with your work account "
            "and confirm; a decision counts only when you are signed in as yourself. The first decision by any "
            f"approver wins. They expire at {e(_deadline(service, approval))}.</p>")


__all__ = ["ask", "mail_html", "notice_text"]
