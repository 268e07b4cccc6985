"""What an enrichment run may send to VirusTotal: the indicators of a Case, cleaned, and what it skips.

Kinds (``KINDS``, in the order the comment shows them): IP addresses, files (by hash), URLs, domains.
Rules, so that nothing internal or secret leaves the tenant (issue #18, item 1):
- IPs: private, loopback, link-local, CGNAT, ... and IPv6 wrappers of those are skipped (ip_filter.py).
- Files: one per File entity, however many hashes it carries; the SHA-256 is looked up when present.
- URLs lose their userinfo (``user:password@``), query string and fragment (tokens, signatures) before any
  look-up; with ``VIRUSTOTAL_URL_LOOKUP=domain`` only the host is sent, as a domain (or an IP). A URL on an
  internal domain, or on a private address, is skipped. A URL VirusTotal has never seen is "unknown": it is
  never submitted for scanning.
- Domains come from DnsResolution entities and, with ``VIRUSTOTAL_DOMAINS_FROM_URLS``, from URL hosts; never
  from Host ``dnsDomain`` or UPN suffixes. A domain under ``INTERNAL_DOMAINS`` (by default the tenant's
  verified domains, core/internal_domains.py, plus the setting) is skipped with the reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.case import Case, parse_ip
from core.verdicts import clean_url
from enrichment.ip_filter import skip_reason

KINDS = ("ip", "file", "url", "domain")
SECTIONS = {"ip": "IP addresses", "file": "Files", "url": "URLs", "domain": "Domains"}
ENTITY_KINDS = {"ip": "ip", "filehash": "file", "file": "file", "url": "url", "dnsresolution": "domain"}


@dataclass(frozen=True)
class Indicator:
    """One thing to look up: its kind and the exact value sent (a URL already cleaned)."""

    kind: str  # one of KINDS
    value: str
    label: str = ""  # how the comment names it, when not by its value (a file's name)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"

    @classmethod
    def from_key(cls, key: str) -> Indicator:
        """``kind:value``; a bare address is an IP (messages queued before other kinds existed)."""
        kind, _, value = key.partition(":")
        if kind in KINDS and value:
            return cls(kind, value)
        return cls("ip", key)


@dataclass
class Selection:
    """The indicators and skipped rows of a run, each once, in the order first seen (sets beside the lists: an
    incident of a few hundred entities made the membership scans quadratic, 13 ms of a 200-IP run's CPU)."""

    indicators: list[Indicator] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, value, reason)
    _keys: set[str] = field(default_factory=set, repr=False)
    _skips: set[tuple[str, str, str]] = field(default_factory=set, repr=False)

    def add(self, indicator: Indicator) -> None:
        if indicator.key not in self._keys:
            self._keys.add(indicator.key)
            self.indicators.append(indicator)

    def skip(self, kind: str, value: str, reason: str) -> None:
        if (kind, value, reason) not in self._skips:
            self._skips.add((kind, value, reason))
            self.skipped.append((kind, value, reason))


class Policy:
    """Turns a Case into the indicators a run may look up, and the rows it skips."""

    def __init__(self, internal: Callable[[str], str | None], *, url_lookup: str = "url",
                 domains_from_urls: bool = False) -> None:
        self.internal = internal  # domain -> why it is internal, or None
        self.url_lookup = url_lookup
        self.domains_from_urls = domains_from_urls

    def select(self, case: Case) -> Selection:
        chosen = Selection()
        for ip in case.ips:
            self._ip(chosen, ip.address, "ip")
        for item in case.skipped:
            kind = ENTITY_KINDS.get(item.kind)
            if kind:
                chosen.skip(kind, item.value, item.reason)
        for file in case.files:
            chosen.add(Indicator("file", file.value, file.name or ""))
        for url in case.urls:
            self._url(chosen, url.url)
        for domain in case.domains:
            self._domain(chosen, domain.domain, "domain")
        return chosen

    def _ip(self, chosen: Selection, address: str, kind: str, shown: str | None = None) -> None:
        reason = skip_reason(address)
        if reason:
            chosen.skip(kind, shown or address, reason)
        else:
            chosen.add(Indicator("ip", address))

    def _domain(self, chosen: Selection, domain: str, kind: str, shown: str | None = None) -> bool:
        reason = self.internal(_ascii(domain))
        if reason:
            chosen.skip(kind, shown or domain, reason)
            return False
        if kind == "domain":
            chosen.add(Indicator("domain", domain))
        return True

    def _url(self, chosen: Selection, raw: str) -> None:
        cleaned = clean_url(raw)
        host = urlsplit(cleaned).hostname or ""
        address = parse_ip(host)
        if address is not None:  # a URL on an address: the address decides whether it may leave
            if skip_reason(address):
                chosen.skip("url", cleaned, f"on {address}: {skip_reason(address)}")
                return
        elif not self._domain(chosen, host, "url", cleaned):
            return
        if self.url_lookup == "domain":
            if address is not None:
                chosen.add(Indicator("ip", address))
            else:
                chosen.add(Indicator("domain", _ascii(host)))
            return
        chosen.add(Indicator("url", cleaned))
        if self.domains_from_urls and address is None:
            chosen.add(Indicator("domain", _ascii(host)))


def _ascii(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        try:
            return host.encode("idna").decode("ascii")
        except UnicodeError:
            return host


__all__ = ["KINDS", "SECTIONS", "Indicator", "Policy", "Selection", "clean_url"]
