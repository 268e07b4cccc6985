"""The tenant's verified domains through Graph (core/internal_domains.py) against the Graph emulator."""

from __future__ import annotations

import pytest

from core.credentials import TokenProvider
from core.errors import DownstreamError
from core.http import build_session
from core.internal_domains import InternalDomains, TenantDomains
from enrichment.service import skip_reason
from localdev.emulators.entra import EntraEmulator
from localdev.emulators.graph import GraphEmulator
from tests.core.test_sentinel import EmulatorCredential


@pytest.fixture(scope="module")
def servers():
    with EntraEmulator() as entra, GraphEmulator(authority=entra) as graph:
        yield entra, graph


@pytest.fixture
def tenant(servers):
    entra, graph = servers
    graph.reset()
    return TenantDomains(build_session(timeout=2, retries=1, backoff=0.01), TokenProvider(EmulatorCredential(entra)),
                         graph.url)


def test_verified_domains_are_read_once_across_pages(servers, tenant):
    _, graph = servers
    graph.directory.page_size = 2
    internal = InternalDomains(frozenset({"lab.example"}), tenant)
    assert "tenant's own domain (contoso.com)" in internal.reason("mail.contoso.com")
    assert "contoso.onmicrosoft.com" in internal.reason("x.contoso.onmicrosoft.com")
    assert internal.reason("fabrikam-pending.com") is None  # not verified: not the tenant's
    assert "INTERNAL_DOMAINS" in internal.reason("a.lab.example")
    assert internal.reason("evil.example") is None and internal.reason("notcontoso.com") is None
    assert len(graph.requests_to("GET", "/v1.0/domains")) == 2  # two pages, one read
    internal.reason("other.contoso.com")
    assert len(graph.requests_to("GET", "/v1.0/domains")) == 2


def test_without_domain_read_all_nothing_leaves(servers, tenant):
    _, graph = servers
    graph.directory.readable = False
    reason = skip_reason(InternalDomains(frozenset(), tenant))("evil.example")
    assert "Domain.Read.All" in reason and "not sent to VirusTotal" in reason


def test_a_graph_outage_is_retried_by_the_logic_app(servers, tenant):
    _, graph = servers
    graph.fail(503, times=5, path="/v1.0/domains")
    with pytest.raises(DownstreamError):
        InternalDomains(frozenset(), tenant).reason("evil.example")
