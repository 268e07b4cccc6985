"""Fixtures of the response tests: a host with guardrails configured (helpers are in helpers.py)."""

from __future__ import annotations

import pytest

from core.credentials import TokenProvider
from localdev.emulators.entra import USER_ASSIGNED_CLIENT_ID, EntraEmulator
from tests.conftest import HostClient

PROTECTED_MACHINES = "dc01.corp.contoso.com,srv-app-07,tag:tier0"
PROTECTED_ACCOUNTS = "breakglass@contoso.com,*-admin@contoso.com"


@pytest.fixture(scope="module")
def guarded(stack):
    """A host with protected machines and accounts (break-glass, admins, a domain controller, Tier 0)."""
    process = stack.host(PROTECTED_MACHINES=PROTECTED_MACHINES, PROTECTED_ACCOUNTS=PROTECTED_ACCOUNTS)
    try:
        yield HostClient(process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def entra():
    """A managed-identity endpoint of its own, for the client tests that run without a host."""
    with EntraEmulator() as server:
        yield server


@pytest.fixture(scope="module")
def tokens(entra):
    """The pack's token provider on azure-identity's ManagedIdentityCredential, pointed at ``entra``."""
    from azure.identity import ManagedIdentityCredential

    env = pytest.MonkeyPatch()
    for name, value in entra.env().items():
        env.setenv(name, value)
    try:
        yield TokenProvider(ManagedIdentityCredential(client_id=USER_ASSIGNED_CLIENT_ID))  # as AZURE_CLIENT_ID in Azure
    finally:
        env.undo()
