"""Latency profiles: the local world answers as slowly as the real one.

Emulators answer in microseconds, which hides whether an action runs its calls one after another or
side by side. A profile gives each service the time a real call takes (network plus service time,
measured from an Azure region to the public endpoints). Emulators sleep that long before answering
(``Emulator.latency``; they are threaded, so concurrent requests wait side by side, as on the real
API); Table and Queue Storage are reached through a ``LatencyProxy`` in front of Azurite, which holds
each chunk a client sends for the profile's time before passing it on.

``make bench`` uses the ``real`` profile by default; tests use ``none`` unless they measure concurrency.
The profile is a setting of the local stack: ``LOCAL_LATENCY_PROFILE`` = a profile name or a JSON object
{service: seconds}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)

ENV = "LOCAL_LATENCY_PROFILE"

# Seconds per call, by emulator name (``Emulator.name``; "storage" is Azurite). "real": what issue #16
# measured against (ARM, Defender, Graph, ServiceNow and the webhooks ~100 ms; VirusTotal ~300 ms;
# Table Storage ~50 ms). The managed-identity endpoint is local to the App Service worker: a few ms.
PROFILES: dict[str, dict[str, float]] = {
    "none": {},
    "real": {"sentinel-arm": 0.1, "defender": 0.1, "graph": 0.1, "servicenow": 0.1, "teams-webhook": 0.1,
             "slack-webhook": 0.1, "virustotal": 0.3, "storage": 0.05, "entra": 0.005},
}


def profile(value: str | Mapping[str, float] | None) -> dict[str, float]:
    """A profile from its name, a JSON object or a mapping; unknown names are an error (no silent 'none')."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    text = value.strip()
    if text.startswith("{"):
        return {str(k): float(v) for k, v in json.loads(text).items()}
    if text not in PROFILES:
        raise ValueError(f"unknown latency profile {text!r}; known: {', '.join(PROFILES)} or a JSON object")
    return dict(PROFILES[text])


class LatencyProxy:
    """A loopback TCP proxy that delays what the client sends by ``latency`` seconds.

    Each chunk is passed on at (its arrival + latency), in order, so a request costs one latency however
    many chunks it is sent in, and requests on different connections wait side by side. The latency can
    change while the proxy runs (the bench switches profiles without restarting the stack).
    """

    def __init__(self, target_port: int, latency: float = 0.0, host: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.latency = latency
        self.host = host
        with socket.socket() as sock:
            sock.bind((host, 0))
            self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._started = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> LatencyProxy:
        self._thread = threading.Thread(target=self._run, name=f"latency-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(60):  # an event; the bound is generous for a loaded machine
            raise RuntimeError(f"latency proxy on port {self.port} did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._connection, self.host, self.port, backlog=256)
            self._started.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pump(client_r, server_w, delayed=True),
                             self._pump(server_r, client_w, delayed=False), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(forward())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + (self.latency if delayed else 0.0), data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
        finally:
            try:
                writer.close()
            except (ConnectionError, OSError, RuntimeError):
                pass

    def stop(self) -> None:
        """Close the listener and every connection it carries, then the loop."""
        if self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(60)
        self._thread = None
        self._loop.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ENV", "PROFILES", "LatencyProxy", "profile"]
