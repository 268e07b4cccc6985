"""Where HTTP meets the actions: parse the body, run the action, shape the answer.

Handlers in the blueprints stay one line: ``return run_action(req, enrich)``. Every error
becomes ``{"error": {"code", "message"}}`` here and nowhere else; an unexpected exception is
logged with its traceback and answered as a generic 500 so no internal detail (or secret)
leaks into the Logic App's run history.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func

from core.case import Case, normalise
from core.errors import BadRequest, PackError, PayloadTooLarge

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # Logic Apps message limit is larger, but no trigger body is this big


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status,
                             headers=headers or {}, mimetype="application/json")


def error_response(error: PackError) -> func.HttpResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    return json_response(error.body(), error.status, headers)


def read_json(req: func.HttpRequest) -> Any:
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    if not body.strip():
        raise BadRequest("the request body is empty: send the Sentinel trigger body (@triggerBody())")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({type(exc).__name__} at position "
                         f"{getattr(exc, 'pos', '?')})", code="MalformedJson") from None


def run_action(req: func.HttpRequest, action: Callable[[Case], Any], *, name: str | None = None) -> func.HttpResponse:
    """Normalise the trigger body into a Case and run ``action`` on it.

    The action returns a JSON-able summary, or ``(status, summary)`` to choose the status.
    """
    from core.settings import get_settings

    started = time.perf_counter()
    action_name = name or getattr(action, "__name__", "action")
    case: Case | None = None
    try:
        case = normalise(read_json(req), max_entities=int(get_settings()["MAX_ENTITIES"]))
        result = action(case)
        status, body = result if isinstance(result, tuple) else (200, result)
        log.info("action=%s incident=%s status=%s ms=%.1f", action_name, case.incident_id or case.alert_id,
                 status, (time.perf_counter() - started) * 1000)
        return json_response(body, status)
    except PackError as error:
        log.warning("action=%s incident=%s status=%s code=%s message=%s", action_name,
                    case.incident_id if case else None, error.status, error.code, error.message)
        return error_response(error)
    except Exception:
        log.exception("action=%s failed unexpectedly", action_name)
        return json_response({"error": {"code": "InternalError",
                                         "message": "unexpected error; see the function's logs"}}, 500)
