"""VirusTotal API v3 client for every indicator kind, and the verdict derived from a report.

One look-up per indicator (docs.virustotal.com/reference):
- IP address: ``GET /api/v3/ip_addresses/{ip}`` (ip-info);
- file: ``GET /api/v3/files/{hash}`` with its SHA-256, SHA-1 or MD5 (file-info); the object's id is its SHA-256;
- URL: ``GET /api/v3/urls/{id}``, the id being the URL in unpadded URL-safe base64 ("URL identifiers": the
  API canonicalises it server-side); the object's id is the canonical URL's SHA-256, which the GUI link uses;
- domain: ``GET /api/v3/domains/{domain}`` (domain-info).
A 404 ``NotFoundError`` means VirusTotal has no report: the verdict is "unknown". The pack never submits
anything for scanning (``POST /urls``, ``POST /files``): that spends quota and discloses the URL or file.

The verdict rule is data (``VerdictThresholds``), overridable by settings, the same for every kind:
- ``malicious``  when at least ``malicious`` engines say malicious (default 2);
- ``suspicious`` when at least ``suspicious`` engines say malicious or suspicious (default 1);
- ``harmless``   when engines analysed it and none of the above;
- ``unknown``    when VirusTotal has no analysis of it.
A single engine is often a false positive, hence the default of two for "malicious".
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, fields
from typing import Any

import requests

from core.errors import ConfigurationError, DownstreamError
from core.http import call, error_code_of, retry_after_seconds
from enrichment.indicators import Indicator

log = logging.getLogger(__name__)

GUI = "https://www.virustotal.com/gui"
VERDICTS = ("malicious", "suspicious", "harmless", "unknown")  # worst first
STATS = ("malicious", "suspicious", "harmless", "undetected", "timeout")
# kind -> (API collection, GUI path)
ENDPOINTS = {"ip": ("ip_addresses", "ip-address"), "file": ("files", "file"), "url": ("urls", "url"),
             "domain": ("domains", "domain")}
# The facts each kind's comment row shows, taken from the report's attributes: (attribute, length kept).
DETAILS: dict[str, tuple[tuple[str, int], ...]] = {
    "ip": (("country", 8), ("as_owner", 200), ("asn", 16), ("network", 64)),
    "file": (("meaningful_name", 200), ("type_description", 100), ("size", 16)),
    "url": (("title", 200), ("last_final_url", 500), ("last_http_response_code", 8)),
    "domain": (("registrar", 200), ("creation_date", 16)),
}


def api_id(indicator: Indicator) -> str:
    """The id VirusTotal's API takes for the indicator."""
    if indicator.kind == "url":
        return base64.urlsafe_b64encode(indicator.value.encode()).decode().rstrip("=")
    return indicator.value


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
class Verdict:
    """What the pack keeps of a VirusTotal report (and caches), for any indicator kind."""

    kind: str
    value: str
    verdict: str
    malicious: int = 0
    suspicious: int = 0
    harmless: int = 0
    undetected: int = 0
    timeout: int = 0
    reputation: int | None = None
    last_analysis_date: int | None = None
    vt_id: str | None = None  # VirusTotal's object id (a URL's is the SHA-256 its GUI link needs)
    details: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def link(self) -> str | None:
        path = ENDPOINTS[self.kind][1]
        target = self.vt_id or (None if self.kind == "url" else self.value)
        return f"{GUI}/{path}/{target}" if target else None

    def detail(self, name: str) -> Any:
        return dict(self.details).get(name)

    @property
    def engines(self) -> int:
        return self.malicious + self.suspicious + self.harmless + self.undetected + self.timeout

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer's item: kind, value, verdict, counts, link and the kind's details (an IP's also under
        its old keys: ``ip``, ``country``, ``as_owner``, ``asn``, ``network``)."""
        # Fields read directly, not through ``asdict`` (a deep copy per field: 16 ms of a 200-IP run's CPU).
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("details", "vt_id")}
        data |= dict(self.details)
        data["link"] = self.link
        if self.kind == "ip":
            data = {"ip": self.value, **data}
        return data

    def to_cache(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return data | {"details": [list(pair) for pair in self.details]}

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> Verdict:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "details"}
        return cls(**known, details=tuple((str(k), v) for k, v in data.get("details") or ()))


class QuotaExceeded(Exception):
    """VirusTotal answered 429: the key's per-minute or daily quota is used up."""

    def __init__(self, code: str, retry_after: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _detail(value: Any, length: int) -> Any:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value)[:length] if isinstance(value, str) else None
    return text or None


def verdict_from_report(indicator: Indicator, body: Any, thresholds: VerdictThresholds) -> Verdict:
    data = body.get("data") if isinstance(body, dict) else None
    data = data if isinstance(data, dict) else {}
    attributes = data.get("attributes") if isinstance(data.get("attributes"), dict) else {}
    raw_stats = attributes.get("last_analysis_stats") if isinstance(attributes.get("last_analysis_stats"), dict) \
        else {}
    stats = {k: _int(raw_stats.get(k)) for k in STATS}
    reputation, analysed = attributes.get("reputation"), attributes.get("last_analysis_date")
    details = tuple((name, value) for name, length in DETAILS[indicator.kind]
                    if (value := _detail(attributes.get(name), length)) is not None)
    vt_id = data.get("id") if isinstance(data.get("id"), str) and len(data["id"]) <= 128 else None
    return Verdict(
        kind=indicator.kind, value=indicator.value, verdict=thresholds.classify(stats),
        reputation=reputation if isinstance(reputation, int) and not isinstance(reputation, bool) else None,
        last_analysis_date=analysed if isinstance(analysed, int) and not isinstance(analysed, bool) else None,
        vt_id=vt_id, details=details, **stats)


class VirusTotalClient:
    """``lookup(indicator)`` -> Verdict; raises QuotaExceeded, ConfigurationError or DownstreamError."""

    def __init__(self, session: requests.Session, api_key: str, endpoint: str,
                 thresholds: VerdictThresholds = VerdictThresholds()) -> None:
        self.session = session
        self._api_key = api_key
        self.endpoint = endpoint.rstrip("/")
        self.thresholds = thresholds
        self._calls = 0
        self._lock = threading.Lock()  # look-ups run side by side: count them exactly

    def __repr__(self) -> str:  # never show the key
        return f"VirusTotalClient(endpoint={self.endpoint!r})"

    @property
    def calls(self) -> int:
        return self._calls

    def lookup(self, indicator: Indicator) -> Verdict:
        with self._lock:
            self._calls += 1
        url = f"{self.endpoint}/api/v3/{ENDPOINTS[indicator.kind][0]}/{api_id(indicator)}"
        response = call(self.session, "GET", url, service="VirusTotal", headers={"x-apikey": self._api_key},
                        passthrough=(429,))
        code = error_code_of(response)
        if response.status_code == 429:  # the key's per-minute or daily quota is used up
            hint = retry_after_seconds(response) if "Retry-After" in response.headers else None
            raise QuotaExceeded(code or "QuotaExceededError", hint)
        if response.status_code == 200:
            try:
                return verdict_from_report(indicator, response.json(), self.thresholds)
            except ValueError:
                raise DownstreamError("VirusTotal answered with a body that is not JSON") from None
        if response.status_code == 404 and code == "NotFoundError":  # VirusTotal knows nothing of it
            return Verdict(indicator.kind, indicator.value, "unknown")
        if response.status_code == 404:  # not VirusTotal's answer (a proxy, a wrong path): never cache "unknown"
            raise DownstreamError(f"VirusTotal answered HTTP 404 without NotFoundError ({code or 'no error code'}); "
                                  "check VIRUSTOTAL_ENDPOINT")
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"VirusTotal rejected VIRUSTOTAL_API_KEY ({code or response.status_code}); "
                "check the Key Vault secret", code="VirusTotalKeyRejected")
        if response.status_code == 400:  # InvalidArgumentError: not a value VirusTotal accepts
            return Verdict(indicator.kind, indicator.value, "unknown")
        raise DownstreamError(f"VirusTotal answered HTTP {response.status_code} {code}".rstrip())
