"""A local Azure Functions host for the real ``FunctionApp`` (Core Tools cannot be installed here).

It reads ``app.get_functions()`` and serves them the way the Functions host does:
- HTTP triggers under ``/api/<route>``: route templates (``{id}``, ``{id:int}``, ``{id?}``,
  ``{*rest}``), methods, auth levels (function key or master key via ``?code=`` or the
  ``x-functions-key`` header; 401 with an empty body otherwise), async functions awaited on
  one event loop, an escaping exception answered 500 with an empty body;
- timer triggers fired through the admin API ``POST /admin/functions/<name>`` (master key, 202);
- queue triggers: a poller per queue reading base64 messages from the storage account named by
  the binding's ``connection`` setting, deleting on success and moving a message that failed
  five times to ``<queue>-poison``;
- ``GET /admin/host/status`` for readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import importlib
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage  # the worker's concrete message type (has dequeue_count)
from azure.functions.timer import TimerRequest

from localdev.process import stop_process

log = logging.getLogger(__name__)

MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount default
_CONSTRAINTS = {"int": r"-?\d+", "guid": r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}",
                "alpha": r"[A-Za-z]+", "bool": r"(?:true|false)"}


def route_regex(template: str) -> re.Pattern:
    """Compile an ASP.NET-style route template into a regex with named groups."""
    pattern = ""
    for part in re.split(r"(\{[^}]+\})", template.strip("/")):
        if not (part.startswith("{") and part.endswith("}")):
            pattern += re.escape(part)
            continue
        name = part[1:-1]
        if name.startswith("*"):
            pattern += f"(?P<{name[1:]}>.*)"
            continue
        optional = name.endswith("?")
        name = name.rstrip("?")
        name, _, constraint = name.partition(":")
        body = _CONSTRAINTS.get(constraint, r"[^/]+")
        if optional and pattern.endswith("/"):
            pattern = pattern[:-1] + f"(?:/(?P<{name}>{body}))?"
        else:
            pattern += f"(?P<{name}>{body})" + ("?" if optional else "")
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


@dataclass
class HttpFunction:
    name: str
    arg: str
    methods: tuple[str, ...]
    auth: str
    pattern: re.Pattern
    target: Any


def _binding_attr(binding: Any, *names: str) -> Any:
    for name in names:
        if getattr(binding, name, None) is not None:
            return getattr(binding, name)
    return None


class FunctionHost:
    """Serves one FunctionApp on a loopback port."""

    def __init__(self, app: func.FunctionApp, *, function_key: str, master_key: str, route_prefix: str = "api",
                 queue_poll_seconds: float = 0.25) -> None:
        self.function_key = function_key
        self.master_key = master_key
        self.prefix = route_prefix.strip("/")
        self.queue_poll_seconds = queue_poll_seconds
        self.http: list[HttpFunction] = []
        self.timers: dict[str, Any] = {}
        self.queues: list[tuple[str, str, str, Any]] = []  # (function, queue, connection setting, target)
        for function in app.get_functions():  # may be called once per app: the library validates names
            self._register(function)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="host-loop", daemon=True)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None

    def _register(self, function: Any) -> None:
        trigger = function.get_trigger()
        name = function.get_function_name()
        target = function.get_user_function()
        kind = type(trigger).__name__
        if kind == "HttpTrigger":
            methods = tuple(str(getattr(m, "value", m)).upper() for m in (trigger.methods or ())) or (
                "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
            auth = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
            route = trigger.route or name
            self.http.append(HttpFunction(name, trigger.name, methods, auth, route_regex(route), target))
        elif kind == "TimerTrigger":
            self.timers[name.lower()] = (trigger.name, target)
        elif kind == "QueueTrigger":
            self.queues.append((name, _binding_attr(trigger, "queue_name", "queueName"), trigger.connection,
                                (trigger.name, target)))
        else:
            log.warning("function %s has a %s trigger, which the local host does not fire", name, kind)

    # -- lifecycle ----------------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FunctionHost:
        self._loop_thread.start()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, fmt, *args) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

            def _serve(self) -> None:
                try:
                    owner._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._start_thread(self._server.serve_forever, "host-http")
        for name, queue, connection, target in self.queues:
            self._start_thread(lambda n=name, q=queue, c=connection, t=target: self._poll_queue(n, q, c, t),
                               f"queue-{queue}")
        return self

    def _start_thread(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def shutdown(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- invocation ---------------------------------------------------------------------------
    def invoke(self, target: Any, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(target):
            return asyncio.run_coroutine_threadsafe(target(**kwargs), self._loop).result()
        return target(**kwargs)

    def _key_ok(self, auth: str, key: str | None) -> bool:
        if auth == "anonymous":
            return True
        if auth == "admin":
            return key == self.master_key
        return key in (self.function_key, self.master_key)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        key = h.headers.get("x-functions-key") or params.get("code")
        path = parts.path.strip("/")

        if path.lower().startswith("admin/"):
            return self._admin(h, path[6:], key)
        if not path.lower().startswith(self.prefix + "/") and path.lower() != self.prefix:
            return self._write(h, 404)
        route = path[len(self.prefix):].strip("/")
        for function in self.http:
            match = function.pattern.match(route)
            if not match or h.command not in function.methods:
                continue  # the real host answers 404 when no function takes the method
            if not self._key_ok(function.auth, key):
                return self._write(h, 401)
            params.pop("code", None)
            request = func.HttpRequest(
                h.command, f"http://{h.headers.get('Host', 'localhost')}{h.path}",
                headers=dict(h.headers.items()), params=params,
                route_params={k: v for k, v in match.groupdict().items() if v is not None}, body=body)
            try:
                response = self.invoke(function.target, **{function.arg: request})
            except Exception:
                traceback.print_exc()
                return self._write(h, 500)
            return self._write_response(h, response)
        self._write(h, 404)

    def _admin(self, h: BaseHTTPRequestHandler, path: str, key: str | None) -> None:
        if key != self.master_key:
            return self._write(h, 401)
        if path.lower() == "host/status" and h.command == "GET":
            return self._write(h, 200, json.dumps({"state": "Running"}).encode(), "application/json")
        match = re.fullmatch(r"functions/([^/]+)", path, re.IGNORECASE)
        if match and h.command == "POST":
            timer = self.timers.get(match[1].lower())
            if timer is None:
                return self._write(h, 404)
            arg, target = timer
            try:
                self.invoke(target, **{arg: TimerRequest(past_due=False)})
            except Exception:
                traceback.print_exc()  # the real host logs the failure; the admin call is still accepted
            return self._write(h, 202)
        self._write(h, 404)

    def _write_response(self, h: BaseHTTPRequestHandler, response: Any) -> None:
        if not isinstance(response, func.HttpResponse):
            response = func.HttpResponse(str(response) if response is not None else "", status_code=200)
        headers = dict(response.headers)
        content_type = headers.pop("Content-Type", None) or headers.pop("content-type", None)
        if not content_type and response.mimetype:
            content_type = f"{response.mimetype}; charset={response.charset or 'utf-8'}"
        self._write(h, response.status_code, response.get_body() or b"", content_type, headers)

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", content_type: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        if content_type:
            h.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)

    # -- queues -------------------------------------------------------------------------------
    def _poll_queue(self, function: str, queue: str, connection: str, target: tuple[str, Any]) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError
        from azure.storage.queue import QueueClient

        arg, fn = target
        conn = os.environ.get(connection)
        if not conn:
            log.warning("queue trigger %s: setting %s is not set; not polling", function, connection)
            return
        client = QueueClient.from_connection_string(conn, queue)
        poison = QueueClient.from_connection_string(conn, f"{queue}-poison")
        ready = False
        while not self._stopping.is_set():
            try:
                if not ready:
                    for q in (client, poison):
                        try:
                            q.create_queue()
                        except ResourceExistsError:
                            pass
                    ready = True
                got = False
                for message in client.receive_messages(messages_per_page=16, visibility_timeout=30,
                                                       max_messages=16):
                    got = True
                    self._process_message(function, client, poison, message, arg, fn)
                if not got:
                    self._stopping.wait(self.queue_poll_seconds)
            except AzureError as exc:  # Azurite down or restarting: keep trying
                log.warning("queue %s poll failed: %s", queue, type(exc).__name__)
                ready = False
                self._stopping.wait(1.0)
            except Exception:  # a poller must never die: the real host keeps listening too
                log.exception("queue %s poller error", queue)
                self._stopping.wait(1.0)

    def _process_message(self, function: str, client: Any, poison: Any, message: Any, arg: str, fn: Any) -> None:
        content = message.content
        try:
            body = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError, TypeError):
            body = content.encode() if isinstance(content, str) else content
        queue_message = QueueMessage(
            id=message.id, body=body, dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on, expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on)
        try:
            self.invoke(fn, **{arg: queue_message})
        except Exception:
            traceback.print_exc()
            if message.dequeue_count >= MAX_DEQUEUE_COUNT:
                poison.send_message(content)
                client.delete_message(message)
                log.error("function %s: message %s moved to %s after %d attempts", function, message.id,
                          poison.queue_name, message.dequeue_count)
            else:
                client.update_message(message, visibility_timeout=0)
            return
        client.delete_message(message)


# -- running the host as a process ------------------------------------------------------------
def load_app(spec: str) -> func.FunctionApp:
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module_name), attr or "app")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a FunctionApp locally, as the Functions host does.")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--app", default="function_app:app")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOCAL_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = FunctionHost(load_app(args.app), function_key=os.environ.get("LOCAL_FUNCTION_KEY", "local-function-key"),
                        master_key=os.environ.get("LOCAL_MASTER_KEY", "local-master-key"),
                        queue_poll_seconds=float(os.environ.get("LOCAL_QUEUE_POLL_SECONDS", "0.25")))
    host.serve(port=args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"Host listening on {host.url}", flush=True)
    stop.wait()
    host.shutdown()
    return 0


class HostProcess:
    """The host in a child process with its own app settings, as a deployment would run it."""

    def __init__(self, env: dict[str, str] | None = None, app: str = "function_app:app",
                 startup_timeout: float = 30.0) -> None:
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("LOCAL_FUNCTION_KEY", "fk-" + uuid.uuid4().hex[:12])
        self.env.setdefault("LOCAL_MASTER_KEY", "mk-" + uuid.uuid4().hex[:12])
        self.function_key = self.env["LOCAL_FUNCTION_KEY"]
        self.master_key = self.env["LOCAL_MASTER_KEY"]
        self.app = app
        self.startup_timeout = startup_timeout
        self.url = ""
        self._process: subprocess.Popen | None = None

    def start(self) -> HostProcess:
        root = Path(__file__).resolve().parents[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "localdev.host", "--port", "0", "--app", self.app], cwd=root, env=self.env,
            stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + self.startup_timeout
        assert self._process.stdout is not None
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if line.startswith("Host listening on "):
                self.url = line.split("Host listening on ", 1)[1].strip()
                return self
            if not line and self._process.poll() is not None:
                break
        self.stop()
        raise RuntimeError("the local function host did not start (see its output above)")

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None

    def __enter__(self) -> HostProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
