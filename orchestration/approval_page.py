"""The approval page (``GET|POST orchestration/approvals/{id}/{choice|review}``): who sees what, in which order.

1. The link must be genuine (403 otherwise; the signature is checked before anything else is read).
2. With sign-in required, a browser that is not signed in is sent to ``/.auth/login/aad`` and comes back
   (GET), or told to sign in (POST: 401); a garbled principal header is 401.
3. The signed-in person must be an approver now, and the one a personal link was mailed to (403, with a page
   saying who may decide).
4. A closed approval is 409, an expired one 410: shown, never changed (the sweep times approvals out).
5. GET shows the targets and the buttons; only the POST from that page decides, and only with the page's
   anti-CSRF token (bound to the person and the sign-in session) and our own Origin.
"""

from __future__ import annotations

import logging

import azure.functions as func

from core.pages import (
    CROSS_SITE,
    Button,
    Form,
    Page,
    deadline_html,
    form_token,
    here_of,
    origin_of,
    posted_form,
    serve_page,
    sign_in_gate,
)
from core.principal import Principal
from core.webhook import public_base_url

log = logging.getLogger(__name__)


def _ctx():
    from core.context import get_context

    return get_context()


def handle(req: func.HttpRequest) -> func.HttpResponse:
    return serve_page(lambda: _handle(req), "approval page")


def _handle(req: func.HttpRequest) -> func.HttpResponse:
    from orchestration.approvals import Approvals

    service = Approvals(_ctx())
    check = service.check_link(req.route_params.get("id", ""), req.route_params.get("decision", ""),
                               dict(req.params.items()))
    principal: Principal | None = None
    if service.require_sign_in:
        service.sign_in_ready()
        gate = sign_in_gate(req)
        if not isinstance(gate, Principal):
            return gate
        principal = gate
    service.authorize(check, principal)
    service.check_open(check.approval)
    person = principal.object_id if principal else (check.person.key if check.person else "")
    if req.method.upper() == "GET":
        token = form_token(req, service.signer, check.approval.id, person)
        return _decision_page(service, check, principal, here_of(req), token).response()
    form = posted_form(req, service.signer, check.approval.id, person,
                       public_base_url(service.settings, origin_of(req)))
    if form is None:
        log.warning("approval %s: decision POST without our page's token or origin refused", check.approval.id)
        return CROSS_SITE.response()
    choice = check.approval.choice(form.get("confirm", ""))
    if choice is None or (check.choice is not None and choice != check.choice):
        return Page(400, "Not confirmed", "Open the link and press the confirmation button to decide.",
                    tone="warn").response()
    approval = service.decide(check, choice, principal)
    who = principal.label if principal else approval.decided_by
    return Page(200, f"Recorded: {choice}", f"Your decision ({choice}) on {approval.case_label} is recorded as "
                                            f"{who}'s and the playbook continues. You can close this page.",
                tone="ok").response()


def _decision_page(service, check, principal: Principal | None, here: str, token: str) -> Page:
    approval = check.approval
    zone = str(service.settings["DISPLAY_TIME_ZONE"])
    choices = [check.choice] if check.choice else approval.choices
    buttons = [Button(f"Confirm: {c}" if check.choice else c, c, "danger" if c == approval.choices[0] else "primary")
               for c in choices]
    signed = principal.label if principal else f"{check.person.label} (sign-in is off)"
    heading = f"Confirm: {check.choice}" if check.choice else "Decide this approval"
    return Page(
        200, heading, f"{approval.question} — {approval.case_label}: {approval.title}",
        facts=[("Incident", approval.case_label), ("Title", approval.title), ("You are", signed)],
        facts_html=[("Deadline", deadline_html(approval.expires_at, zone))],
        sections=approval.target_list().sections(),
        form=Form(here, buttons, {"csrf": token}),
        note="The first decision by any approver wins and is recorded in your name. The response actions still "
             "apply their guardrails (protected accounts and machines, the blast-radius cap, dry run).")


__all__ = ["handle"]
