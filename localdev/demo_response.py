"""The isolation playbook in ``make demo``: Defender for Endpoint isolates the incident's machine, the Logic App
polls the function until the machine action is Succeeded, and a rerun changes nothing.

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
SAMPLE = ROOT / "tests" / "fixtures" / "incident-trigger.json"
NUMBER = 4901


def _incident() -> dict:
    """The sample incident under its own id and number, with its Host entity (ws-fin-0042, MdatpDeviceId)."""
    body = json.loads(SAMPLE.read_text())
    guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo-response-{NUMBER}"))
    obj = body["object"]
    obj["id"] = obj["id"].rsplit("/", 1)[0] + "/" + guid
    obj["name"] = guid
    props = obj["properties"]
    props["incidentNumber"] = NUMBER
    props["title"] = "Ransomware behaviour on ws-fin-0042"
    props["relatedEntities"] = [e for e in props["relatedEntities"] if e["kind"] == "Host"]
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


if __name__ == "__main__":
    from localdev.demo import standalone

    standalone(run)
