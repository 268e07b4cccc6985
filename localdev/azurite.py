"""Azurite, the Azure Storage emulator (npm package ``azurite``), as a child process.

Tests, the demo and the benchmarks keep their state in real Table and Queue Storage served
by Azurite on free loopback ports, with in-memory persistence so every run starts clean.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from localdev.process import stop_process

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Azurite:
    """``with Azurite() as storage: storage.connection_string``."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        self.binary = ROOT / "node_modules" / ".bin" / "azurite"
        self.startup_timeout = startup_timeout
        self.ports = {"blob": _free_port(), "queue": _free_port(), "table": _free_port()}
        self._process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={base}:{self.ports['blob']}/{ACCOUNT};"
                f"QueueEndpoint={base}:{self.ports['queue']}/{ACCOUNT};"
                f"TableEndpoint={base}:{self.ports['table']}/{ACCOUNT};")

    def start(self) -> Azurite:
        if not self.binary.exists() or not shutil.which("node"):
            raise RuntimeError(f"Azurite not found at {self.binary}: run `npm ci` (the Makefile does it)")
        # In-memory persistence (no --location then): every run starts clean, nothing left on disk.
        args = [str(self.binary), "--silent", "--skipApiVersionCheck", "--loose", "--inMemoryPersistence",
                "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
                "--tableHost", "127.0.0.1", "--blobPort", str(self.ports["blob"]),
                "--queuePort", str(self.ports["queue"]), "--tablePort", str(self.ports["table"])]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.startup_timeout
        while not all(_listening(port) for port in self.ports.values()):
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"Azurite exited at start: {error[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Azurite did not listen within {self.startup_timeout}s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None

    def restart(self) -> None:
        """Stop and start on the same ports (in-memory state is lost): for outage tests."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
