"""Counting Table Storage requests the host makes, without mocking anything.

``StorageCounter`` is a loopback TCP proxy in front of the table endpoint a host is given (Azurite, or
the latency proxy in front of it). It reads each HTTP/1.1 request head the client sends (method, path,
``Content-Length``), records it, and passes every byte on unchanged; answers flow back untouched. So
the host talks real HTTP to real Azurite, and a test or the bench counts what it sent, as the
emulators' ``received`` lists count ServiceNow and ARM requests.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

WRITES = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})


@dataclass(frozen=True)
class StorageRequest:
    method: str
    path: str
    at: float = field(default_factory=time.time)  # when the request head arrived (before any latency proxy)

    @property
    def table(self) -> str:
        """The table the request is for (``snowlinks`` of ``/devstoreaccount1/t1234snowlinks(...)``)."""
        parts = unquote(self.path).strip("/").split("/")
        name = parts[1] if len(parts) > 1 else ""
        return re.split(r"[(?]", name)[0]

    @property
    def write(self) -> bool:
        return self.method in WRITES


class StorageCounter:
    """``with StorageCounter(target_port) as counter:`` then give a host ``counter.connection_string(...)``."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.host = host
        self._listener = socket.create_server((host, 0), backlog=256)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.requests: list[StorageRequest] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what a test reads --------------------------------------------------------------------
    def snapshot(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int, table: str | None = None) -> list[StorageRequest]:
        with self._lock:
            found = self.requests[mark:]
        return [r for r in found if table is None or r.table.endswith(table)]

    def counts(self, mark: int = 0, table: str | None = None) -> dict[str, int]:
        found = self.since(mark, table)
        return {"calls": len(found), "writes": sum(r.write for r in found)}

    @staticmethod
    def connection_string(base: str, port: int) -> str:
        """``base`` (an Azurite connection string) with its table endpoint moved to ``port``."""
        return re.sub(r"(TableEndpoint=http://127\.0\.0\.1:)\d+", rf"\g<1>{port}", base)

    @staticmethod
    def table_port(connection_string: str) -> int:
        match = re.search(r"TableEndpoint=http://127\.0\.0\.1:(\d+)", connection_string)
        assert match, "no table endpoint in the connection string"
        return int(match[1])

    # -- proxy --------------------------------------------------------------------------------
    def start(self) -> StorageCounter:
        self._thread = threading.Thread(target=self._accept, name=f"storage-counter-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> StorageCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client -> upstream: parse each request head and skip its body by Content-Length."""
        buffer, body_left = b"", 0
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
                buffer += data
                while True:
                    if body_left:
                        taken = min(body_left, len(buffer))
                        buffer, body_left = buffer[taken:], body_left - taken
                        if body_left:
                            break
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buffer = buffer[:end].decode("latin-1"), buffer[end + 4:]
                    line, *headers = head.split("\r\n")
                    method, target = [*line.split(" "), "", ""][:2]
                    with self._lock:
                        self.requests.append(StorageRequest(method, urlsplit(target).path))
                    for header in headers:
                        name, _, value = header.partition(":")
                        if name.strip().lower() == "content-length":
                            body_left = int(value.strip() or 0)
        except OSError:
            pass
        finally:
            _close(upstream, client)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass


__all__ = ["StorageCounter", "StorageRequest"]
