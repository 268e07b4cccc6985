"""``make up``: the local stack stays up for poking by hand, until Ctrl-C.

    make up              Azurite, the emulators and the local function host, with seeded incidents; prints
                         the base URL, the function key and curl examples.
    make up-emulators    Azurite and the emulators only, for the real Functions host (``func start``): writes
                         ``local.settings.json`` (git-ignored) with their URLs and credentials and prints how
                         to start the host.

The stack is the one the tests and ``make demo`` use (localdev/stack.py), so what you poke is what they check.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from localdev.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SEEDED = ("incident-trigger.json", "incident-trigger-defender-portal.json")
READY = "Ready. Ctrl-C stops everything."


def seed(stack: Stack) -> list[dict]:
    """The sample incidents in the Sentinel emulator and VirusTotal reports for their addresses."""
    stack.vt.set_report("203.0.113.45", malicious=12, suspicious=1, harmless=55, undetected=26, reputation=-41,
                        country="NL", as_owner="Bulletproof Hosting Ltd", asn=64500)
    stack.vt.set_report("198.51.100.23", harmless=71, undetected=23, country="DE", as_owner="Example Cloud GmbH",
                        asn=64501)
    bodies = []
    for name in SEEDED:
        body = json.loads((FIXTURES / name).read_text())
        stack.arm.seed_from_trigger(body)
        bodies.append(body)
    return bodies


def local_settings(stack: Stack) -> dict:
    """local.settings.json for ``func start`` against these emulators (the app settings a deployment has)."""
    values = {k: v for k, v in stack.env().items() if not k.startswith("LOCAL_") or k == "LOCAL_MODE"}
    values.update({"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": stack.azurite.connection_string,
                   "AzureWebJobsFeatureFlags": "EnableWorkerIndexing"})
    return {"IsEncrypted": False, "Values": values}


def curl_examples(url: str, key: str, incident: dict) -> list[str]:
    body = json.dumps({"incidentArmId": incident["object"]["id"]})
    return [
        f"curl -s {url}/api/health",
        f"curl -s -H 'x-functions-key: {key}' {url}/api/health/details",
        f"curl -s -X POST -H 'x-functions-key: {key}' -H 'Content-Type: application/json' "
        f"-d '{body}' {url}/api/enrichment/reputation",
    ]


def wait_for_ctrl_c() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulators-only", action="store_true", help="no local host: for func start")
    parser.add_argument("--settings-file", type=Path, default=ROOT / "local.settings.json",
                        help="where --emulators-only writes the host settings")
    args = parser.parse_args(argv)
    with Stack() as stack:
        incidents = seed(stack)
        print(f"Azurite: {stack.azurite.connection_string.split('TableEndpoint=')[1].split(';')[0]}")
        for emulator in stack.emulators:
            print(f"{type(emulator).__name__}: {emulator.url}")
        if args.emulators_only:
            args.settings_file.write_text(json.dumps(local_settings(stack), indent=2) + "\n")
            print(f"\nWrote {args.settings_file} (git-ignored). In another terminal: func start")
            print("The incidents 4711 and 4712 are seeded; the function key is the one func start prints.")
            print(READY, flush=True)
            wait_for_ctrl_c()
            return 0
        host = stack.host()
        try:
            print(f"\nFunction host: {host.url}")
            print(f"Function key:  {host.function_key}")
            print("Seeded: incident 4711 (4 IP entities) and 4712 (Defender XDR). Try:")
            for line in curl_examples(host.url, host.function_key, incidents[0]):
                print(f"  {line}")
            print(READY, flush=True)
            wait_for_ctrl_c()
        finally:
            host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
