"""Pure parts of the sync service: which incident names may reach ServiceNow."""

from __future__ import annotations

import pytest

from core.case import Case, Workspace
from core.errors import BadRequest
from sync.service import incident_key

ID = ("/subscriptions/6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f/resourceGroups/rg/providers/Microsoft.OperationalInsights/"
      "workspaces/law/providers/Microsoft.SecurityInsights/Incidents/")
GUID = "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e"
NOWHERE = Workspace(None, None, None)


def test_the_incident_key_is_the_guid_of_the_arm_id():
    assert incident_key(Case("incident", ID + GUID.upper(), NOWHERE, incident_name=GUID)) == GUID
    assert incident_key(Case("manual", ID + GUID, NOWHERE)) == GUID


@pytest.mark.parametrize(("name", "tail"), [
    ("javascript:gs.sleep(5000)", GUID),  # the body's name is what a query would have used
    (None, "javascript:gs.sleep(5000)"),
    (None, "incident-4711"),
    (None, f"{GUID}^NQcorrelation_display=Microsoft Sentinel"),
])
def test_anything_but_a_guid_is_refused(name, tail):
    with pytest.raises(BadRequest) as refused:
        incident_key(Case("incident", ID + tail, NOWHERE, incident_name=name))
    assert refused.value.code == "UnsafeQueryValue"


def test_no_incident_is_a_400_naming_the_problem():
    with pytest.raises(BadRequest, match="needs an incident"):
        incident_key(Case("alert", None, NOWHERE))
