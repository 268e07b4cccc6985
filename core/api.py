"""Where HTTP meets the actions: parse the body, run the action, shape the answer.

Handlers in the blueprints stay one line: ``return run_action(req, enrich)``. Every error
becomes ``{"error": {"code", "message"}}`` here and nowhere else; an unexpected exception is
logged with its traceback and answered as a generic 500 so no internal detail (or secret)
leaks into the Logic App's run history.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func

from core.case import Case, normalise
from core.errors import BadRequest, Conflict, PackError, PayloadTooLarge
from core.telemetry import action_scope, bind_incident, outcome
from core.workspace import Pinning

log = logging.getLogger(__name__)

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # cheap pre-check before the exact one
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
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({type(exc).__name__} at position "
                         f"{getattr(exc, 'pos', '?')})", code="MalformedJson") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to be a trigger body", code="MalformedJson") from None
    # JSON lets "\ud800" stand alone; such a string cannot be encoded, hashed or sent on by any action.
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
        raise BadRequest("the request body has a \\ud800-\\udfff escape outside a surrogate pair: not Unicode text",
                         code="MalformedJson")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def run_action(req: func.HttpRequest, action: Callable[[Case], Any], *, name: str | None = None) -> func.HttpResponse:
    """Normalise the trigger body into a Case and run ``action`` on it.

    The action returns a JSON-able summary, or ``(status, summary)`` to choose the status.
    """
    from core.settings import get_settings

    def on_case() -> Any:
        settings = get_settings()
        case = normalise(read_json(req), max_entities=int(settings["MAX_ENTITIES"]))
        bind_incident(case.incident_id or case.alert_id, case.number)
        Pinning.from_settings(settings).check_case(case)  # SENTINEL_WORKSPACES: before anything is sent anywhere
        return action(case)

    return answer(name or getattr(action, "__name__", "action"), on_case)


def run_json(req: func.HttpRequest, action: Callable[[Any], Any], *, name: str) -> func.HttpResponse:
    """Like ``run_action`` for bodies that are not a trigger body: JSON in, JSON or error JSON out."""
    return answer(name, lambda: action(read_json(req)))


class ActionDisabled(Conflict):
    code = "ActionDisabled"


def _action_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def refuse_if_disabled(name: str) -> None:
    """The kill switch: an action listed in ``DISABLED_ACTIONS`` (its function name, ``-`` or ``_``) answers 409
    before it reads its body or touches anything, so an operator can stop one action at 3 a.m. by a setting."""
    from core.settings import get_settings

    disabled = {_action_name(item) for item in get_settings()["DISABLED_ACTIONS"] or ()}  # type: ignore[union-attr]
    if _action_name(name) in disabled:
        raise ActionDisabled(f"action {name} is disabled by the setting DISABLED_ACTIONS: nothing was done")


def answer(name: str, work: Callable[[], Any]) -> func.HttpResponse:
    """Run one action and shape its answer: the one place errors become JSON.

    ``work`` returns a JSON-able summary or ``(status, summary)``. Its log lines (any module's) carry the
    action and, once bound, the incident; it runs in a trace span (core/telemetry.py).
    """
    started = time.perf_counter()
    with action_scope(name) as scope:
        try:
            refuse_if_disabled(name)
            result = work()
            status, body = result if isinstance(result, tuple) else (200, result)
            response = json_response(body, status)
            # The success line names the incident (its number when known) and what the action did.
            log.info("action=%s incident=%s number=%s status=%s ms=%.1f %s", name, scope.fields.get("incident_id"),
                     scope.number, status, (time.perf_counter() - started) * 1000, outcome(body))
        except PackError as error:
            log.warning("action=%s incident=%s status=%s code=%s message=%s", name, scope.fields.get("incident_id"),
                        error.status, error.code, error.message)
            response = error_response(error)
        except Exception:
            log.exception("action=%s failed unexpectedly", name)
            response = json_response({"error": {"code": "InternalError",
                                                "message": "unexpected error; see the function's logs"}}, 500)
        scope.status(response.status_code)
        return response
