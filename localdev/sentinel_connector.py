"""The Microsoft Sentinel Logic Apps connector (``azuresentinel``) on loopback, backed by the ARM emulator.

A playbook's Sentinel connection does two things the local playbook runner needs:

- its **triggers** hand the Logic App a body. :meth:`SentinelConnector.trigger_problem` says whether a body is
  one the trigger at a path hands over: ``/incident-creation`` the incident envelope, ``/subscribe`` the flat
  alert, ``/entity/<type>`` an ``Entity`` of that type's kind with ``IncidentArmID`` (null outside an
  incident). The runner asks it before a run (``PlaybookRunner(..., connectors=connector.connectors())``).
- its **actions** call Sentinel as the playbook's own identity. Served here: **"Alert - Get incident"**,
  ``GET /Incidents/subscriptions/{sub}/resourceGroups/{rg}/workspaces/{workspaceId}/alerts/{alertId}``, which
  answers the incident resource that holds the alert, as ARM serves it (``id``, ``name``, ``etag``, ``type``,
  ``properties``: the templates read ``body('Alert_-_Get_incident')?['id']`` and ``?['properties']?
  ['incidentNumber']``). Any other operation is a 404 naming it.

How the incident is found, locally: Sentinel knows which incident holds an alert; this stand-in searches the
incidents it was told Sentinel created (:meth:`incident_for_alert`, :meth:`track`). For each one in the alert's
workspace it lists the incident's alerts through the ARM emulator (``Incidents_ListAlerts``) with a token of the
playbook's managed identity, and the incident whose alert has that ``systemAlertId`` (or name) is read through ARM
(``Incidents_Get``) and answered. ``{workspaceId}`` is the Log Analytics workspace GUID of the alert body, which
``workspaces`` maps to the workspace's ARM name. An alert no incident holds, or an unknown workspace, is 404
``NotFound`` (modelled: no public sample shows the connector's answer); ARM's own errors (401, 403, 404, 429 with
``Retry-After``, 5xx) are passed on as the connector relays its backend's status, so the runner's retry policy
sees them. Sources, one line each, in docs/emulators.md.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import ARM_AUDIENCE, EntraEmulator
from localdev.emulators.sentinel_arm import API_VERSION, SentinelArmEmulator
from localdev.playbooks import LOCAL_SENTINEL_CONNECTION

__all__ = ["DEFAULT_WORKSPACES", "PLAYBOOK_IDENTITY", "SentinelConnector", "security_alert"]

# The client id the emulated playbooks' managed identity gets tokens as (a Logic App's system-assigned identity).
PLAYBOOK_IDENTITY = "6c1d2e3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f"
# Log Analytics workspace GUID (customerId) -> ARM workspace name: the samples' workspace (``workspaceId`` and
# ``workspaceInfo.WorkspaceName`` of tests/fixtures/incident-trigger.json, ``WorkspaceId`` of alert-trigger.json).
DEFAULT_WORKSPACES = {"8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d": "law-sentinel-prod"}
# Which entity kind each entity-trigger type hands over (infra/playbooks/triggers/entity.json, with its sources).
ENTITY_KINDS: dict[str, str] = json.loads(
    (Path(__file__).resolve().parents[1] / "infra" / "playbooks" / "triggers" / "entity.json").read_text()
)["entityKinds"]
_GET_INCIDENT = (r"/Incidents/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/workspaces/(?P<ws>[^/]+)"
                 r"/alerts/(?P<alert>[^/]+)")
# alert trigger body (PascalCase) -> SecurityAlert entity properties (camelCase), EntityTypes.json SecurityAlert.
_ALERT_PROPERTIES = {
    "SystemAlertId": "systemAlertId", "AlertDisplayName": "alertDisplayName", "Description": "description",
    "Severity": "severity", "Status": "status", "AlertType": "alertType", "ProductName": "productName",
    "ProductComponentName": "productComponentName", "VendorName": "vendorName", "ProviderAlertId": "providerAlertId",
    "ConfidenceLevel": "confidenceLevel", "StartTimeUtc": "startTimeUtc", "EndTimeUtc": "endTimeUtc",
    "ProcessingEndTime": "processingEndTime", "TimeGenerated": "timeGenerated", "RemediationSteps": "remediationSteps",
    "ExtendedProperties": "additionalData",
}


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def _workspace_prefix(sub: str, rg: str, workspace: str) -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{workspace}"
            "/providers/Microsoft.SecurityInsights")


def security_alert(alert: dict, workspace_prefix: str) -> dict:
    """The ARM ``SecurityAlert`` entity of an alert trigger body (what ``Incidents_ListAlerts`` lists)."""
    properties = {target: alert[source] for source, target in _ALERT_PROPERTIES.items() if source in alert}
    properties["friendlyName"] = alert.get("AlertDisplayName") or alert["SystemAlertId"]
    return {"id": f"{workspace_prefix}/Entities/{alert['SystemAlertId']}", "name": alert["SystemAlertId"],
            "type": "Microsoft.SecurityInsights/Entities", "kind": "SecurityAlert", "properties": properties}


class SentinelConnector(Emulator):
    """The ``azuresentinel`` connection of the local playbooks: its triggers' bodies and "Alert - Get incident"."""

    name = "sentinel-connector"

    def __init__(self, arm: SentinelArmEmulator, entra: EntraEmulator, *, identity: str = PLAYBOOK_IDENTITY,
                 workspaces: dict[str, str] | None = None, connection_id: str = LOCAL_SENTINEL_CONNECTION,
                 **kw) -> None:
        super().__init__(**kw)
        self.arm = arm
        self.entra = entra
        self.identity = identity
        self.workspaces = {k.lower(): v for k, v in (workspaces or DEFAULT_WORKSPACES).items()}
        self.connection_id = connection_id
        self._tracked: list[str] = []
        self._state = threading.Lock()
        self._token: tuple[str, float] | None = None
        self.route("GET", _GET_INCIDENT, self._alert_get_incident)

    def reset(self) -> None:
        super().reset()
        with self._state:
            self._tracked.clear()

    def connectors(self) -> dict[str, SentinelConnector]:
        """``PlaybookRunner(..., connectors=...)``: this stand-in for the connection ``bicep_parameters`` names."""
        return {self.connection_id: self}

    # -- what Sentinel did before the playbook runs (test and demo set-up) ----------------------------------
    def track(self, incident_id: str) -> str:
        """An incident Sentinel holds (e.g. seeded with ``arm.seed_from_trigger``): searched for alerts."""
        with self._state:
            if incident_id.lower() not in (known.lower() for known in self._tracked):
                self._tracked.append(incident_id)
        return incident_id

    def incident_for_alert(self, alert: dict, *, name: str | None = None) -> str:
        """Sentinel creates the incident of an alert (an analytics rule with incident creation on): the incident,
        holding the alert, is stored in the ARM emulator and tracked; returns its ARM id."""
        workspace = self.workspaces.get(str(alert.get("WorkspaceId", "")).lower())
        if workspace is None:
            raise KeyError(f"the alert's WorkspaceId {alert.get('WorkspaceId')!r} is not a workspace of this connector")
        prefix = _workspace_prefix(alert["WorkspaceSubscriptionId"], alert["WorkspaceResourceGroup"], workspace)
        incident_id = f"{prefix}/Incidents/{name or uuid.uuid4()}"
        properties = {"title": alert.get("AlertDisplayName") or "Alert", "severity": alert.get("Severity", "Medium"),
                      "status": "New", "description": alert.get("Description", "")}
        self.arm.seed_incident(incident_id, properties, alerts=[security_alert(alert, prefix)])
        return self.track(incident_id)

    # -- triggers ------------------------------------------------------------------------------------------
    def trigger_problem(self, path: str, body: Any) -> str | None:
        """Why the Sentinel trigger at ``path`` never hands over ``body`` (None when it does)."""
        if path == "/incident-creation":
            if not (isinstance(body, dict) and isinstance(body.get("object"), dict)):
                return "the incident trigger hands over the incident envelope ('object', 'workspaceInfo', ...)"
            return None
        if path == "/subscribe":
            if not (isinstance(body, dict) and body.get("SystemAlertId")):
                return "the alert trigger hands over the alert ('SystemAlertId', 'Entities', 'WorkspaceId', ...)"
            return None
        if path.startswith("/entity/"):
            kind = ENTITY_KINDS.get(path.removeprefix("/entity/"))
            if kind is None:
                return f"{path} is not an entity trigger modelled here ({', '.join(ENTITY_KINDS)})"
            entity = body.get("Entity") if isinstance(body, dict) else None
            if not isinstance(entity, dict) or "IncidentArmID" not in body:
                return "the entity trigger hands over {'Entity': {...}, 'IncidentArmID': <incident id or null>}"
            if str(entity.get("kind", "")).lower() != kind.lower():
                return (f"Sentinel offers this playbook only for {kind} entities, and this entity is a "
                        f"{entity.get('kind')!r}")
            return None
        return f"{path} is not a Microsoft Sentinel trigger"

    # -- "Alert - Get incident" ------------------------------------------------------------------------
    def _alert_get_incident(self, req: Request) -> Response:
        p = req.params
        workspace = self.workspaces.get(p["ws"].lower())
        if workspace is None:
            return _error(404, "NotFound", f"Workspace '{p['ws']}' was not found.")
        prefix = _workspace_prefix(p["sub"], p["rg"], workspace).lower()
        with self._state:
            candidates = [i for i in self._tracked if i.lower().startswith(prefix + "/incidents/")]
        for incident_id in candidates:
            listed = self._arm_call("POST", f"{incident_id}/alerts")
            if listed.status_code == 404:
                continue  # deleted since: not this one
            if listed.status_code != 200:
                return self._relay(listed)
            if any(self._is(alert, p["alert"]) for alert in listed.json().get("value") or ()):
                return self._relay(self._arm_call("GET", incident_id))
        return _error(404, "NotFound", f"No incident holds the alert '{p['alert']}'.")

    def _arm_call(self, method: str, path: str) -> requests.Response:
        """One ARM request as the playbook's identity; a refused token is renewed once, as a connector does."""
        for attempt in (1, 2):
            answer = requests.request(method, f"{self.arm.url}{quote(path)}", params={"api-version": API_VERSION},
                                      headers={"Authorization": f"Bearer {self._arm_token(renew=attempt > 1)}"},
                                      timeout=30)
            if answer.status_code != 401:
                break
        return answer

    @staticmethod
    def _is(alert: Any, alert_id: str) -> bool:
        if not isinstance(alert, dict):
            return False
        system_id = (alert.get("properties") or {}).get("systemAlertId") or alert.get("name") or ""
        return str(system_id).lower() == alert_id.lower()

    @staticmethod
    def _relay(answer: requests.Response) -> Response:
        headers = {k: v for k, v in answer.headers.items() if k.lower() == "retry-after"}
        try:
            body: Any = answer.json()
        except ValueError:
            body = answer.text
        return Response(answer.status_code, body, headers)

    def _arm_token(self, *, renew: bool = False) -> str:
        """A token of the playbook's managed identity for ARM, from the Entra emulator's token endpoint."""
        with self._state:
            if self._token and self._token[1] > time.time() + 60 and not renew:
                return self._token[0]
        answer = requests.get(self.entra.endpoint, params={"api-version": "2019-08-01", "resource": ARM_AUDIENCE,
                                                           "client_id": self.identity},
                              headers={"X-IDENTITY-HEADER": self.entra.identity_header}, timeout=30)
        answer.raise_for_status()
        token = answer.json()
        with self._state:
            self._token = (token["access_token"], float(token["expires_on"]))
        return token["access_token"]
