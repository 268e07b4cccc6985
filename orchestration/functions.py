"""HTTP and timer functions of the orchestration area (one Blueprint).

- ``POST orchestration/notify``: Teams and/or Slack message about the incident.
- ``POST orchestration/approvals`` (subscribe) / ``DELETE orchestration/approvals`` (unsubscribe): the
  Logic App HTTP-webhook wait for an approver's decision.
- ``GET|POST orchestration/approvals/{id}/{decision}``: the approval page (no function key: approvers hold
  none; the signed link and the approver's Entra ID sign-in are the credentials). GET only shows a page.
- ``POST orchestration/close-incident``: close the incident (classification, reason, comment) and its ticket.
- timer ``approval_sweep``: times out approvals past their deadline,
  redelivers failed callbacks (capped).
Services are imported inside the functions, not at cold start.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import azure.functions as func

from core.api import read_json, run_action, run_json
from core.case import Case
from core.errors import PackError
from core.telemetry import traced

log = logging.getLogger(__name__)
bp = func.Blueprint()

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


@bp.route(route="orchestration/approvals/{id}/{decision}", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
@traced("approval_link")
def orchestration_approval_link(req: func.HttpRequest) -> func.HttpResponse:
    """The approval page: GET shows the targets (safe for scanners and previews); its POST decides, for the
    signed-in approver only (orchestration/approval_page.py)."""
    from orchestration.approval_page import handle

    return handle(req)


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
