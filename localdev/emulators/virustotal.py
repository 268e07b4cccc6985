"""VirusTotal API v3 ``GET /api/v3/ip_addresses/{ip}``, with quotas and documented errors.

Reports are deterministic: set one with ``set_report(ip, malicious=…)`` or let the emulator
derive plausible stats from the address (stable across runs, so the demo and benchmarks
repeat). Quotas follow the public API (per-minute and per-day counters, 429
``QuotaExceededError``); ``per_minute=None`` turns a limit off.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time

from localdev.emulators.base import Emulator, Request, Response


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


class VirusTotalEmulator(Emulator):
    name = "virustotal"

    def __init__(self, api_keys: tuple[str, ...] = ("vt-test-key",), *, per_minute: int | None = None,
                 per_day: int | None = None, **kw) -> None:
        super().__init__(**kw)
        self.api_keys = set(api_keys)
        self.per_minute = per_minute
        self.per_day = per_day
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

    def _quota_spent(self) -> bool:
        now = time.time()
        with self._count_lock:
            minute = sum(1 for t in self._served if now - t < 60)
            if self.per_minute is not None and minute >= self.per_minute:
                return True
            if self.per_day is not None and len(self._served) >= self.per_day:
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
