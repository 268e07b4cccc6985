"""The Logic-App-only reference: Azure-Sentinel's Get-VirusTotalIPReport, simulated on the same emulators.

What it does (Azure/Azure-Sentinel, Solutions/VirusTotal/Playbooks/Get-VirusTotalIPReport/incident-trigger/
azuredeploy.json): "Entities - Get IPs" (the connector reads the trigger body, no API call), then a
``For_each`` over the IPs with no ``runtimeConfiguration``, so the default concurrency of 20 iterations
at a time applies (https://learn.microsoft.com/azure/logic-apps/logic-apps-limits-and-config, For each
concurrency), and in each iteration "Get an IP report" (VirusTotal ``GET /api/v3/ip_addresses/{ip}``),
a Log Analytics "Send Data" and "Add comment to incident (V3)". The simulation makes the VirusTotal call
and the comment (one per IP, as the playbook does) against the same emulators and latency profile as the
pack; the Log Analytics write is left out, which only flatters the reference. Its connector tokens are
warm, as the pack's are in the warm scenarios.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import requests

from bench.limits import LOGIC_APP_FOREACH
from core.concurrency import run_bounded

ARM_AUDIENCE = "https://management.azure.com"
API_VERSION = "2025-09-01"


class ReferencePlaybook:
    """One look-up and one comment per IP, ``LOGIC_APP_FOREACH`` iterations at a time."""

    def __init__(self, stack, vt_key: str) -> None:
        self.stack = stack
        self.vt_key = vt_key
        self.token = stack.entra.issue(ARM_AUDIENCE)
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4,
                                                                 pool_maxsize=LOGIC_APP_FOREACH * 2))

    def _iteration(self, incident_id: str, ip: str) -> int:
        report = self.http.get(f"{self.stack.vt.url}/api/v3/ip_addresses/{quote(ip, safe='')}",
                               headers={"x-apikey": self.vt_key}, timeout=60)
        report.raise_for_status()
        reputation = report.json()["data"]["attributes"].get("reputation")
        comment = self.http.put(
            f"{self.stack.arm.url}{incident_id}/comments/{uuid.uuid4()}?api-version={API_VERSION}",
            json={"properties": {"message": f"<p>Virus Total IP Report found for {ip}<br>Reputation is: "
                                            f"{reputation}</p>"}},
            headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        if comment.status_code >= 400 and comment.status_code != 400:
            comment.raise_for_status()
        return comment.status_code

    def run(self, incident_id: str, ips: list[str]) -> tuple[float, int]:
        """(seconds from the trigger to the last comment, comments Sentinel refused): past 100 comments
        an incident takes no more, so the reference loses the verdicts of a 200-IP incident's last 100."""
        started = time.perf_counter()
        outcomes = run_bounded(lambda ip: self._iteration(incident_id, ip), ips, LOGIC_APP_FOREACH)
        elapsed = time.perf_counter() - started
        return elapsed, sum(1 for outcome in outcomes if outcome.get() == 400)
