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
    """Renders a comment's HTML as terminal text, in document order: paragraphs as lines, each table aligned."""

    CELL = 44  # long values (hashes, URLs) are shortened so a section fits a terminal

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str | list[list[str]]] = []  # a paragraph's text, or a table's rows
        self._cell: list[str] | None = None
        self._para: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.blocks.append([])
        elif tag == "tr" and self.blocks and isinstance(self.blocks[-1], list):
            self.blocks[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._para = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag) -> None:
        table = self.blocks[-1] if self.blocks and isinstance(self.blocks[-1], list) else None
        if tag in ("td", "th") and self._cell is not None and table:
            text = "".join(self._cell).strip()
            long_value = len(text) > self.CELL and " " not in text  # a hash or a URL, not a sentence
            table[-1].append(text[:self.CELL - 7] + "…" + text[-6:] if long_value else text)
            self._cell = None
        elif tag == "p" and self._para is not None:
            self.blocks.append("".join(self._para).strip())
            self._para = None

    def handle_data(self, data) -> None:
        for sink in (self._cell, self._para):
            if sink is not None:
                sink.append(data)

    def render(self) -> str:
        out: list[str] = []
        for block in self.blocks:
            if isinstance(block, str):
                out.append(block)
                continue
            columns = max(map(len, block))
            # A note spanning the rest of its row (a skipped value) does not widen the column it starts in.
            width = [max((len(row[i]) for row in block if len(row) == columns), default=0) for i in range(columns)]
            out += ["  " + "  ".join(cell if i == len(row) - 1 < columns - 1 else cell.ljust(width[i])
                                     for i, cell in enumerate(row)).rstrip() for row in block]
        return "\n".join(out)


def as_text(html: str) -> str:
    parser = _TableText()
    parser.feed(html)
    return parser.render()


def load(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


INDICATOR_KINDS = ("Ip", "FileHash", "Url", "DnsResolution")  # the entities the enrichment looks up
INDICATOR_ENTITIES = 0
PAYLOAD = "9f2c1b7e4d3a5f6081c2e3d4b5a69788f1e2d3c4b5a6978899aabbccddeeff00"  # incident 4713's file (SHA-256)


def play(stack: Stack, runner: PlaybookRunner, body: dict, what: str) -> dict:
    """Fire the Sentinel trigger of the deployed playbook definition with ``body``."""
    global INDICATOR_ENTITIES
    INDICATOR_ENTITIES += sum(json.dumps(body).count(f'"kind": "{kind}"') for kind in INDICATOR_KINDS)
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
    say(f"VirusTotal: {len(looked_up)} lookup(s) {', '.join(_short(v) for v in looked_up)}".rstrip(), 1)
    for item in summary["indicators"]:
        origin = "cache" if item["cached"] else "VirusTotal"
        say(f"{item['kind']:<6} {_short(item['value']):<42} {item['verdict']:<10} {item['malicious']:>2} malicious / "
            f"{item['malicious'] + item['suspicious'] + item['harmless'] + item['undetected']} engines  ({origin})", 2)
    for item in summary["skipped"]:
        say(f"{item['kind']:<6} {_short(item['value']):<42} skipped: {item['reason']}", 2)
    if summary["comments"]:
        say(f"Sentinel: comment {summary['comments'][0][:8]}… written"
            + (f"; incident labelled '{summary['label']}'" if summary["label"] else ""), 1)
    else:
        say(f"no comment: {summary['commentSkipped']}", 1)
    say(f"<- HTTP 200 to the playbook: worstVerdict={summary['worstVerdict']}, complete={summary['complete']}", 1)
    return summary


def _short(value: str, width: int = 42) -> str:
    return value if len(value) <= width else value[:width - 7] + "…" + value[-6:]


def mixed_incident_body() -> dict:
    """Incident 4713: one indicator of each kind, each seen twice (two entities), beside values that never leave:
    a private address and the tenant's own domain."""
    import uuid

    from tests.enrichment.storm import mixed_incident

    body = mixed_incident(4713, ["198.51.100.77", "198.51.100.77", "10.0.0.5"], [PAYLOAD, PAYLOAD.upper()],
                          ["https://user:secret@login-micros0ft.example/signin?token=abc#top",
                           "https://login-micros0ft.example/signin?token=xyz"],
                          ["c2-relay.example", "c2-relay.example", "contoso.com"],
                          name=str(uuid.uuid5(uuid.NAMESPACE_URL, "demo-incident-4713")))
    body["object"]["properties"].update(title="Phishing mail: payload, credential link, beacon to a C2 domain",
                                        severity="Medium")
    return body


def seed_mixed_reports(stack: Stack) -> None:
    stack.vt.set_report("198.51.100.77", malicious=3, harmless=60, undetected=31, country="US",
                        as_owner="Example Transit Inc", asn=64502)
    stack.vt.set_report(PAYLOAD, malicious=41, suspicious=2, harmless=0, undetected=28,
                        type_description="Win32 EXE", meaningful_name="invoice.pdf.exe")
    stack.vt.set_report("https://login-micros0ft.example/signin", malicious=9, suspicious=3, harmless=58,
                        undetected=24, title="Sign in to your account", last_http_response_code=200)
    stack.vt.set_report("c2-relay.example", malicious=17, harmless=50, undetected=27, registrar="NameCheap, Inc.",
                        creation_date=1764547200)


def unique_kinds(summary: dict) -> list[str]:
    counts: dict[str, int] = {}
    for item in summary["indicators"]:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return [f"{kind} {count}" for kind, count in counts.items()]


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
            stack.arm.seed_from_trigger(incident)
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
            print()
            seed_mixed_reports(stack)
            mixed = mixed_incident_body()
            mixed_id = stack.arm.seed_from_trigger(mixed)
            before, entities = len(stack.vt.lookups()), INDICATOR_ENTITIES
            summary = play(stack, runner, mixed, "incident 4713 created, a phishing mail (an IP, a file hash, a URL "
                                                 "and a domain, each in two entities)")
            unique = {f"{item['kind']}:{item['value']}" for item in summary["indicators"]}
            calls = len(stack.vt.lookups()) - before
            comments = stack.arm.comments(mixed_id)
            sections = comments[0]["properties"]["message"].count("<table>") if comments else 0
            if len(comments) != 1 or sections != 4 or calls != len(unique):  # what issue 18 promises
                say(f"expected 1 comment with 4 sections and {len(unique)} VirusTotal calls; got {len(comments)} "
                    f"comment(s), {sections} section(s), {calls} call(s)")
                raise SystemExit(1)
            print(f"\n--- incident 4713 has 1 comment with {sections} sections, one per kind; as written: ---")
            print(as_text(comments[0]["properties"]["message"]))
            print(f"\nIncident 4713: {calls} VirusTotal calls for {len(unique)} unique indicators "
                  f"({', '.join(unique_kinds(summary))}) in {INDICATOR_ENTITIES - entities} indicator entities; "
                  "the private address and the tenant's own domain never left.")
            total = len(stack.vt.lookups())
            print(f"VirusTotal calls: {total} for 4 runs with {INDICATOR_ENTITIES} indicator entities (a "
                  f"one-call-per-entity playbook makes {INDICATOR_ENTITIES}); comments: 1 per incident.")
            for title, area in DEMOS:
                print(f"\n=== {title} ===")
                importlib.import_module(f"localdev.demo_{area}").run(stack, host, say)
        finally:
            runner.close()
            host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
