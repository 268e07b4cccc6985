"""VirusTotal API v3 client for IP address reports, and the verdict derived from them.

The verdict rule is data (``VerdictThresholds``), overridable by settings:
- ``malicious``  when at least ``malicious`` engines say malicious (default 2);
- ``suspicious`` when at least ``suspicious`` engines say malicious or suspicious (default 1);
- ``harmless``   when engines analysed it and none of the above;
- ``unknown``    when VirusTotal has no analysis of the address.
A single engine is often a false positive, hence the default of two for "malicious".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import requests

from core.errors import ConfigurationError, DownstreamError
from core.http import call, error_code_of, retry_after_seconds

log = logging.getLogger(__name__)

GUI_LINK = "https://www.virustotal.com/gui/ip-address/{ip}"
VERDICTS = ("malicious", "suspicious", "harmless", "unknown")  # worst first


@dataclass(frozen=True)
class VerdictThresholds:
    malicious: int = 2
    suspicious: int = 1

    def classify(self, stats: dict[str, int]) -> str:
        malicious = stats.get("malicious", 0)
        suspicious = stats.get("suspicious", 0)
        if malicious >= max(1, self.malicious):
            return "malicious"
        if malicious + suspicious >= max(1, self.suspicious):
            return "suspicious"
        if sum(stats.values()) > 0:
            return "harmless"
        return "unknown"


@dataclass(frozen=True)
class IpVerdict:
    """What the pack keeps of a VirusTotal IP report (and caches)."""

    ip: str
    verdict: str
    malicious: int = 0
    suspicious: int = 0
    harmless: int = 0
    undetected: int = 0
    timeout: int = 0
    reputation: int | None = None
    country: str | None = None
    as_owner: str | None = None
    asn: int | None = None
    network: str | None = None
    last_analysis_date: int | None = None

    @property
    def link(self) -> str:
        return GUI_LINK.format(ip=self.ip)

    @property
    def engines(self) -> int:
        return self.malicious + self.suspicious + self.harmless + self.undetected + self.timeout

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"link": self.link}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IpVerdict:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class QuotaExceeded(Exception):
    """VirusTotal answered 429: the key's per-minute or daily quota is used up."""

    def __init__(self, code: str, retry_after: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def verdict_from_report(ip: str, body: Any, thresholds: VerdictThresholds) -> IpVerdict:
    attributes = body.get("data", {}).get("attributes", {}) if isinstance(body, dict) else {}
    if not isinstance(attributes, dict):
        attributes = {}
    raw_stats = attributes.get("last_analysis_stats") or {}
    stats = {k: _int(raw_stats.get(k)) for k in ("malicious", "suspicious", "harmless", "undetected", "timeout")}
    reputation = attributes.get("reputation")
    return IpVerdict(
        ip=ip,
        verdict=thresholds.classify(stats),
        reputation=reputation if isinstance(reputation, int) else None,
        country=str(attributes["country"])[:8] if attributes.get("country") else None,
        as_owner=str(attributes["as_owner"])[:200] if attributes.get("as_owner") else None,
        asn=attributes.get("asn") if isinstance(attributes.get("asn"), int) else None,
        network=str(attributes["network"])[:64] if attributes.get("network") else None,
        last_analysis_date=attributes.get("last_analysis_date")
        if isinstance(attributes.get("last_analysis_date"), int) else None,
        **stats,
    )


class VirusTotalClient:
    """``lookup(ip)`` -> IpVerdict; raises QuotaExceeded, ConfigurationError or DownstreamError."""

    def __init__(self, session: requests.Session, api_key: str, endpoint: str,
                 thresholds: VerdictThresholds = VerdictThresholds()) -> None:
        self.session = session
        self._api_key = api_key
        self.endpoint = endpoint.rstrip("/")
        self.thresholds = thresholds
        self.calls = 0

    def __repr__(self) -> str:  # never show the key
        return f"VirusTotalClient(endpoint={self.endpoint!r})"

    def lookup(self, ip: str) -> IpVerdict:
        self.calls += 1
        url = f"{self.endpoint}/api/v3/ip_addresses/{ip}"
        response = call(self.session, "GET", url, service="VirusTotal", headers={"x-apikey": self._api_key},
                        passthrough=(429,))
        code = error_code_of(response)
        if response.status_code == 429:  # the key's per-minute or daily quota is used up
            hint = retry_after_seconds(response) if "Retry-After" in response.headers else None
            raise QuotaExceeded(code or "QuotaExceededError", hint)
        if response.status_code == 200:
            try:
                return verdict_from_report(ip, response.json(), self.thresholds)
            except ValueError:
                raise DownstreamError("VirusTotal answered with a body that is not JSON") from None
        if response.status_code == 404 and code == "NotFoundError":  # VirusTotal knows nothing of it
            return IpVerdict(ip=ip, verdict="unknown")
        if response.status_code == 404:  # not VirusTotal's answer (a proxy, a wrong path): never cache "unknown"
            raise DownstreamError(f"VirusTotal answered HTTP 404 without NotFoundError ({code or 'no error code'}); "
                                  "check VIRUSTOTAL_ENDPOINT")
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"VirusTotal rejected VIRUSTOTAL_API_KEY ({code or response.status_code}); "
                "check the Key Vault secret", code="VirusTotalKeyRejected")
        if response.status_code == 400:
            return IpVerdict(ip=ip, verdict="unknown")  # InvalidArgumentError: not an address VT accepts
        raise DownstreamError(f"VirusTotal answered HTTP {response.status_code} {code}".rstrip())
