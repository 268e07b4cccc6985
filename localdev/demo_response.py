"""The response playbooks in ``make demo``: Defender for Endpoint isolates the incident's machine, the Logic App
polls the function until the machine action is Succeeded (and the analyst task appears), and a rerun changes
nothing; then a phishing incident's file, URL and domain, rated by the enrichment, are blocked as Defender
indicators by the block-indicators playbook (the URL without its token), and a rerun writes nothing.

``run(stack, host, say)`` is called by ``localdev/demo.py`` with a started ``Stack``, its ``HostProcess`` and the
demo's timeline printer. It runs ``infra/playbooks/response-isolate-machines.json`` in the local playbook runner
(the asynchronous pattern included) and prints what happened on every side.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "infra" / "playbooks" / "response-isolate-machines.json"
BLOCK_PLAYBOOK = ROOT / "infra" / "playbooks" / "response-block-indicators.json"
SAMPLE = ROOT / "tests" / "fixtures" / "incident-trigger.json"
NUMBER = 4901


def _incident(number: int = NUMBER, title: str = "Ransomware behaviour on ws-fin-0042",
              entities: list[dict] | None = None) -> dict:
    """The sample incident under its own id and number, with its Host entity (ws-fin-0042, MdatpDeviceId) or
    ``entities``."""
    body = json.loads(SAMPLE.read_text())
    guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo-response-{number}"))
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    props = obj["properties"]
    props["incidentNumber"] = number
    props["title"] = title
    props["relatedEntities"] = entities if entities is not None else [
        e for e in props["relatedEntities"] if e["kind"] == "Host"]
    return copy.deepcopy(body)


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&#x23F3;", "⏳").replace("&#x2705;", "✅").split())


def run(stack, host, say: Callable[..., None]) -> None:
    """Isolate the machine of a new incident through the deployed playbook, to Succeeded; then rerun it."""
    say(f"Defender for Endpoint {stack.mde.url}, Microsoft Graph {stack.graph.url}")
    body = _incident()
    incident_id = stack.arm.seed_from_trigger(body)
    machine = body["object"]["properties"]["relatedEntities"][0]["properties"]
    device_id = machine["additionalData"]["MdatpDeviceId"]
    with PlaybookRunner(load_playbook(PLAYBOOK), bicep_parameters(host.url, host.function_key),
                        name="Isolate-MDE-Machines") as runner:
        say(f"Sentinel: incident {NUMBER} created, '{body['object']['properties']['title']}' (host "
            f"{machine['hostName']}, MdatpDeviceId {device_id[:12]}…) -> playbook '{runner.name}'")
        started = time.monotonic()
        result = runner.run(body)
        for line in result.timeline[1:-1]:
            say(f"playbook: {line}", 1)  # the runner shows URLs without their query (keys and signatures travel there)
        action = result["Isolate_machines"]
        if result.status != "Succeeded":
            say(f"playbook run {result.status}: {action.error}", 1)
            raise SystemExit(1)
        (isolate,) = stack.mde.actions(device_id, "Isolate")
        say(f"Defender: machine action {isolate['id'][:8]}… {isolate['type']} ({isolate['scope']}) {isolate['status']} "
            f"after {action.polls} poll(s), paced by Retry-After ({time.monotonic() - started:.1f}s here, minutes "
            "in Azure); machine isolated: "
            f"{stack.mde.isolation(device_id) is not None}", 1)
        say(f"Defender: comment on the action: '{isolate['requestorComment'][:90]}…'", 2)
        say("Sentinel: incident rerun (automation rule fires again, or the Logic App retries)")
        again = runner.run(body)
        say(f"playbook: {again.status}; Defender isolate requests in total: "
            f"{len(stack.mde.requests_to('POST', r'/isolate$'))}, Isolate actions: "
            f"{len(stack.mde.actions(device_id, 'Isolate'))} (already isolated: nothing requested twice)", 1)
    for comment in stack.arm.comments(incident_id):
        say(f"comment: {_text(comment['properties']['message'])[:170]}", 2)
    for task in stack.arm.tasks(incident_id):
        say(f"analyst task: '{task['properties']['title']}' ({task['properties']['status']}): "
            f"{task['properties']['description'][:90]}", 2)
    _block_indicators(stack, host, say)


def _block_indicators(stack, host, say: Callable[..., None]) -> None:
    """A phishing incident: the enrichment rates its file, URL and domain; the block-indicators playbook blocks them."""
    digest, site, name = "5d" * 32, "login-micros0ft-verify.example", "cdn-drop.example"
    url = f"https://user:pw@{site}/auth/?session=SECRET-TOKEN"
    entities = [{"kind": "FileHash", "properties": {"algorithm": "SHA256", "hashValue": digest}},
                {"kind": "Url", "properties": {"url": url}},
                {"kind": "DnsResolution", "properties": {"domainName": name}}]
    body = _incident(NUMBER + 1, "Phishing kit delivered by mail", [
        {"id": f"e{i}", "name": f"e{i}", "type": "Microsoft.SecurityInsights/Entities", **e}
        for i, e in enumerate(entities)])
    incident_id = stack.arm.seed_from_trigger(body)
    for value in (digest, f"https://{site}/auth/", name):
        stack.vt.set_report(value, malicious=14, harmless=50)
    say(f"Sentinel: incident {NUMBER + 1} '{body['object']['properties']['title']}' (a file hash, a URL with a "
        "token in its query, a domain) -> enrichment, then playbook 'Block-Indicators'")
    rated = host_post(host, "enrichment/reputation", body)
    verdicts = ", ".join(f"{i['kind']} {i['verdict']}" for i in rated["indicators"])
    say(f"enrichment: {verdicts}", 1)
    with PlaybookRunner(load_playbook(BLOCK_PLAYBOOK), bicep_parameters(host.url, host.function_key),
                        name="Block-Indicators") as runner:
        result = runner.run(body)
        say(f"playbook: {result.status}", 1)
        for indicator in stack.mde.indicators():
            say(f"Defender: indicator {indicator['indicatorType']} {indicator['action']} "
                f"{indicator['indicatorValue']} until {indicator['expirationTime'][:10]}", 2)
        sent = " ".join(r.text for r in stack.mde.requests_to("POST", r"/api/indicators"))
        say(f"the URL's token reached Defender: {'SECRET-TOKEN' in sent}", 2)
        again = runner.run(body)
        say(f"playbook rerun: {again.status}; indicator writes in total: "
            f"{len(stack.mde.requests_to('POST', r'/api/indicators(/import)?$'))} (already blocked: nothing twice)", 1)
    audit = [c for c in stack.arm.comments(incident_id) if "response audit" in c["properties"]["message"]]
    for comment in audit:
        say(f"comment: {_text(comment['properties']['message'])[:170]}", 2)


def host_post(host, route: str, body: dict) -> dict:
    """One call of the function app as a Logic App makes it (its function key in the header)."""
    import requests

    answer = requests.post(f"{host.url}/api/{route}", json=body, headers={"x-functions-key": host.function_key},
                           timeout=60)
    answer.raise_for_status()
    return answer.json()


if __name__ == "__main__":
    from localdev.demo import standalone

    standalone(run)
