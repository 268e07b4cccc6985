"""What every loopback emulator shares: routing, recording and fault injection.

An emulator is a small threaded HTTP server on 127.0.0.1 that implements one vendor's
documented contract, keeps its state in memory, records every request it receives (tests
assert on effects, not on our internals), and can be told to fail on demand:

    vt.fail(429, times=2, retry_after=1, body={"error": {"code": "QuotaExceededError", ...}})
    arm.fail(500, path=r"/comments/")
    vt.fail(delay=5)                     # slow answer, past the client's timeout
    vt.hold(until=lambda: done.is_set()) # answer only once something else has happened (an event, not a sleep)
    vt.fail(drop=True)                   # connection closed without an answer
    vt.fail(malformed=True)              # 200 with a body that is not JSON
    with vt.offline(): ...               # connection refused, then back on the same port
    vt.latency = 0.3                     # every answer takes 300 ms more (a latency profile, localdev/latency.py)
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class CIDict(dict):
    """Headers with case-insensitive look-up."""

    def __init__(self, items=()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key) -> bool:
        return super().__contains__(key.lower())


@dataclass
class Request:
    """One request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIDict
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    status: int = 0  # what the emulator answered (0: no answer, e.g. a dropped connection)

    @property
    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", ""
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/plain; charset=utf-8")
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


@dataclass
class Fault:
    status: int | None = None
    times: int = 1
    path: re.Pattern | None = None
    method: str | None = None
    retry_after: str | None = None
    body: Any = None
    delay: float = 0.0
    drop: bool = False
    malformed: bool = False
    until: Callable[[], bool] | None = None  # hold the answer until this is true (or ``until_timeout`` passes)
    until_timeout: float = 60.0
    released: list[bool] = field(default_factory=list)  # per held request: True when ``until`` came true

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return self.path is None or bool(self.path.search(path))


Handler = Callable[[Request], Response]


class LoopbackServer(ThreadingHTTPServer):
    """A threaded server whose listen backlog takes a burst (the stdlib default is 5 connections)."""

    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a stopped host, a timed-out test) is normal here: no traceback for it."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Emulator:
    """Base class: subclasses register routes in ``__init__`` with ``self.route``."""

    name = "emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self.received: list[Request] = []
        self.faults_served = 0
        self.latency = 0.0  # seconds added before every answer: the network and service time of the real API
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()  # open client connections (closed by stop)
        self._thread: threading.Thread | None = None

    # -- wiring -------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile("^" + pattern + "$", re.IGNORECASE), handler))

    def start(self) -> Emulator:
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else every request with a body waits ~40 ms on delayed ACKs

            def log_message(self, *args) -> None:  # quiet: tests read .received instead
                pass

            def setup(self) -> None:
                super().setup()
                with emulator._lock:
                    emulator._connections.add(self.connection)

            def finish(self) -> None:
                with emulator._lock:
                    emulator._connections.discard(self.connection)
                super().finish()

            def _serve(self) -> None:
                try:
                    emulator._dispatch(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test): nothing to answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = LoopbackServer((self._host, self._port), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Kept-alive connections outlive the listening socket: close them too, or a client's connection
        # pool would still reach a stopped ("offline") emulator.
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @contextmanager
    def offline(self) -> Iterator[None]:
        """Connection refused while inside: the port closes, then reopens on the same port."""
        assert self._server, f"{self.name} is not started"
        port = self._server.server_address[1]
        self.stop()
        try:
            yield
        finally:
            self._port = port
            self.start()

    @property
    def url(self) -> str:
        assert self._server, f"{self.name} is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls ------------------------------------------------------------------
    def fail(
        self,
        status: int | None = None,
        *,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
        retry_after: int | str | None = None,
        body: Any = None,
        delay: float = 0.0,
        drop: bool = False,
        malformed: bool = False,
        until: Callable[[], bool] | None = None,
        until_timeout: float = 60.0,
    ) -> Fault:
        """Answer the next ``times`` matching requests with a fault instead of the contract; with ``until``, only
        once ``until()`` is true (as ``hold``), e.g. a 429 sent only after the other look-ups are in flight."""
        fault = Fault(
            status=status, times=times, path=re.compile(path, re.IGNORECASE) if path else None,
            method=method, retry_after=None if retry_after is None else str(retry_after),
            body=body, delay=delay, drop=drop, malformed=malformed, until=until, until_timeout=until_timeout,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def hold(self, until: Callable[[], bool], *, timeout: float = 60.0, times: int = 1, path: str | None = None,
             method: str | None = None) -> Fault:
        """Hold the next ``times`` matching requests until ``until()`` is true, then answer them as usual.

        Tests wait on events, not on the clock: a request held until another one arrived proves they were in
        flight together, whatever the machine's load. Past ``timeout`` the request is answered anyway; the
        returned fault's ``released`` says, per held request, whether ``until`` came true.
        """
        fault = Fault(times=times, path=re.compile(path, re.IGNORECASE) if path else None, method=method,
                      until=until, until_timeout=timeout)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget faults and recorded requests (subclasses also reset their state)."""
        with self._lock:
            self._faults.clear()
            self.received.clear()
            self.faults_served = 0

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[Request]:
        pattern = re.compile(path, re.IGNORECASE) if path else None
        with self._lock:
            return [r for r in self.received
                    if (method is None or r.method == method) and (pattern is None or pattern.search(r.path))]

    # -- serving ------------------------------------------------------------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    self.faults_served += 1
                    return fault
            self._faults = [f for f in self._faults if f.times > 0]
        return None

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        request = Request(h.command, unquote(parts.path), query, CIDict(h.headers.items()), body)
        with self._lock:
            self.received.append(request)
        if self.latency > 0:
            time.sleep(self.latency)  # threaded server: concurrent requests wait side by side, as on a real API

        fault = self._take_fault(request.method, request.path)
        if fault is not None:
            if fault.until is not None:
                deadline = time.monotonic() + fault.until_timeout
                while not (met := bool(fault.until())) and time.monotonic() < deadline:
                    time.sleep(0.01)
                fault.released.append(met)
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                h.close_connection = True
                h.connection.close()
                return
            if fault.malformed:
                return self._answer(h, request, Response(200, "{not json", {"Content-Type": "application/json"}))
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return self._answer(h, request, Response(fault.status, fault.body if fault.body is not None
                                               else self.error_body(fault.status), headers))

        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.params = {k: v for k, v in match.groupdict().items() if v is not None}
                try:
                    response = handler(request)
                except Exception as exc:  # an emulator bug must show up as a 500, not hang the test
                    response = Response(500, {"error": {"code": "EmulatorError", "message": repr(exc)}})
                return self._answer(h, request, response)
        self._answer(h, request, Response(404, self.error_body(404, f"no route for {request.method} {request.path}")))

    def _answer(self, h: BaseHTTPRequestHandler, request: Request, response: Response) -> None:
        request.status = response.status
        self._write(h, response)

    def error_body(self, status: int, message: str | None = None) -> Any:
        """The vendor's error shape; most Microsoft and VirusTotal APIs use this one."""
        return {"error": {"code": f"HTTP{status}", "message": message or f"injected HTTP {status}"}}

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, response: Response) -> None:
        payload, content_type = response.encode()
        h.send_response(response.status)
        if content_type:
            h.send_header("Content-Type", content_type)
        for key, value in response.headers.items():
            if key.lower() != "content-type":
                h.send_header(key, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if payload and h.command != "HEAD":
            h.wfile.write(payload)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
