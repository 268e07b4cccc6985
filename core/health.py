"""``GET /api/health``: liveness and configuration state, never a secret value."""

from __future__ import annotations

import azure.functions as func

from core.api import json_response

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from core.errors import PackError
    from core.settings import get_settings
    from core.state import get_state_store

    settings = get_settings()
    state = "ok"
    try:
        get_state_store().ping()
    except PackError as error:
        state = error.message
    healthy = not settings.problems and state == "ok"
    body = {"status": "ok" if healthy else "degraded", "settings": settings.report(), "stateStore": state}
    return json_response(body, 200 if healthy else 503)
