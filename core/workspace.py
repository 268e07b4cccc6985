"""Actions are pinned to the Sentinel workspaces the deployment names (``SENTINEL_WORKSPACES``).

An ``incidentArmId`` is caller input: without a pin, a body naming an incident in any subscription would
make the function send its managed identity's token there and act on what comes back. The setting lists
workspace ARM ids (``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/
workspaces/{name}``; several for a multi-workspace or MSSP set-up), and may also list Log Analytics
workspace ids (GUIDs).

Where a body's workspace comes from (``Case.workspace``, see core/case.py):
- an incident ARM id (incident trigger ``object.id``, a manual run's or an alert's ``incidentArmId``, an
  entity trigger's ``IncidentArmID``): subscription, resource group and workspace name, matched against the
  listed ARM ids; when the body names an incident, that incident decides, whatever else it says;
- an entity trigger outside an incident: the entity's own ARM id, else the body's ``WorkspaceInfo``;
- an alert trigger without an incident: the body carries ``WorkspaceId`` (GUID), ``WorkspaceSubscriptionId``
  and ``WorkspaceResourceGroup`` but no workspace name. It matches a listed GUID, or a listed ARM id's
  subscription and resource group. Such a run sends nothing to any workspace (comments need an incident id,
  which is checked in full), so resource-group granularity is as much as the body can tell.
A body from which no workspace can be told is refused while pinning is on.

When the setting is empty: with ``LOCAL_MODE`` (the local stack, tests, demos) nothing is pinned; outside
``LOCAL_MODE`` every action is refused with a 403 naming the setting (fail closed: the deployment sets it).
The check runs twice: once per action in ``core.api.run_action`` (before anything is sent anywhere), and in
the Sentinel client for every ARM call (paths that do not start from a trigger body: approvals, the sync's
inbound push, queued work).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from core.case import Case, Workspace
from core.errors import ConfigurationError, Forbidden

SETTING = "SENTINEL_WORKSPACES"
WORKSPACE_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.OperationalInsights"
    r"/workspaces/(?P<ws>[^/]+)/?$", re.IGNORECASE)
# The workspace part at the start of any ARM path under a workspace (incidents, comments, tasks, ...).
ARM_PATH_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.OperationalInsights"
    r"/workspaces/(?P<ws>[^/?#]+)(?:[/?#]|$)", re.IGNORECASE)
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _arm_id(sub: str | None, rg: str | None, ws: str | None) -> str:
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}"
            if sub and rg and ws else "")


class WorkspaceNotAllowed(Forbidden):
    code = "WorkspaceNotAllowed"


@dataclass(frozen=True)
class Pinning:
    """The workspaces the pack may act on; ``enabled`` False = not pinned (LOCAL_MODE with an empty setting)."""

    arm_ids: frozenset[tuple[str, str, str]] = frozenset()  # (subscription, resource group, name), lower-case
    customer_ids: frozenset[str] = frozenset()  # Log Analytics workspace GUIDs, lower-case
    enabled: bool = True

    @classmethod
    def from_values(cls, values: Iterable[str], *, local_mode: bool) -> Pinning:
        arm_ids, guids, bad = set(), set(), []
        for raw in values:
            value = raw.strip().lower()
            if not value:
                continue
            if match := WORKSPACE_ID_RE.match(value):
                arm_ids.add((match["sub"], match["rg"], match["ws"]))
            elif GUID_RE.match(value):
                guids.add(value)
            else:
                bad.append(value[:80])
        if bad:
            raise ConfigurationError(f"setting {SETTING}: {', '.join(bad)} is neither a workspace ARM id "
                                     "(/subscriptions/…/resourceGroups/…/providers/Microsoft.OperationalInsights/"
                                     "workspaces/…) nor a Log Analytics workspace id (GUID)")
        return cls(frozenset(arm_ids), frozenset(guids), enabled=bool(arm_ids or guids) or not local_mode)

    @classmethod
    def from_settings(cls, settings) -> Pinning:
        return cls.from_values(settings[SETTING] or (), local_mode=bool(settings["LOCAL_MODE"]))

    @property
    def configured(self) -> bool:
        return bool(self.arm_ids or self.customer_ids)

    # -- checks ---------------------------------------------------------------------------------
    def check_case(self, case: Case) -> None:
        """Raise WorkspaceNotAllowed (403) unless ``case`` belongs to a listed workspace."""
        if not self.enabled:
            return
        self._require_configured()
        ws = case.workspace
        if case.incident_id or (ws.subscription_id and ws.resource_group and ws.name):
            self._check_arm(ws, what=f"the {case.source} body's workspace")
            return
        if ws.customer_id and ws.customer_id.lower() in self.customer_ids:
            return
        if ws.subscription_id and ws.resource_group:
            place = (ws.subscription_id.lower(), ws.resource_group.lower())
            if any(place == (sub, rg) for sub, rg, _ in self.arm_ids):
                return
            raise WorkspaceNotAllowed(f"the {case.source} body's workspace (subscription {ws.subscription_id[:64]}, "
                                      f"resource group {ws.resource_group[:90]}) is not in {SETTING}")
        if ws.customer_id:
            raise WorkspaceNotAllowed(f"the {case.source} body's workspace {ws.customer_id[:64]} is not in {SETTING}")
        raise WorkspaceNotAllowed(
            f"cannot tell which workspace the {case.source} body belongs to (no incident ARM id, entity ARM id, "
            f"WorkspaceInfo or workspace fields), and {SETTING} pins the pack to its workspaces")

    def check_path(self, path: str) -> None:
        """For the Sentinel client: every ARM path it calls must lie under a listed workspace."""
        if not self.enabled:
            return
        self._require_configured()
        match = ARM_PATH_RE.match(path)
        if match is None:
            raise WorkspaceNotAllowed(f"refusing an ARM call outside any workspace while {SETTING} pins the pack")
        self._check_arm(Workspace(match["sub"], match["rg"], match["ws"]), what="the ARM call's workspace")

    def _check_arm(self, ws: Workspace, *, what: str) -> None:
        key = tuple((part or "").lower() for part in (ws.subscription_id, ws.resource_group, ws.name))
        if key not in self.arm_ids:
            shown = _arm_id(ws.subscription_id, ws.resource_group, ws.name)[:400] or "(incomplete)"
            raise WorkspaceNotAllowed(f"{what} {shown} is not in {SETTING}: the pack acts only on the "
                                      "workspaces the deployment names")

    def _require_configured(self) -> None:
        if not self.configured:
            raise WorkspaceNotAllowed(f"{SETTING} is not set: outside LOCAL_MODE the pack acts on no workspace "
                                      "until the deployment names its Sentinel workspace(s)")


__all__ = ["SETTING", "Pinning", "WorkspaceNotAllowed"]
