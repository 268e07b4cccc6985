"""A local Azure Functions host for the real ``FunctionApp`` (Core Tools cannot be installed here).

It reads ``app.get_functions()`` and serves them the way the Functions host does, so tests and the
demo exercise the same wiring Azure runs:

- HTTP triggers under ``/<routePrefix>/<route>``: route templates (``{id}``, ``{id:int}``, ``{id?}``,
  ``{*rest}``) with ASP.NET precedence, methods (a path whose function does not take the method is
  a 404, as in the real host), auth levels (a host key -- the default function key or the master key -- or
  that function's own key, as ``?code=`` or the ``x-functions-key`` header, else 401 with an empty body;
  a function's own key opens no other function, as in the real host: learn.microsoft.com/azure/
  azure-functions/function-keys-how-to, "Understand keys"), async functions awaited on one event
  loop, an escaping exception answered 500 with an empty body and its traceback logged;
- the admin API: ``POST /admin/functions/<name>`` runs a timer (or queue) function and answers 202,
  ``GET /admin/host/status`` answers ``{"state": "Running"}``; both need the master key;
- queue triggers: a poller per function, base64 messages by default, delete on success, retry
  on failure, ``<queue>-poison`` after ``maxDequeueCount`` (5) attempts, as the Storage extension does;
- App Service Authentication (Easy Auth) in front of the app when ``LOCAL_EASYAUTH_AUTHORITY`` is set
  (localdev/easyauth.py): ``/.auth/*``, the principal headers injected for a signed-in session and client
  copies stripped, ``WEBSITE_AUTH_ENABLED=True`` for the app;
- with ``LOCAL_SERVER_TIMING=1``, a ``Server-Timing`` header splitting each HTTP invocation's time into
  our own and downstream HTTP (localdev/timing.py; the bench's overhead scenario reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import functools
import hmac
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
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from weakref import WeakKeyDictionary

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage  # the worker's message type: it carries dequeue_count
from azure.functions.timer import TimerRequest  # azure.functions.TimerRequest is the abstract base
from azure.storage.queue import QueueClient

from localdev import timing as server_timing
from localdev.easyauth import EasyAuth
from localdev.emulators.base import LoopbackServer
from localdev.process import stop_process

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
_CONSTRAINTS = {"int": r"-?\d+", "long": r"-?\d+", "alpha": r"[A-Za-z]+", "bool": r"(?:true|false)",
                "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}"}
_ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PROCESSING_VISIBILITY_SECONDS = 30  # a message a crashed host was processing comes back after this
_KEY_IN_QUERY = re.compile(r"([?&]code=)[^&\s]*", re.IGNORECASE)


def route_regex(template: str) -> re.Pattern[str]:
    """Compile an ASP.NET route template (what the host understands) into a regex with named groups."""
    pattern = ""
    for part in re.split(r"(\{[^}]+\})", template.strip("/")):
        if not (part.startswith("{") and part.endswith("}")):
            pattern += re.escape(part)
            continue
        name = part[1:-1]
        if name.startswith("*"):
            if pattern.endswith("/"):  # a catch-all may be empty, slash included
                pattern = pattern[:-1] + f"(?:/(?P<{name[1:].rstrip('?')}>.*))?"
            else:
                pattern += f"(?P<{name[1:].rstrip('?')}>.*)"
            continue
        optional = name.endswith("?")
        name, _, constraint = name.rstrip("?").partition(":")
        body = _CONSTRAINTS.get(constraint.lower(), r"[^/]+")
        if optional and pattern.endswith("/"):
            pattern = pattern[:-1] + f"(?:/(?P<{name}>{body}))?"
        else:
            pattern += f"(?P<{name}>{body})" + ("?" if optional else "")
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


def _precedence(template: str) -> tuple[int, ...]:
    """ASP.NET order: per segment, literal before constrained parameter before parameter before catch-all."""
    ranks = []
    for segment in template.strip("/").split("/"):
        if "{" not in segment:
            ranks.append(0)
        elif segment.startswith("{*"):
            ranks.append(4)
        else:
            ranks.append(1 if ":" in segment else 2 + segment.endswith("?}"))
    return tuple(ranks)


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json; the defaults are the Storage extension's."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, settings: dict[str, Any]) -> QueueOptions:
        queues = settings.get("extensions", {}).get("queues", {})
        return cls(batch_size=int(queues.get("batchSize", 16)), max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
                   message_encoding=str(queues.get("messageEncoding", "base64")).lower())


@dataclass(frozen=True)
class Trigger:
    """One function as the host sees it: its trigger binding and the Python callable."""

    name: str
    kind: str  # httpTrigger, timerTrigger, queueTrigger
    arg: str
    target: Callable[..., Any]
    binding: Any


_INDEXED: WeakKeyDictionary[func.FunctionApp, list[Any]] = WeakKeyDictionary()


def _functions(app: func.FunctionApp) -> list[Any]:
    # get_functions() may run once per app (it remembers names and rejects them the second time),
    # as the worker indexes once; several local hosts in one test process share the result.
    if app not in _INDEXED:
        _INDEXED[app] = app.get_functions()
    return _INDEXED[app]


def _value(item: Any) -> str:
    return str(getattr(item, "value", item))


class FunctionHost:
    """Serves one FunctionApp on a loopback port: HTTP, admin API and queue pollers."""

    def __init__(self, app: func.FunctionApp, *, function_key: str, master_key: str, route_prefix: str = "api",
                 queue_options: QueueOptions | None = None, poll_seconds: float | None = None,
                 function_keys: dict[str, str] | None = None, easy_auth: EasyAuth | None = None) -> None:
        self.function_key = function_key
        self.master_key = master_key
        self.function_keys = {name.lower(): key for name, key in (function_keys or {}).items()}
        self.easy_auth = easy_auth
        self.prefix = route_prefix.strip("/")
        self.queue_options = queue_options or QueueOptions()
        self.poll_seconds = poll_seconds if poll_seconds is not None else float(
            os.environ.get("LOCAL_QUEUE_POLL_SECONDS", "0.25"))
        self.triggers: dict[str, Trigger] = {}
        for function in _functions(app):
            binding = function.get_trigger()
            trigger = Trigger(function.get_function_name(), binding.type, binding.name, function.get_user_function(),
                              binding)
            self.triggers[trigger.name.lower()] = trigger
            if trigger.kind not in ("httpTrigger", "timerTrigger", "queueTrigger"):
                log.warning("function %s has a %s, which the local host does not fire", trigger.name, trigger.kind)
        self.routes = sorted((t for t in self.triggers.values() if t.kind == "httpTrigger"),
                             key=lambda t: _precedence(t.binding.route or t.name))
        self._patterns = {t.name: route_regex(t.binding.route or t.name) for t in self.routes}
        self._loop = asyncio.new_event_loop()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self.server_timing = os.environ.get(server_timing.ENV, "").lower() in ("1", "true")
        if self.server_timing:
            server_timing.install()

    # -- lifecycle ----------------------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FunctionHost:
        """Listen and start the event loop and queue pollers in background threads."""
        self._start_thread(self._loop.run_forever, "host-loop")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as the emulators: else each answer waits ~40 ms on a delayed ACK

            def log_message(self, format: str, *args: Any) -> None:  # the access log, never with a key
                log.debug("%s " + format, self.address_string(), *(_KEY_IN_QUERY.sub(r"\1[redacted]", a)
                                                                   if isinstance(a, str) else a for a in args))

            def _serve(self) -> None:
                try:
                    owner._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        self._server = LoopbackServer((host, port), Handler)  # a backlog for bursts of triggers
        self._start_thread(lambda: self._server.serve_forever(poll_interval=0.1), "host-http")
        for trigger in self.triggers.values():
            if trigger.kind == "queueTrigger":
                self._start_thread(lambda t=trigger: self._poll(t), f"queue-{trigger.name}")
        return self

    def shutdown(self) -> None:
        """Stop listening and polling; an invocation under way finishes in its own thread."""
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        for thread in self._threads:
            thread.join(timeout=10)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the host is not serving: call serve() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _start_thread(self, target: Callable[[], Any], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- invocation ---------------------------------------------------------------------------
    def invoke(self, trigger: Trigger, value: Any) -> Any:
        """Call the function; coroutines run on the shared loop so async functions overlap."""
        if inspect.iscoroutinefunction(trigger.target):
            return asyncio.run_coroutine_threadsafe(trigger.target(**{trigger.arg: value}), self._loop).result()
        return trigger.target(**{trigger.arg: value})

    def _invoke_logged(self, trigger: Trigger, value: Any) -> tuple[bool, Any]:
        started, invocation = time.monotonic(), uuid.uuid4()
        try:
            result = self.invoke(trigger, value)
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", trigger.name, invocation,
                          (time.monotonic() - started) * 1000)
            return False, None
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s)", trigger.name, invocation)
        return True, result

    # -- HTTP ---------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = _read_body(h)
        key = h.headers.get("x-functions-key") or params.get("code")
        path = parts.path.strip("/")
        headers = dict(h.headers.items())
        if path.lower() == ".auth" or path.lower().startswith(".auth/"):
            if self.easy_auth is None:
                return _write(h, 404)
            answer = self.easy_auth.serve(h.command, parts.path, parts.query, body, headers,
                                          origin=f"http://{h.headers.get('Host', 'localhost')}")
            return _write(h, answer.status, answer.body, answer.headers)
        if self.easy_auth is not None:
            headers = self.easy_auth.inbound(headers)
        if path.lower().startswith("admin/"):
            return self._admin(h, path[len("admin/"):], key, body)
        if self.prefix:
            if path.lower() != self.prefix.lower() and not path.lower().startswith(self.prefix.lower() + "/"):
                return _write(h, 404)
            path = path[len(self.prefix):].strip("/")
        for trigger in self.routes:
            match = self._patterns[trigger.name].match(path)
            methods = tuple(_value(m).upper() for m in trigger.binding.methods or ()) or _ALL_METHODS
            if not match or h.command not in methods:
                continue  # the real host answers 404, not 405, when no function takes the method
            if not self._authorized(_value(trigger.binding.auth_level or "function").lower(), key, trigger.name):
                return _write(h, 401)
            request = func.HttpRequest(
                h.command, f"http://{h.headers.get('Host', 'localhost')}{h.path}", headers=headers,
                params=params, route_params={k: unquote(v) for k, v in match.groupdict().items() if v is not None},
                body=body)
            if self.server_timing:
                (ok, response), timing = server_timing.measure(
                    functools.partial(self._invoke_logged, trigger, request))
                if ok and isinstance(response, func.HttpResponse):
                    response.headers["Server-Timing"] = timing
            else:
                ok, response = self._invoke_logged(trigger, request)
            return _write_response(h, response) if ok else _write(h, 500)
        _write(h, 404)

    def _authorized(self, level: str, key: str | None, function: str | None = None) -> bool:
        """Host keys open every function-level function (the master key also admin ones); a function's own key
        opens that function only."""
        if level == "anonymous":
            return True
        accepted = [self.master_key] if level == "admin" else [self.function_key, self.master_key]
        own = self.function_keys.get((function or "").lower())
        if level == "function" and own:
            accepted.append(own)
        return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in accepted)

    def _admin(self, h: BaseHTTPRequestHandler, path: str, key: str | None, body: bytes) -> None:
        if not self._authorized("admin", key):
            return _write(h, 401)
        if path.lower() == "host/status" and h.command == "GET":
            return _write(h, 200, json.dumps({"state": "Running"}).encode(),
                          {"Content-Type": "application/json; charset=utf-8"})
        match = re.fullmatch(r"functions/([^/]+)", path, re.IGNORECASE)
        trigger = self.triggers.get(match[1].lower()) if match and h.command == "POST" else None
        if trigger is None or trigger.kind not in ("timerTrigger", "queueTrigger"):
            return _write(h, 404)
        try:
            text = str(json.loads(body or b"{}").get("input") or "")
        except (ValueError, AttributeError):
            return _write(h, 400)
        value = (TimerRequest(past_due=False) if trigger.kind == "timerTrigger"
                 else QueueMessage(id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1))
        # The real host queues the invocation and answers 202 at once: callers poll for the effect.
        threading.Thread(target=self._invoke_logged, args=(trigger, value), name=f"admin-{trigger.name}",
                         daemon=True).start()
        _write(h, 202)

    # -- queues -------------------------------------------------------------------------------
    def _poll(self, trigger: Trigger) -> None:
        """Receive, run, then delete / release / poison, like the Storage extension's QueueProcessor."""
        setting = trigger.binding.connection or "AzureWebJobsStorage"
        connection = os.environ.get(setting) or os.environ.get(f"AzureWebJobs{setting}")
        queue = re.sub(r"%([^%]+)%", lambda m: os.environ.get(m[1], m[0]), trigger.binding.queue_name)
        if not connection or "%" in queue:
            log.error("function %s: setting %s or the queue name %r is missing; not listening", trigger.name, setting,
                      queue)
            return
        client = QueueClient.from_connection_string(connection, queue, retry_total=0)
        poison = QueueClient.from_connection_string(connection, f"{queue}-poison", retry_total=0)
        ready, failures = False, 0
        with ThreadPoolExecutor(self.queue_options.batch_size, thread_name_prefix=f"queue-{queue}") as pool:
            while not self._stopping.is_set():
                try:
                    ready = ready or _create(client, poison)
                    batch = list(client.receive_messages(
                        messages_per_page=self.queue_options.batch_size, max_messages=self.queue_options.batch_size,
                        visibility_timeout=PROCESSING_VISIBILITY_SECONDS))
                    list(pool.map(lambda message: self._process(trigger, client, poison, message), batch))
                    failures = 0
                except AzureError as exc:  # Azurite down or restarted: keep trying, as the real listener does
                    ready, failures = False, failures + 1
                    log.warning("queue %s: %s (%s); retrying", queue, type(exc).__name__,
                                (str(exc).splitlines() or [""])[0])
                    self._stopping.wait(min(5.0, 0.25 * 2 ** failures))
                    continue
                except Exception:  # a poller must never die
                    log.exception("queue %s poller error", queue)
                    self._stopping.wait(1.0)
                    continue
                if not batch:  # a full batch means more may be waiting: receive again at once
                    self._stopping.wait(self.poll_seconds)

    def _process(self, trigger: Trigger, client: QueueClient, poison: QueueClient, message: Any) -> None:
        limit = self.queue_options.max_dequeue_count
        if message.dequeue_count > limit:  # e.g. the host died while running it: never run it again
            return self._to_poison(trigger, client, poison, message)
        body = self._decode(message.content)
        if body is None:  # the extension poisons a badly encoded message at once: a retry cannot help
            log.error("function %s: message %s is not %s encoded", trigger.name, message.id,
                      self.queue_options.message_encoding)
            return self._to_poison(trigger, client, poison, message)
        ok, _ = self._invoke_logged(trigger, QueueMessage(
            id=message.id, body=body, dequeue_count=message.dequeue_count, insertion_time=message.inserted_on,
            expiration_time=message.expires_on, pop_receipt=message.pop_receipt,
            time_next_visible=message.next_visible_on))
        if ok:
            client.delete_message(message)
        elif message.dequeue_count >= limit:
            self._to_poison(trigger, client, poison, message)
        else:  # visible again at once (host.json visibilityTimeout is not applied locally, so retries are quick)
            client.update_message(message.id, pop_receipt=message.pop_receipt, visibility_timeout=0)

    def _decode(self, content: str | None) -> bytes | None:
        if self.queue_options.message_encoding == "none":
            return (content or "").encode()
        try:
            return base64.b64decode("".join((content or "").split()), validate=True)
        except (binascii.Error, ValueError):
            return None

    @staticmethod
    def _to_poison(trigger: Trigger, client: QueueClient, poison: QueueClient, message: Any) -> None:
        poison.send_message(message.content)  # the stored text as it was, still encoded
        client.delete_message(message)
        log.error("function %s: message %s moved to %s after %d dequeues", trigger.name, message.id,
                  poison.queue_name, message.dequeue_count)


def _create(*clients: QueueClient) -> bool:
    for client in clients:
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
    return True


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    """Read the whole request body (Content-Length or chunked) so the connection can be reused."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
        while h.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _write_response(h: BaseHTTPRequestHandler, response: Any) -> None:
    if isinstance(response, (str, bytes)):  # the worker turns a plain return value into a 200
        response = func.HttpResponse(response)
    if not isinstance(response, func.HttpResponse):
        log.error("an HTTP function returned %s, not an HttpResponse", type(response).__name__)
        return _write(h, 500)
    # A list, not a dict: several Set-Cookie headers each go out on their own line, as the worker sends them
    # (azure-functions-python-library PR 115, "multiple Set-Cookie response headers").
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length", "transfer-encoding")]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", f"{response.mimetype}; charset={response.charset}"))
    _write(h, response.status_code, response.get_body() or b"", headers=headers)


def _write(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
           headers: dict[str, str] | list[tuple[str, str]] | None = None) -> None:
    h.send_response(status)
    for name, value in (headers.items() if isinstance(headers, dict) else headers or ()):
        h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if body and h.command != "HEAD":
        h.wfile.write(body)


# -- running the host as a process ------------------------------------------------------------
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class DimensionsFormatter(logging.Formatter):
    """Log lines with the record's custom dimensions (attributes beyond the standard ones, e.g. the action and
    incident core/telemetry.py stamps), as Application Insights shows them in customDimensions."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}
        return text + (" " + json.dumps(extra, default=str, sort_keys=True) if extra else "")


def load_app(spec: str) -> tuple[func.FunctionApp, dict[str, Any]]:
    """Import ``module:attribute`` and read the host.json beside the module (the app's script root)."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    host_json = Path(module.__file__ or ".").resolve().parent / "host.json"
    return getattr(module, attr or "app"), json.loads(host_json.read_text()) if host_json.exists() else {}


def function_keys_from(text: str) -> dict[str, str]:
    """``LOCAL_FUNCTION_KEYS``: JSON ``{"<function name>": "<its own key>"}`` (empty: none)."""
    if not text.strip():
        return {}
    keys = json.loads(text)
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items()):
        raise ValueError("LOCAL_FUNCTION_KEYS must be a JSON object of function name -> key")
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a FunctionApp locally, as the Functions host does.")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DimensionsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=os.environ.get("LOCAL_LOG_LEVEL", "WARNING"), handlers=[handler])
    easy_auth = None
    if os.environ.get("LOCAL_EASYAUTH_AUTHORITY"):
        easy_auth = EasyAuth(os.environ["LOCAL_EASYAUTH_AUTHORITY"], os.environ.get("LOCAL_EASYAUTH_CLIENT_ID", ""),
                             os.environ.get("LOCAL_EASYAUTH_ISSUER") or None)
        os.environ["WEBSITE_AUTH_ENABLED"] = "True"  # what App Service sets when authentication is on
    app, settings = load_app(args.app)
    host = FunctionHost(app, function_key=os.environ.get("LOCAL_FUNCTION_KEY", "local-function-key"),
                        master_key=os.environ.get("LOCAL_MASTER_KEY", "local-master-key"),
                        route_prefix=settings.get("extensions", {}).get("http", {}).get("routePrefix", "api"),
                        queue_options=QueueOptions.from_host_json(settings),
                        function_keys=function_keys_from(os.environ.get("LOCAL_FUNCTION_KEYS", "")),
                        easy_auth=easy_auth)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    host.serve(port=args.port)
    print(f"Host listening on {host.url}", flush=True)
    while not stop.wait(0.1):  # a wait with a timeout lets the signal handler run promptly
        pass
    host.shutdown()
    return 0


class HostProcess:
    """The host in a child process with its own app settings, as a deployment runs it."""

    READY = "Host listening on "

    def __init__(self, env: dict[str, str] | None = None, app: str = "function_app:app", *,
                 cwd: str | Path = ROOT, startup_timeout: float = 30.0, keep_lines: int | None = 300) -> None:
        self.env = {**os.environ, **(env or {})}
        self.function_key = self.env.setdefault("LOCAL_FUNCTION_KEY", "local-function-key")
        self.master_key = self.env.setdefault("LOCAL_MASTER_KEY", "local-master-key")
        self.function_keys = function_keys_from(self.env.get("LOCAL_FUNCTION_KEYS", ""))  # function -> own key
        self.app, self.cwd, self.startup_timeout = app, Path(cwd), startup_timeout
        self.url = ""
        self._lines: deque[str] = deque(maxlen=keep_lines)  # None keeps every line (the secret scan reads all)
        self._ready = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> HostProcess:
        """Start the host and wait for its "Host listening on" line; raise with its output if it fails."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "localdev.host", "--port", "0", "--app", self.app], cwd=self.cwd, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name="host-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                code = self._process.poll()
                self.stop()
                why = f"exited with code {code}" if code is not None else f"not ready in {self.startup_timeout}s"
                raise RuntimeError(f"the local function host ({self.app}) {why}; its output:\n{self.output}")
        return self

    def _read(self) -> None:
        """Drain the child's output (a full pipe would block it), keep a tail, echo the rest to stderr."""
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line)
            if line.startswith(self.READY) and not self._ready.is_set():
                self.url = line[len(self.READY):].strip()
                self._ready.set()
                continue
            try:
                sys.stderr.write(line)
            except (ValueError, OSError):  # stderr replaced or closed (pytest capture): the tail keeps it
                pass

    @property
    def output(self) -> str:
        """The last ``keep_lines`` lines the host printed (logs, tracebacks); all of them with ``keep_lines=None``."""
        return "".join(self._lines)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    def stop(self) -> None:
        """SIGTERM (the host shuts down cleanly), then kill if it does not exit within 10 s."""
        process = self._process
        if process is None:
            return
        stop_process(process)
        if self._reader:
            self._reader.join(timeout=5)
        if process.stdout:
            process.stdout.close()

    def __enter__(self) -> HostProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy: one logger ("localdev.host") and one set of classes.
    from localdev.host import main as _main

    sys.exit(_main())
