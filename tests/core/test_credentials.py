"""core.credentials: one token request per scope however many threads ask at once."""

from __future__ import annotations

import threading

import pytest

from core.credentials import ARM_SCOPE, GRAPH_SCOPE, TokenProvider
from localdev.emulators.entra import EntraEmulator


@pytest.fixture
def entra(monkeypatch):
    with EntraEmulator() as emulator:
        for name, value in emulator.env().items():
            monkeypatch.setenv(name, value)
        yield emulator


def test_concurrent_first_requests_for_one_scope_make_one_token_request(entra):
    from azure.identity import ManagedIdentityCredential

    entra.latency = 0.2  # the first request is still in flight when the others ask
    provider = TokenProvider(ManagedIdentityCredential())
    start = threading.Barrier(8, timeout=30)
    tokens: list[str] = []

    def ask(scope: str) -> None:
        start.wait()
        tokens.append(provider.bearer(scope))

    threads = [threading.Thread(target=ask, args=(ARM_SCOPE if i % 2 else GRAPH_SCOPE,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(tokens) == 8 and len(set(tokens)) == 2
    assert sorted(r.query["resource"] for r in entra.requests_to("GET", "/msi/token")) == [
        "https://graph.microsoft.com", "https://management.azure.com"]
