"""make up: the stack stays up with a host to poke (base URL, key, curl examples), or emulators only for func start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from localdev.up import READY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen([sys.executable, "-m", "localdev.up", *args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(READY) or time.monotonic() > deadline:
            break
    assert lines and lines[-1].startswith(READY), "\n".join(lines)
    return process, lines


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


def test_up_serves_the_host_with_seeded_incidents_until_ctrl_c():
    process, lines = start()
    try:
        url = next(line.split()[-1] for line in lines if line.startswith("Function host:"))
        key = next(line.split()[-1] for line in lines if line.startswith("Function key:"))
        curls = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(curls) == 3
        assert requests.get(f"{url}/api/health", timeout=10).json() == {"status": "ok"}
        enrich = next(c for c in curls if "enrichment/reputation" in c)
        body = json.loads(enrich.split("-d '")[1].split("'")[0])
        answer = requests.post(f"{url}/api/enrichment/reputation", json=body, headers={"x-functions-key": key},
                               timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["worstVerdict"] == "malicious"
    finally:
        assert stop(process) == 0


def test_up_emulators_only_writes_local_settings_for_func_start(tmp_path):
    settings = tmp_path / "local.settings.json"
    process, lines = start("--emulators-only", "--settings-file", str(settings))
    try:
        assert not any(line.startswith("Function host:") for line in lines)
        values = json.loads(settings.read_text())["Values"]
        assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
        assert values["AzureWebJobsStorage"] == values["STATE_STORAGE_CONNECTION"]
        # The emulators answer at the URLs written for the host.
        assert requests.get(values["ARM_ENDPOINT"], timeout=10).status_code < 500
    finally:
        assert stop(process) == 0
