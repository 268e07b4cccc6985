"""A tiny FunctionApp that exercises every trigger kind the local host serves."""

import asyncio
import json
import os
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _record(kind: str, value: object) -> None:
    """Append to the file named by HOST_TEST_RECORD, so the test can see across processes."""
    path = os.environ.get("HOST_TEST_RECORD")
    if path:
        with Path(path).open("a") as out:
            out.write(json.dumps({"kind": kind, "value": value}) + "\n")


@app.route(route="items/{id:int}/{*rest}", methods=["GET", "PUT"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    body = {"id": req.route_params["id"], "rest": req.route_params.get("rest"), "method": req.method,
            "q": req.params.get("q"), "code_hidden": "code" not in req.params}
    return func.HttpResponse(json.dumps(body), mimetype="application/json", headers={"X-Item": "yes"})


@app.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0.5)
    return func.HttpResponse("slept", status_code=202)


@app.route(route="open", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), status_code=200)


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret internals")


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    _record("timer", timer.past_due)


@app.queue_trigger(arg_name="msg", queue_name="host-test", connection="HOST_TEST_STORAGE")
def consume(msg: func.QueueMessage) -> None:
    text = msg.get_body().decode()
    _record("queue", {"body": text, "dequeue_count": msg.dequeue_count})
    if text.startswith("fail"):
        raise ValueError("this message always fails")
