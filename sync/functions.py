"""HTTP and timer functions of the ServiceNow sync (one Blueprint).

- ``POST sync/servicenow/outbound``: the Sentinel playbook (incident created or updated) -> ticket.
- ``POST sync/servicenow/inbound``: the ServiceNow business rule's push (function key + signature).
- timer ``servicenow_poll``: every two minutes, the changes no push delivered.
- ``GET sync/servicenow/status``: this instance's poll runs (how many, the last one's summary). An idle run
  writes nothing to Table Storage, so the runs that only looked are counted here, in memory.
The sync itself (and pysnow) is imported inside the functions, not at cold start.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import azure.functions as func

from core.api import MAX_BODY_BYTES, answer, json_response, read_json, run_action
from core.case import Case
from core.errors import PackError, PayloadTooLarge
from core.health import register_probe
from core.telemetry import traced

if TYPE_CHECKING:
    from sync.service import ServiceNowSync

log = logging.getLogger(__name__)
bp = func.Blueprint()
_runs: dict[str, Any] = {"runs": 0, "finishedAt": 0.0, "last": {}}
_runs_lock = threading.Lock()


def _readiness(ctx: Any) -> dict[str, Any]:
    """``GET /api/health/details`` asks the sync whether ServiceNow really lets it work (sync/probe.py)."""
    from sync.probe import readiness

    return readiness(ctx)


register_probe("sync", _readiness)


def _sync() -> ServiceNowSync:
    from core.context import get_context
    from sync.service import ServiceNowSync

    return ServiceNowSync(get_context())


def outbound(case: Case) -> dict:
    return _sync().outbound(case)


@bp.route(route="sync/servicenow/outbound", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def servicenow_outbound(req: func.HttpRequest) -> func.HttpResponse:
    """Create the incident's ServiceNow ticket once, then sync both ways (same call for create and update)."""
    return run_action(req, outbound, name="servicenow_outbound")


@bp.route(route="sync/servicenow/inbound", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def servicenow_inbound(req: func.HttpRequest) -> func.HttpResponse:
    """A ticket changed in ServiceNow: check the body's signature, then sync that ticket's incident."""
    from core.settings import get_settings
    from sync.webhook import SIGNATURE_HEADER, verify

    def push() -> dict:
        body = req.get_body() or b""
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge("request body too large for a ServiceNow push")
        settings = get_settings()
        settings.require("SERVICENOW_WEBHOOK_SECRET")
        # The signature is checked on the raw bytes before anything in the body is trusted.
        verify(body, req.headers.get(SIGNATURE_HEADER), str(settings["SERVICENOW_WEBHOOK_SECRET"]))
        result = _sync().inbound(read_json(req))
        log.info("servicenow_inbound: ticket=%s changed=%s", (result.get("ticket") or {}).get("number"),
                 result.get("changed"))
        return result

    return answer("servicenow_inbound", push)


@bp.timer_trigger(schedule="0 */2 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)
@traced("servicenow_poll")
def servicenow_poll(timer: func.TimerRequest) -> None:
    """Pull tickets changed since the stored watermark; a failed run leaves the watermark for the next one.

    A ServiceNow or Sentinel failure is logged, not raised: the next run retries from the saved
    watermark and nothing is lost. Every run, failed or not, is counted with its summary in the
    state store (``snowlinks`` poll/lastrun).
    """
    from core.settings import get_settings

    if get_settings().values.get("SERVICENOW_INSTANCE_URL") is None:
        log.info("servicenow_poll: SERVICENOW_INSTANCE_URL is not set; nothing to poll")
        return
    summary: dict = {}
    try:
        summary = _sync().poll()
        if summary.get("stopped"):
            log.warning("servicenow_poll stopped early: %s (retried at the next run)", summary["stopped"])
        log.info("servicenow_poll: %s", summary)
    except PackError as error:
        summary = {"stopped": f"{error.code}: {error.message}"}
        log.warning("servicenow_poll stopped: %s: %s (retried at the next run)", error.code, error.message)
    finally:
        _record_poll(summary)


def _record_poll(summary: dict) -> None:
    """Keep the summary of a run that did something in the state store (unless the poller wrote it with its
    cursor, in the same request), then count the run in this process."""
    recorded = summary.pop("recorded", False)
    if not recorded and (summary.get("synced") or summary.get("failed") or summary.get("stopped")):
        from core.context import get_context
        from sync.links import LinkStore

        try:
            LinkStore(get_context().state).record_poll(summary)
        except PackError as error:
            log.warning("servicenow_poll: could not record the run: %s", error.message)
    with _runs_lock:  # an idle run writes nothing: it is counted here only
        _runs.update(runs=_runs["runs"] + 1, finishedAt=time.time(), last=summary)


@bp.route(route="sync/servicenow/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def servicenow_status(req: func.HttpRequest) -> func.HttpResponse:
    """The poll runs of this instance: how many finished, when the last one did and what it did."""
    with _runs_lock:
        body = {"poll": dict(_runs)}
    return json_response(body, 200)
