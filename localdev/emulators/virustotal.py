"""VirusTotal API v3 ``GET /api/v3/ip_addresses/{ip}``, with quotas and documented errors.

Reports are deterministic: set one with ``set_report(ip, malicious=…)`` or let the emulator
derive plausible stats from the address (stable across runs, so the demo and benchmarks
repeat).

Quotas follow the public API: "limited to 500 requests per day and a rate of 4 requests per minute"
(docs.virustotal.com/reference/public-vs-premium-api); "at most 4 requests of any nature in any given
1 minute time frame" (API overview), so the minute is a sliding window; "daily quotas are reset every
day at 00:00 UTC" (the QuotaExceededError entry of docs.virustotal.com/reference/errors). Past either,
429 ``QuotaExceededError``, with no Retry-After (none is documented). ``per_minute=None`` turns a limit
off (a premium key); ``clock`` is injectable, so a test runs an hour of quota in seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections.abc import Callable

from localdev.emulators.base import Emulator, Request, Response


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


class VirusTotalEmulator(Emulator):
    name = "virustotal"

    PUBLIC_PER_MINUTE, PUBLIC_PER_DAY = 4, 500  # the public API's quotas

    def __init__(self, api_keys: tuple[str, ...] = ("vt-test-key",), *, per_minute: int | None = None,
                 per_day: int | None = None, clock: Callable[[], float] = time.time, **kw) -> None:
        super().__init__(**kw)
        self.api_keys = set(api_keys)
        self.per_minute = per_minute
        self.per_day = per_day
        self.clock = clock
        self._reports: dict[str, dict] = {}
        self._unknown: set[str] = set()
        self._served: list[float] = []
        self._count_lock = threading.Lock()
        self.route("GET", r"/api/v3/ip_addresses/(?P<ip>[^/]+)", self._ip_report)

    def reset(self) -> None:
        super().reset()
        with self._count_lock:
            self._served.clear()
        self._reports.clear()
        self._unknown.clear()

    # -- test controls ------------------------------------------------------------------------
    def set_report(self, ip: str, *, malicious: int = 0, suspicious: int = 0, harmless: int = 60,
                   undetected: int = 30, reputation: int = 0, country: str = "NL",
                   as_owner: str = "Example Hosting B.V.", asn: int = 64500) -> None:
        self._reports[ipaddress.ip_address(ip).compressed] = {
            "last_analysis_stats": {"malicious": malicious, "suspicious": suspicious, "harmless": harmless,
                                    "undetected": undetected, "timeout": 0},
            "reputation": reputation, "country": country, "as_owner": as_owner, "asn": asn,
        }

    def set_unknown(self, ip: str) -> None:
        """VirusTotal has never seen the address: 404 NotFoundError."""
        self._unknown.add(ipaddress.ip_address(ip).compressed)

    def lookups(self) -> list[str]:
        """Addresses asked for, in order, whatever the answer (every call a client made)."""
        return [r.path.rsplit("/", 1)[-1] for r in self.requests_to("GET", r"/api/v3/ip_addresses/")]

    # -- contract -----------------------------------------------------------------------------
    def _derived(self, ip: str) -> dict:
        digest = hashlib.sha256(ip.encode()).digest()
        malicious = digest[0] % 16 if digest[1] % 4 == 0 else 0
        suspicious = digest[2] % 3
        return {
            "last_analysis_stats": {"malicious": malicious, "suspicious": suspicious,
                                    "harmless": 55 + digest[3] % 10, "undetected": 25 + digest[4] % 8, "timeout": 0},
            "reputation": -malicious * 3, "country": ["NL", "DE", "US", "FR", "SG"][digest[5] % 5],
            "as_owner": f"Example Network {digest[6] % 40}", "asn": 64496 + digest[7] % 15,
        }

    def public_api(self) -> None:
        """Answer as a free (public API) key does: 4 look-ups a minute, 500 a day."""
        self.per_minute, self.per_day = self.PUBLIC_PER_MINUTE, self.PUBLIC_PER_DAY

    def _quota_spent(self) -> bool:
        """Count the request against the key's quotas; True (and not counted) when one is spent."""
        now = self.clock()
        day_start = now - now % 86400  # 00:00 UTC of the clock's day
        with self._count_lock:
            minute = sum(1 for t in self._served if now - 60 < t <= now)
            if self.per_minute is not None and minute >= self.per_minute:
                return True
            if self.per_day is not None and sum(1 for t in self._served if t >= day_start) >= self.per_day:
                return True
            self._served.append(now)
        return False

    def _ip_report(self, req: Request) -> Response:
        key = req.headers.get("x-apikey")
        if not key:
            return _error(401, "AuthenticationRequiredError", "X-Apikey header is missing")
        if key not in self.api_keys:
            return _error(401, "WrongCredentialsError", "Wrong API key")
        try:
            ip = ipaddress.ip_address(req.params["ip"]).compressed
        except ValueError:
            return _error(400, "InvalidArgumentError", f"'{req.params['ip']}' is not a valid IP address")
        if self._quota_spent():
            return _error(429, "QuotaExceededError", "Quota exceeded")
        if ip in self._unknown:
            return _error(404, "NotFoundError", f"Resource '{ip}' not found")
        attributes = dict(self._reports.get(ip) or self._derived(ip))
        attributes.setdefault("network", f"{ip}/32" if ":" not in ip else f"{ip}/128")
        attributes["last_analysis_date"] = 1795000000
        return Response(200, {"data": {"type": "ip_address", "id": ip, "links": {"self": f"{self.url}{req.path}"},
                                       "attributes": attributes}})
