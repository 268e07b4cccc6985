"""Call an action as its deployed Logic App does, with the waits compressed.

The bench's concurrency scenario fires triggers the way Sentinel's playbooks call the pack: one Http
action with the deployed retry policy (exponential, count 4, interval PT10S, minimum PT5S; 408, 429
and 5xx retried, ``Retry-After`` honoured) and the asynchronous pattern (202 + ``Location`` polled until
done). ``localdev/playbooks.py`` executes exactly that; ``time_scale`` shrinks every wait so the bench
does not sleep through back-off (a 10 s retry waits 0.1 s at 0.01), and the nominal seconds Azure would
wait are reported beside the measured time.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path

import requests

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook

ROOT = Path(__file__).resolve().parents[1]
# Every deployed playbook calls the pack with this policy (infra/playbooks/*.json); the enrichment one is
# the template: its trigger, parameters and one Http action.
TEMPLATE = ROOT / "infra" / "playbooks" / "enrichment-ip-reputation.json"
TIME_SCALE = 0.01


@dataclass(frozen=True)
class RunOutcome:
    """What one Logic App run of the action did."""

    status: str          # Succeeded | Failed | TimedOut
    final_status: int    # the last HTTP status the action saw (0: none)
    attempts: int        # requests sent, retries included (polls not counted)
    polls: int           # GETs of the 202 Location
    nominal_wait: float  # seconds Azure would have waited (retries and polls)


def definition(route: str) -> dict:
    """The deployed playbook's definition with its one Http action pointed at ``route``."""
    template = load_playbook(TEMPLATE)
    (action,) = template["actions"].values()
    action = copy.deepcopy(action)
    action["inputs"]["uri"] = "@{parameters('functionBaseUrl')}/api/" + route
    return {**template, "actions": {"Call_the_pack": action}}


class LogicAppCaller:
    """Runs the one-action playbook for each trigger body; safe to use from many threads at once."""

    def __init__(self, base_url: str, function_key: str, route: str, *, time_scale: float = TIME_SCALE,
                 seed: int = 4711) -> None:
        self.definition = definition(route)
        self.parameters = bicep_parameters(base_url, function_key)
        self.time_scale = time_scale
        self.seed = seed
        http = requests.Session()
        http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=512))
        self.http = http

    def run(self, body: dict, n: int = 0) -> RunOutcome:
        runner = PlaybookRunner(self.definition, self.parameters, time_scale=self.time_scale, http=self.http,
                                rng=random.Random(self.seed + n), request_timeout=300)
        result = runner.run(body)
        action = result["Call_the_pack"]
        final = (action.raw_outputs or {}).get("statusCode", 0) if isinstance(action.raw_outputs, dict) else 0
        return RunOutcome(action.status, int(final or 0), action.attempts, action.polls, sum(action.waits))
