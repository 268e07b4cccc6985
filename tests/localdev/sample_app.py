"""A tiny FunctionApp exercising every trigger kind the local host serves (tests only).

Timer and queue functions append what they received to the JSON-lines file named by the
``SAMPLE_RECORD`` setting, so a test sees their effect across the process boundary.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
_lock = threading.Lock()


def record(kind: str, value: object) -> None:
    path = os.environ.get("SAMPLE_RECORD")
    if path:
        with _lock, Path(path).open("a") as out:
            out.write(json.dumps({"kind": kind, "value": value}) + "\n")


def _json(value: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value), status_code=status, mimetype="application/json")


@app.route(route="items/{id:int}/{*rest}", methods=["GET", "PUT"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"route": dict(req.route_params), "method": req.method, "q": req.params.get("q")}),
        mimetype="application/json", headers={"X-Item": "yes"})


@app.route(route="echo/{kind:alpha}/{id:guid?}", methods=["GET"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "echo", "route": dict(req.route_params)})


@app.route(route="echo/special", methods=["GET"])
def echo_special(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "echo_special"})


@app.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0.5)
    return func.HttpResponse("slept", status_code=202)


@app.route(route="open", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def open_door(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")


@app.route(route="whoami", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    """The App Service Authentication headers the app received (the Easy Auth emulation tests)."""
    return _json({k.lower(): v for k, v in req.headers.items() if k.lower().startswith(("x-ms-client", "x-ms-token"))})


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("internal detail that must not leak")


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    record("timer", {"past_due": timer.past_due})


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="SAMPLE_STORAGE")
def consume(msg: func.QueueMessage) -> None:
    text = msg.get_body().decode()
    record("queue", {"body": text, "dequeue_count": msg.dequeue_count, "id": msg.id})
    if text.startswith("fail"):
        raise ValueError("this message always fails")
