"""VirusTotal API v3 on loopback: IP address, file, URL and domain reports, with quotas and documented errors.

Endpoints (docs.virustotal.com/reference): ``GET /api/v3/ip_addresses/{ip}`` (ip-info),
``GET /api/v3/files/{id}`` with a SHA-256, SHA-1 or MD5 (file-info; the object's id is its SHA-256),
``GET /api/v3/urls/{id}`` with the URL in unpadded URL-safe base64 or the SHA-256 of the canonical URL
("URL identifiers"; the object's id is the SHA-256), ``GET /api/v3/domains/{domain}`` (domain-info). Each
answers ``{"data": {"type", "id", "links": {"self"}, "attributes": {...}}}`` with ``last_analysis_stats``,
``reputation``, ``last_analysis_date`` and the kind's own attributes.

Reports are deterministic: set one with ``set_report(value, malicious=…)`` (the kind follows from the
value: an address, a 32/40/64-digit hash, a URL with its scheme, else a domain) or let the emulator derive
plausible stats from the value (stable across runs, so the demo and benchmarks repeat); ``set_unknown``
makes VirusTotal never have seen it (404 ``NotFoundError``).

Errors (docs.virustotal.com/reference/errors): no ``x-apikey`` 401 ``AuthenticationRequiredError``; an
unknown key 401 ``WrongCredentialsError``; an address that does not parse or a domain with invalid labels 400
``InvalidArgumentError``; a file id that is no hash and a URL id that decodes to no URL 404 ``NotFoundError``
(the errors page's own example: ``URL "thisurlidmakesnosenseatall" not found``).

Quotas follow the public API: "limited to 500 requests per day and a rate of 4 requests per minute"
(docs.virustotal.com/reference/public-vs-premium-api); "at most 4 requests of any nature in any given
1 minute time frame" (API overview), so the minute is a sliding window; "daily quotas are reset every
day at 00:00 UTC" (the QuotaExceededError entry of docs.virustotal.com/reference/errors). Past either,
429 ``QuotaExceededError``, with no Retry-After (none is documented). ``per_minute=None`` turns a limit
off (a premium key); ``clock`` is injectable, so a test runs an hour of quota in seconds. Submitting for
scanning (``POST /urls``, ``POST /files``) is not served: the pack never does it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from localdev.emulators.base import Emulator, Request, Response

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
COLLECTIONS = {"ip": ("ip_addresses", "ip_address"), "file": ("files", "file"), "url": ("urls", "url"),
               "domain": ("domains", "domain")}


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def kind_of(value: str) -> str:
    """What a test's value names: an address, a file hash, a URL (with its scheme) or a domain."""
    try:
        ipaddress.ip_address(value)
        return "ip"
    except ValueError:
        pass
    if _HEX.match(value) and len(value) in (32, 40, 64):
        return "file"
    return "url" if "://" in value else "domain"


def canonical_url(url: str) -> str:
    """An approximation of VirusTotal's canonicalisation: scheme and host lower-case, an empty path as "/"."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, parts.fragment))


def url_sha256(url: str) -> str:
    return hashlib.sha256(canonical_url(url).encode()).hexdigest()


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
        self._reports: dict[tuple[str, str], dict] = {}  # (kind, id) -> attributes
        self._aliases: dict[str, str] = {}  # a file's MD5 / SHA-1 -> its SHA-256
        self._unknown: set[tuple[str, str]] = set()
        self._served: list[float] = []
        self._count_lock = threading.Lock()
        self.route("GET", r"/api/v3/ip_addresses/(?P<id>[^/]+)", self._report("ip"))
        self.route("GET", r"/api/v3/files/(?P<id>[^/]+)", self._report("file"))
        self.route("GET", r"/api/v3/urls/(?P<id>[^/]+)", self._report("url"))
        self.route("GET", r"/api/v3/domains/(?P<id>[^/]+)", self._report("domain"))

    def reset(self) -> None:
        super().reset()
        with self._count_lock:
            self._served.clear()
        self._reports.clear()
        self._aliases.clear()
        self._unknown.clear()

    # -- test controls ------------------------------------------------------------------------
    def set_report(self, value: str, *, malicious: int = 0, suspicious: int = 0, harmless: int = 60,
                   undetected: int = 30, reputation: int = 0, country: str = "NL",
                   as_owner: str = "Example Hosting B.V.", asn: int = 64500, md5: str | None = None,
                   sha1: str | None = None, **attributes) -> None:
        """A report for ``value`` (its kind follows from it); ``attributes`` add the kind's own fields."""
        kind = kind_of(value)
        stats = {"malicious": malicious, "suspicious": suspicious, "harmless": harmless, "undetected": undetected,
                 "timeout": 0}
        report = {"last_analysis_stats": stats, "reputation": reputation}
        if kind == "ip":
            report |= {"country": country, "as_owner": as_owner, "asn": asn}
        key = self._identify(kind, value)
        if kind == "file":
            for alias in (md5, sha1):
                if alias:
                    self._aliases[alias.lower()] = key
        self._reports[(kind, key)] = report | attributes

    def set_unknown(self, value: str) -> None:
        """VirusTotal has never seen it: 404 NotFoundError."""
        kind = kind_of(value)
        self._unknown.add((kind, self._identify(kind, value)))

    def lookups(self, kind: str | None = None) -> list[str]:
        """Ids asked for, in order, whatever the answer (every call a client made); ``kind`` narrows them."""
        kinds = [kind] if kind else list(COLLECTIONS)
        pattern = "|".join(COLLECTIONS[k][0] for k in kinds)
        return [r.path.rsplit("/", 1)[-1] for r in self.requests_to("GET", rf"/api/v3/({pattern})/")]

    # -- contract -----------------------------------------------------------------------------
    def _identify(self, kind: str, value: str) -> str:
        """The object id VirusTotal keys a value by: the compressed address, the SHA-256 (of a URL: of its
        canonical form), the lower-case domain."""
        if kind == "ip":
            return ipaddress.ip_address(value).compressed
        if kind == "file":
            text = value.lower()
            return self._aliases.get(text, text) if len(text) != 64 else text
        if kind == "url":
            return url_sha256(value)
        return value.lower().rstrip(".")

    def _derived(self, kind: str, key: str) -> dict:
        digest = hashlib.sha256(key.encode()).digest()
        malicious = digest[0] % 16 if digest[1] % 4 == 0 else 0
        report = {
            "last_analysis_stats": {"malicious": malicious, "suspicious": digest[2] % 3,
                                    "harmless": 55 + digest[3] % 10, "undetected": 25 + digest[4] % 8, "timeout": 0},
            "reputation": -malicious * 3,
        }
        if kind == "ip":
            report |= {"country": ["NL", "DE", "US", "FR", "SG"][digest[5] % 5],
                       "as_owner": f"Example Network {digest[6] % 40}", "asn": 64496 + digest[7] % 15}
        elif kind == "file":
            report |= {"meaningful_name": f"sample-{digest[5] % 90}.exe", "type_description": "Win32 EXE",
                       "size": 40_000 + digest[6] * 100}
        elif kind == "domain":
            report |= {"registrar": f"Example Registrar {digest[5] % 9}", "creation_date": 1_600_000_000}
        return report

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

    def _resolve(self, kind: str, raw: str) -> tuple[str, str] | Response:
        """(object id, shown value) of the path's id, or the documented error for an id that names nothing."""
        if kind == "ip":
            try:
                return ipaddress.ip_address(raw).compressed, raw
            except ValueError:
                return _error(400, "InvalidArgumentError", f"'{raw}' is not a valid IP address")
        if kind == "file":
            if not (_HEX.match(raw) and len(raw) in (32, 40, 64)):
                return _error(404, "NotFoundError", f'File "{raw}" not found')
            return self._identify("file", raw), raw
        if kind == "url":
            if _HEX.match(raw) and len(raw) == 64:
                return raw.lower(), raw
            try:
                url = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                url = ""
            if "://" not in url:
                return _error(404, "NotFoundError", f'URL "{raw}" not found')
            return url_sha256(url), url
        name = raw.lower().rstrip(".")
        if not all(_LABEL.match(label) for label in name.split(".")) or len(name) > 253:
            return _error(400, "InvalidArgumentError", f'Domain "{raw}" is not a valid domain pattern')
        return name, name

    def _report(self, kind: str) -> Callable[[Request], Response]:
        def serve(req: Request) -> Response:
            key = req.headers.get("x-apikey")
            if not key:
                return _error(401, "AuthenticationRequiredError", "X-Apikey header is missing")
            if key not in self.api_keys:
                return _error(401, "WrongCredentialsError", "Wrong API key")
            resolved = self._resolve(kind, req.params["id"])
            if isinstance(resolved, Response):
                return resolved
            object_id, shown = resolved
            if self._quota_spent():
                return _error(429, "QuotaExceededError", "Quota exceeded")
            if (kind, object_id) in self._unknown:
                noun = {"ip": "Resource", "file": "File", "url": "URL", "domain": "Domain"}[kind]
                return _error(404, "NotFoundError", f'{noun} "{req.params["id"]}" not found')
            attributes = dict(self._reports.get((kind, object_id)) or self._derived(kind, object_id))
            if kind == "ip":
                attributes.setdefault("network", f"{object_id}/32" if ":" not in object_id else f"{object_id}/128")
            elif kind == "file":
                attributes.setdefault("sha256", object_id if len(object_id) == 64 else
                                      hashlib.sha256(object_id.encode()).hexdigest())
                object_id = attributes["sha256"]
            elif kind == "url":
                attributes.setdefault("url", shown)
                attributes.setdefault("last_final_url", shown)
            attributes["last_analysis_date"] = 1795000000
            return Response(200, {"data": {"type": COLLECTIONS[kind][1], "id": object_id,
                                           "links": {"self": f"{self.url}{req.path}"}, "attributes": attributes}})

        return serve
