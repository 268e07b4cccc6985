"""Workspace pinning (core/workspace.py): which bodies and ARM paths SENTINEL_WORKSPACES lets through."""

from __future__ import annotations

import pytest

from core.case import normalise
from core.errors import ConfigurationError
from core.workspace import Pinning, WorkspaceNotAllowed
from tests.fixtures import INCIDENT_4711, sample

HOME = INCIDENT_4711.split("/providers/Microsoft.SecurityInsights")[0]
HOME_GUID = "8b7a6c5d-4e3f-4a2b-9c1d-0e1f2a3b4c5d"
OTHER = HOME.replace("law-sentinel-prod", "law-other")


def pinned(*values: str, local_mode: bool = False) -> Pinning:
    return Pinning.from_values(values, local_mode=local_mode)


def test_listed_workspace_passes_in_any_casing():
    pinned(HOME.upper()).check_case(normalise(sample("incident-trigger.json")))
    pinned(HOME).check_path(INCIDENT_4711.lower() + "/comments/x")


@pytest.mark.parametrize("name", ["incident-trigger.json", "entity-trigger-ip.json", "entity-trigger-host.json"])
def test_other_workspaces_are_refused_naming_the_setting(name):
    with pytest.raises(WorkspaceNotAllowed, match="SENTINEL_WORKSPACES") as refused:
        pinned(OTHER).check_case(normalise(sample(name)))
    assert refused.value.status == 403


def test_alert_bodies_match_by_guid_or_resource_group():
    alert = normalise(sample("alert-trigger.json"))
    pinned(HOME_GUID).check_case(alert)
    pinned(HOME).check_case(alert)  # no workspace name in an alert body: subscription + resource group
    with pytest.raises(WorkspaceNotAllowed):
        pinned(HOME.replace("rg-sentinel-prod", "rg-other")).check_case(alert)


def test_an_arm_path_outside_the_listed_workspaces_is_refused():
    with pytest.raises(WorkspaceNotAllowed):
        pinned(OTHER).check_path(INCIDENT_4711)
    with pytest.raises(WorkspaceNotAllowed):
        pinned(HOME).check_path("/subscriptions/x/providers/Microsoft.Authorization/roleAssignments")


def test_empty_setting_pins_nothing_locally_and_refuses_everything_elsewhere():
    pinned(local_mode=True).check_case(normalise(sample("incident-trigger.json")))
    with pytest.raises(WorkspaceNotAllowed, match="SENTINEL_WORKSPACES is not set"):
        pinned(local_mode=False).check_case(normalise(sample("incident-trigger.json")))
    with pytest.raises(WorkspaceNotAllowed, match="not set"):
        pinned(local_mode=False).check_path(INCIDENT_4711)


def test_a_malformed_entry_is_a_configuration_error_naming_the_setting():
    with pytest.raises(ConfigurationError, match="SENTINEL_WORKSPACES"):
        pinned(HOME, "law-sentinel-prod")
