"""The application permissions the local world gives the function app are the ones infra grants.

The Entra emulator issues the managed identity's tokens with ``DEPLOYED_ROLES``, and the Defender emulator
decides per role (Ti.ReadWrite.All exposes every indicator; Ti.ReadWrite only the app's own). If infra granted
less than the emulators assume, the tests would pass on permissions production lacks: keep the two equal.
Issue #15.1: the pack needs Ti.ReadWrite.All to see the SOC's allow indicators (docs/permissions.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from localdev.emulators.entra import DEPLOYED_ROLES

HOOK = Path(__file__).resolve().parents[2] / "infra" / "hooks" / "postprovision.sh"


def granted() -> set[str]:
    text = HOOK.read_text()
    roles: set[str] = set()
    for name in ("GRAPH_ROLES", "MDE_ROLES"):
        match = re.search(rf'^{name}="([^"$]*)"', text, re.MULTILINE)
        assert match, f"{name} not found in {HOOK.name}"
        roles |= set(match[1].split())
    return roles


def test_infra_grants_what_the_emulators_assume():
    assert granted() == set(DEPLOYED_ROLES)


def test_the_pack_can_see_allow_indicators_it_did_not_create():
    assert "Ti.ReadWrite.All" in granted()
