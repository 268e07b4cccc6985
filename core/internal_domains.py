"""Internal domains: the tenant's own names, which never leave it as an indicator (``INTERNAL_DOMAINS``).

One rule for every area (issue #18): enrichment never sends them to VirusTotal, response never blocks them in
Defender (a block of the tenant's own domain would cut every device off from it). By default the tenant's
verified domains count as internal, read once per process (and again after six hours) through Microsoft Graph
``GET /v1.0/domains`` (application permission Domain.Read.All: Learn, "List domains"), following
``@odata.nextLink``; the setting adds names (and ``INTERNAL_DOMAINS_FROM_GRAPH=false`` turns the Graph read
off). A name is internal when it equals one of them or lies under it.

When the list cannot be read, nothing is guessed: a refusal (401/403: the permission is missing) makes every
domain and URL of the run internal-by-doubt, with a reason that names the permission, so an unconfigured
deployment never leaks (or blocks) a name; a transient failure (5xx, timeout) fails the run with a status the
Logic App retries. ``reason`` says why a name is internal, without saying what the caller does about it.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

import requests

from core.credentials import GRAPH_SCOPE, TokenProvider
from core.errors import DownstreamError
from core.http import call, error_code_of

log = logging.getLogger(__name__)

REFRESH_SECONDS = 6 * 3600
MAX_PAGES = 20


class DomainsUnreadable(Exception):
    """Graph refused to list the tenant's domains (a missing permission): a reason, not a retry."""


class TenantDomains:
    """The tenant's verified domains through Graph, read at most once per ``REFRESH_SECONDS`` per process."""

    def __init__(self, session: requests.Session, tokens: TokenProvider, graph_endpoint: str,
                 clock=time.monotonic) -> None:
        self.session = session
        self.tokens = tokens
        self.endpoint = graph_endpoint.rstrip("/")
        self.clock = clock
        self._lock = threading.Lock()
        self._domains: frozenset[str] | None = None
        self._read_at = 0.0

    def get(self) -> frozenset[str]:
        with self._lock:  # one request at a time: concurrent runs wait for the first one's answer
            if self._domains is None or self.clock() - self._read_at > REFRESH_SECONDS:
                self._domains = self._read()
                self._read_at = self.clock()
            return self._domains

    def _read(self) -> frozenset[str]:
        found: set[str] = set()
        url: str | None = f"{self.endpoint}/v1.0/domains?$select=id,isVerified"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = call(self.session, "GET", url, service="Microsoft Graph",
                            headers={"Authorization": self.tokens.bearer(GRAPH_SCOPE)})
            if response.status_code in (401, 403):
                raise DomainsUnreadable(error_code_of(response) or f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise DownstreamError(f"Microsoft Graph answered HTTP {response.status_code} listing the tenant's "
                                      "domains", code="GraphDomainsUnavailable")
            try:
                page = response.json()
            except ValueError:
                raise DownstreamError("Microsoft Graph answered the domain list with a body that is not JSON") \
                    from None
            found |= {str(d["id"]).lower().rstrip(".") for d in page.get("value") or ()
                      if isinstance(d, dict) and d.get("id") and d.get("isVerified")}
            url = page.get("@odata.nextLink")
            if url and urlsplit(url).netloc != urlsplit(self.endpoint).netloc:
                raise DownstreamError("Microsoft Graph answered a nextLink to another host; not followed")
        log.info("the tenant has %d verified domains", len(found))
        return frozenset(found)


class InternalDomains:
    """``reason(domain)``: why a name is internal, or None. Configured names, then the tenant's (lazily)."""

    def __init__(self, configured: frozenset[str], tenant: TenantDomains | None) -> None:
        self.configured = frozenset(d.lower().strip(".") for d in configured if d.strip("."))
        self.tenant = tenant
        self._tenant_problem: str | None = None

    def reason(self, domain: str) -> str | None:
        name = domain.lower().strip(".")
        if match := under(name, self.configured):
            return f"internal domain ({match}, INTERNAL_DOMAINS)"
        if self.tenant is None:
            return None
        if self._tenant_problem is None:
            try:
                tenant = self.tenant.get()
            except DomainsUnreadable as refused:
                self._tenant_problem = (f"the tenant's verified domains cannot be read ({refused}): grant the "
                                        "function Domain.Read.All, or set INTERNAL_DOMAINS and "
                                        "INTERNAL_DOMAINS_FROM_GRAPH=false")
                log.error("internal domains: %s", self._tenant_problem)
            else:
                match = under(name, tenant)
                return f"the tenant's own domain ({match})" if match else None
        return self._tenant_problem


def under(name: str, domains: frozenset[str]) -> str | None:
    """The listed domain ``name`` equals or lies under, if any."""
    labels = name.split(".")
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate in domains:
            return candidate
    return None


_TENANT: TenantDomains | None = None
_TENANT_LOCK = threading.Lock()


def tenant_domains(session: requests.Session, tokens: TokenProvider, graph_endpoint: str) -> TenantDomains:
    """The process-wide reader (its list is read once and shared by every run)."""
    global _TENANT
    with _TENANT_LOCK:
        if _TENANT is None or _TENANT.endpoint != graph_endpoint.rstrip("/"):
            _TENANT = TenantDomains(session, tokens, graph_endpoint)
        return _TENANT


def from_settings(settings, session: requests.Session, tokens: TokenProvider) -> InternalDomains:
    """The rule as the settings configure it: ``INTERNAL_DOMAINS`` plus (``INTERNAL_DOMAINS_FROM_GRAPH``) the
    tenant's verified domains."""
    tenant = None
    if bool(settings["INTERNAL_DOMAINS_FROM_GRAPH"]):
        tenant = tenant_domains(session, tokens, str(settings["GRAPH_ENDPOINT"]))
    return InternalDomains(frozenset(settings["INTERNAL_DOMAINS"] or ()), tenant)


__all__ = ["DomainsUnreadable", "InternalDomains", "TenantDomains", "from_settings", "tenant_domains", "under"]
