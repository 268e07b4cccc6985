"""HTTP and timer functions of the orchestration area (one Blueprint).

- ``POST orchestration/notify``: Teams and/or Slack message about the incident.
- ``POST orchestration/approvals`` (subscribe) / ``DELETE orchestration/approvals`` (unsubscribe): the
  Logic App HTTP-webhook wait for an approver's decision.
- ``GET|POST orchestration/approvals/{id}/{decision}``: the signed link an approver clicks (anonymous:
  approvers hold no function key; the HMAC signature is the credential). GET only shows a page.
- ``POST orchestration/close-incident``: close the incident (classification, reason, comment) and its ticket.
- timer ``approval_sweep``: times out approvals past their deadline, redelivers failed callbacks.
Services are imported inside the functions, not at cold start.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from core.api import read_json, run_action, run_json
from core.case import Case
from core.errors import PackError
from core.telemetry import traced

log = logging.getLogger(__name__)
bp = func.Blueprint()

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}


def _ctx():
    from core.context import get_context

    return get_context()


# -- notify --------------------------------------------------------------------------------------
@bp.route(route="orchestration/notify", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def orchestration_notify(req: func.HttpRequest) -> func.HttpResponse:
    """Post the incident to Teams and/or Slack, once per incident event and channel."""
    from orchestration.notify import Notifier

    def notify(case: Case) -> dict:
        return Notifier(_ctx()).notify(case, read_json(req))

    return run_action(req, notify, name="orchestration_notify")


# -- approvals -----------------------------------------------------------------------------------
def _origin(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}"


@bp.route(route="orchestration/approvals", methods=["POST", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
def orchestration_approvals(req: func.HttpRequest) -> func.HttpResponse:
    """HTTP-webhook subscribe (POST: store, ask the approvers) and unsubscribe (DELETE: the run was cancelled)."""
    from orchestration.approvals import Approvals

    if req.method.upper() == "DELETE":
        return run_json(req, lambda body: Approvals(_ctx()).unsubscribe(body), name="approval_unsubscribe")
    return run_json(req, lambda body: Approvals(_ctx()).subscribe(body, _origin(req)),
                    name="approval_subscribe")


def _page(status: int, heading: str, text: str, form: str = "") -> func.HttpResponse:
    e = html.escape
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" "
            f"content=\"noindex\"><title>{e(heading)}</title><style>body{{font-family:sans-serif;max-width:40em;"
            f"margin:3em auto}}button{{font-size:1.1em;padding:.5em 1.5em}}</style></head><body>"
            f"<h1>{e(heading)}</h1><p>{e(text)}</p>{form}</body></html>")
    return func.HttpResponse(body, status_code=status, headers=dict(PAGE_HEADERS), mimetype="text/html",
                             charset="utf-8")


@bp.route(route="orchestration/approvals/{id}/{decision}", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
@traced("approval_link")
def orchestration_approval_link(req: func.HttpRequest) -> func.HttpResponse:
    """An approver's link: GET shows a confirmation page (safe for scanners and previews); its POST decides."""
    from orchestration.approvals import Approvals, LinkRefused, iso

    approval_id = req.route_params.get("id", "")
    choice = req.route_params.get("decision", "")
    query = {k: v for k, v in req.params.items()}
    try:
        approvals = Approvals(_ctx())
        if req.method.upper() == "GET":
            approval, canonical, approver = approvals.check_link(approval_id, choice, query)
            e = html.escape
            action = e(urlsplit(req.url).path + "?" + urlsplit(req.url).query)
            form = (f"<form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"confirm\" "
                    f"value=\"{e(canonical)}\"><button type=\"submit\">Confirm: {e(canonical)}</button></form>")
            return _page(200, f"Confirm: {canonical}",
                         f"{approval.question} — {approval.case_label}: {approval.title}. You are deciding as "
                         f"{approver}; the first decision wins. Open until {iso(approval.expires_at)}.", form)
        approvals.check_link(approval_id, choice, query)  # a refused link says so, whatever the form holds
        form_fields = dict(parse_qsl((req.get_body() or b"").decode("utf-8", "replace")))
        if form_fields.get("confirm", "").lower() != choice.lower():
            return _page(400, "Not confirmed", "Open the link and press the confirmation button to decide.")
        approval, canonical = approvals.decide(approval_id, choice, query)
        return _page(200, f"Recorded: {canonical}",
                     f"Your decision ({canonical}) on {approval.case_label} is recorded as {approval.decided_by}'s "
                     "and the playbook continues. You can close this page.")
    except LinkRefused as refused:
        log.info("approval link refused: %s (%s)", refused.code, refused.status)
        headings = {403: "Link refused", 404: "Not found", 409: "Already decided", 410: "Link expired"}
        return _page(refused.status, headings.get(refused.status, "Refused"), refused.message)
    except PackError as error:
        log.warning("approval link failed: %s %s", error.code, error.message)
        response = _page(error.status, "Try again later",
                         "The decision could not be processed right now; nothing was decided. Try again in a minute.")
        if error.retry_after:
            response.headers["Retry-After"] = str(error.retry_after)
        return response
    except Exception:
        log.exception("approval link failed unexpectedly")
        return _page(500, "Error", "Unexpected error; nothing was decided.")


@bp.timer_trigger(schedule="0 */1 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)
@traced("approval_sweep")
def approval_sweep(timer: func.TimerRequest) -> None:
    """Every minute: time out approvals nobody decided, redeliver callbacks and comments that failed."""
    from core.settings import get_settings

    if get_settings().values.get("APPROVAL_SIGNING_KEY") is None:
        return  # approvals are not configured: nothing can be pending
    from orchestration.approvals import Approvals

    try:
        summary = Approvals(_ctx()).sweep()
    except PackError as error:
        log.warning("approval_sweep stopped: %s: %s (retried at the next run)", error.code, error.message)
        return
    if any(summary.values()):
        log.info("approval_sweep: %s", summary)


# -- close ---------------------------------------------------------------------------------------
@bp.route(route="orchestration/close-incident", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def orchestration_close_incident(req: func.HttpRequest) -> func.HttpResponse:
    """Close the Sentinel incident (classification, reason, comment; etag-safe) and its ServiceNow ticket."""
    from orchestration.close import Closer

    def close(case: Case) -> dict:
        return Closer(_ctx()).close(case, read_json(req))

    return run_action(req, close, name="orchestration_close_incident")
