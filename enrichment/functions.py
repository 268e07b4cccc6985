"""HTTP and queue functions of the enrichment area (one Blueprint)."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from core.api import run_action
from core.case import Case
from core.telemetry import bind_incident, traced

log = logging.getLogger(__name__)
bp = func.Blueprint()


def _enricher():
    from core.context import get_context
    from enrichment.service import Enricher

    return Enricher(get_context())


def enrich(case: Case) -> dict:
    return _enricher().enrich(case)


@bp.route(route="enrichment/reputation", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def reputation(req: func.HttpRequest) -> func.HttpResponse:
    """VirusTotal verdict for every indicator entity (IP, file hash, URL, domain), as one incident comment."""
    return run_action(req, enrich, name="reputation")


@bp.route(route="enrichment/ip-reputation", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def ip_reputation(req: func.HttpRequest) -> func.HttpResponse:
    """The route's first name, kept as an alias for playbooks deployed before: the same action."""
    return run_action(req, enrich, name="ip_reputation")


@bp.queue_trigger(arg_name="msg", queue_name="vt-deferred", connection="STATE_STORAGE_CONNECTION")
@traced("ip_reputation_deferred")
def ip_reputation_deferred(msg: func.QueueMessage) -> None:
    """Finish look-ups deferred by VirusTotal's quota and write the comment that completes the run.

    An exception makes the host retry the message and, after five attempts, park it in
    ``vt-deferred-poison``: nothing is dropped silently.
    """
    message = json.loads(msg.get_body())
    bind_incident(message.get("incident_id"))
    summary = _enricher().resume(message)
    log.info("deferred enrichment of %s: complete=%s calls=%s", summary["case"], summary["complete"],
             summary["virustotalCalls"])
