"""Azurite, the Azure Storage emulator (npm package ``azurite``), as a child process.

Tests, the demo and the benchmarks keep their state in real Table and Queue Storage served by
Azurite on free loopback ports, in memory, so every run starts clean and runs never collide.

Fault tests can also take storage away: ``restart()`` (connections drop, the service comes back on the
same ports), ``paused()`` (the process is frozen: requests hang, as on a stalled storage account).
In memory, a restart loses every table and queue, which Azure Storage never does; with
``persistent=True`` the data lives in the workspace directory and survives a restart.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localdev.latency import LatencyProxy
from localdev.process import stop_process

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public and documented; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SERVICES = ("blob", "queue", "table")
# How long a start may take before it is a failure. Azurite listens within a second on an idle machine; on a
# loaded 2-core one (load 5-15) node needs far longer, and the bound is only paid when the start really fails.
STARTUP_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Azurite:
    """``with Azurite() as storage:`` then use ``storage.connection_string``."""

    def __init__(self, *, startup_timeout: float = STARTUP_SECONDS, persistent: bool = False,
                 latency_proxy: bool = False) -> None:
        self.binary = ROOT / "node_modules" / ".bin" / "azurite"
        self.startup_timeout = startup_timeout
        self.persistent = persistent
        self.ports = {service: _free_port() for service in SERVICES}
        # With latency_proxy, clients reach queue and table storage through a LatencyProxy each (set its
        # latency with ``set_latency``): Azure Storage answers in tens of milliseconds, Azurite in one.
        self._proxies: dict[str, LatencyProxy] = (
            {service: LatencyProxy(self.ports[service]) for service in ("queue", "table")} if latency_proxy else {})
        self._workspace: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """What the pack uses: through the latency proxies when there are any."""
        return self._connection_string({service: self._proxies[service].port if service in self._proxies else port
                                        for service, port in self.ports.items()})

    @property
    def direct_connection_string(self) -> str:
        """Straight to Azurite, past any latency proxy: for observers (the bench) that must not be slowed."""
        return self._connection_string(self.ports)

    @staticmethod
    def _connection_string(ports: dict[str, int]) -> str:
        endpoints = "".join(f"{service.capitalize()}Endpoint=http://127.0.0.1:{port}/{ACCOUNT};"
                            for service, port in ports.items())
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};{endpoints}"

    def start(self) -> Azurite:
        """Start on this instance's ports and wait until queue and table storage accept connections."""
        if not self.binary.exists() or not shutil.which("node"):
            raise RuntimeError(f"Azurite is not installed ({self.binary} or node is missing): "
                               "run `npm ci` in the repository root (`make install` does it)")
        if self._workspace is None:
            self._workspace = tempfile.TemporaryDirectory(prefix="azurite-")
        workspace = Path(self._workspace.name)
        # --inMemoryPersistence (package.json pins Azurite 3.37): nothing survives a stop. Azurite refuses
        # it together with --location, so the workspace (its log) is the working directory instead.
        storage = ["--location", str(workspace)] if self.persistent else ["--inMemoryPersistence"]
        args = [str(self.binary), "--silent", "--skipApiVersionCheck", "--loose", *storage, "--disableTelemetry"]
        for service, port in self.ports.items():
            args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
        with (workspace / "azurite.log").open("ab") as errors:  # a file, not a pipe nobody drains
            self._process = subprocess.Popen(args, stdout=errors, stderr=errors, cwd=workspace)
        deadline = time.monotonic() + self.startup_timeout
        while not (_listening(self.ports["queue"]) and _listening(self.ports["table"])):
            if self._process.poll() is not None or time.monotonic() > deadline:
                code, tail = self._process.poll(), self._log_tail(workspace)
                self.close()
                why = f"exited with code {code}" if code is not None else f"did not listen in {self.startup_timeout}s"
                raise RuntimeError(f"Azurite {why} (ports {self.ports}): {tail}")
            time.sleep(0.05)
        for proxy in self._proxies.values():
            if not proxy.running:
                proxy.start()
        log.info("Azurite listening on %s", self.ports)
        return self

    def set_latency(self, seconds: float) -> None:
        """Delay every request to queue and table storage by ``seconds`` (needs ``latency_proxy=True``)."""
        if not self._proxies and seconds:
            raise RuntimeError("Azurite was started without latency_proxy=True")
        for proxy in self._proxies.values():
            proxy.latency = seconds

    def stop(self) -> None:
        """Terminate the emulator (kill if it lingers); its in-memory data is gone."""
        process, self._process = self._process, None
        stop_process(process)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def restart(self) -> None:
        """Stop and start again on the same ports (an outage for fault tests); data kept only if persistent."""
        self.stop()
        self.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the process inside the block (SIGSTOP/SIGCONT): connections open, no answer comes."""
        assert self._process is not None, "Azurite is not running"
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop and remove the workspace directory."""
        self.stop()
        for proxy in self._proxies.values():
            proxy.stop()
        self._proxies = {}
        if self._workspace is not None:
            self._workspace.cleanup()
            self._workspace = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _log_tail(workspace: Path) -> str:
        path = workspace / "azurite.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
