"""``make demo``: the pack end to end on this machine, printed as a timeline.

Starts Azurite, the emulators and the function host, fires the sample incidents into the
playbook definitions Bicep deploys (``infra/playbooks/*.json``, run by ``localdev.playbooks``),
and prints what happened on each side, ending with the incident comment as written.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook
from localdev.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
# The other use cases, each played by localdev/demo_<area>.py: run(stack, host, say).
DEMOS = [
    ("Bi-directional ServiceNow sync", "sync"),
    ("Response: Defender for Endpoint isolation", "response"),
    ("Orchestration: the compromised-user playbook (ticket, Teams/Slack, approval, Block / Ignore)", "orchestration"),
    ("Identity: the user's own confirmation (\"Was this you?\"), answered No and Yes", "identity"),
]
SAMPLES = ROOT / "tests" / "fixtures"
PLAYBOOKS = ROOT / "infra" / "playbooks"
T0 = time.monotonic()


def say(text: str, indent: int = 0) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {'  ' * indent}{text}", flush=True)


class _TableText(HTMLParser):
    """Renders the comment's HTML table as aligned text for the terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[list[str]] = []
        self.paragraphs: list[str] = []
        self._cell: list[str] | None = None
        self._para: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "tr":
            self.lines.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._para = []

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.lines[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "p" and self._para is not None:
            self.paragraphs.append("".join(self._para).strip())
            self._para = None

    def handle_data(self, data) -> None:
        for sink in (self._cell, self._para):
            if sink is not None:
                sink.append(data)

    def render(self) -> str:
        width = [max(len(row[i]) for row in self.lines if i < len(row)) for i in range(max(map(len, self.lines)))]
        rows = ["  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip() for row in self.lines]
        return "\n".join([self.paragraphs[0], *rows, *self.paragraphs[1:]])


def as_text(html: str) -> str:
    parser = _TableText()
    parser.feed(html)
    return parser.render()


def load(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


IP_ENTITIES = 0


def play(stack: Stack, runner: PlaybookRunner, body: dict, what: str) -> dict:
    """Fire the Sentinel trigger of the deployed playbook definition with ``body``."""
    global IP_ENTITIES
    IP_ENTITIES += json.dumps(body).count('"kind": "Ip"')
    before = len(stack.vt.lookups())
    say(f"Sentinel: {what} -> automation rule runs playbook '{runner.name}'")
    result = runner.run(body)
    for line in result.timeline[1:-1]:
        say(f"playbook: {line}", 1)
    action = result.actions["Enrich_IP_reputation"]
    summary = action.body
    if result.status != "Succeeded":
        say(f"playbook run {result.status}: {action.error or summary}", 1)
        raise SystemExit(1)
    looked_up = stack.vt.lookups()[before:]
    say(f"VirusTotal: {len(looked_up)} lookup(s) {', '.join(looked_up) or ''}".rstrip(), 1)
    for item in summary["ips"]:
        origin = "cache" if item["cached"] else "VirusTotal"
        say(f"{item['ip']:<32} {item['verdict']:<10} {item['malicious']:>2} malicious / "
            f"{item['malicious'] + item['suspicious'] + item['harmless'] + item['undetected']} engines  ({origin})", 2)
    for item in summary["skipped"]:
        say(f"{item['ip']:<32} skipped: {item['reason']}", 2)
    if summary["comments"]:
        say(f"Sentinel: comment {summary['comments'][0][:8]}… written"
            + (f"; incident labelled '{summary['label']}'" if summary["label"] else ""), 1)
    else:
        say(f"no comment: {summary['commentSkipped']}", 1)
    say(f"<- HTTP 200 to the playbook: worstVerdict={summary['worstVerdict']}, complete={summary['complete']}", 1)
    return summary


def standalone(run) -> None:
    """Play one use case's demo on its own stack: ``python -m localdev.demo_<area>``."""
    with Stack() as stack:
        host = stack.host()
        try:
            run(stack, host, say)
        finally:
            host.stop()


def main() -> int:
    print("sentinel-playbooks demo: Microsoft Sentinel playbooks on Azure Functions, all clouds emulated locally\n")
    with Stack() as stack:
        host = stack.host()
        runner = PlaybookRunner(load_playbook(PLAYBOOKS / "enrichment-ip-reputation.json"),
                                bicep_parameters(host.url, host.function_key), name="Enrich-IP-VirusTotal")
        try:
            say(f"Azurite {stack.azurite.connection_string.split('TableEndpoint=')[1].split(';')[0]}, "
                f"Sentinel ARM {stack.arm.url}, VirusTotal {stack.vt.url}, managed identity {stack.entra.url}")
            say(f"function host {host.url} serving function_app.py")
            stack.vt.set_report("203.0.113.45", malicious=12, suspicious=1, harmless=55, undetected=26,
                                reputation=-41, country="NL", as_owner="Bulletproof Hosting Ltd", asn=64500)
            stack.vt.set_report("198.51.100.23", harmless=71, undetected=23, country="DE",
                                as_owner="Example Cloud GmbH", asn=64501)
            print()
            incident = load("incident-trigger.json")
            incident_id = stack.arm.seed_from_trigger(incident)
            play(stack, runner, incident,
                 "incident 4711 created, 'Sign-in from anonymizing proxy…' (High, 4 IP entities)")
            print()
            xdr = load("incident-trigger-defender-portal.json")
            stack.arm.seed_from_trigger(xdr)
            play(stack, runner, xdr,
                 "incident 4712 created by Defender XDR (no alerts, IPv6 entity)")
            print()
            play(stack, runner, incident,
                 "incident 4711 updated: the playbook runs again (or the Logic App retries)")
            comments = stack.arm.comments(incident_id)
            print(f"\n--- incident 4711 has {len(comments)} comment(s); as written: ---")
            print(as_text(comments[0]["properties"]["message"]))
            calls = len(stack.vt.lookups())
            print(f"\nVirusTotal calls: {calls} for 3 runs with {IP_ENTITIES} IP entities "
                  f"(a one-call-per-entity playbook makes {IP_ENTITIES}); comments: 1 per incident.")
            for title, area in DEMOS:
                print(f"\n=== {title} ===")
                importlib.import_module(f"localdev.demo_{area}").run(stack, host, say)
        finally:
            runner.close()
            host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
