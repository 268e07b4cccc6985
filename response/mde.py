"""Microsoft Defender for Endpoint API client: machines, machine actions, indicators.

A plain class over the shared requests session and token provider. Facts it relies on (Defender
for Endpoint API reference):
- token audience ``https://api.securitycenter.microsoft.com`` whatever host ``MDE_ENDPOINT`` names
  (``api.security.microsoft.com`` and the regional hosts accept the same token);
- ``GET /api/machines?$filter=computerDnsName eq '...'`` (OData, values quoted with ``''`` escapes;
  ``startswith(computerDnsName,'...')`` is supported); ``GET /api/machines/{id}`` answers 404
  ``ResourceNotFound`` for an unknown id;
- ``POST /api/machines/{id}/isolate`` ``{"Comment", "IsolationType": "Full" | "Selective"}`` and
  ``/unisolate`` ``{"Comment"}`` answer 201 with a MachineAction; body parameters are case-sensitive;
  a request while the same action is pending answers 400 ``ActiveRequestAlreadyExists``
  ("Action is already in progress");
- ``GET /api/machineactions/{id}``; ``GET /api/machineactions?$filter=machineId eq '...' and type eq '...'``
  (filterable: id, status, machineId, type, requestor, creationDateTimeUtc);
- ``GET /api/indicators?$filter=indicatorValue eq '...'``; ``POST /api/indicators`` (submit *or update*,
  200); ``POST /api/indicators/import`` ``{"Indicators": [...]}`` (submit or update up to 500 in one call,
  200 with ``{"value": [{"id", "indicator", "isFailed", "failureReason"}]}``; its own rate limit, 30 calls a
  minute); ``DELETE /api/indicators/{id}`` (204). "If the application has Ti.ReadWrite.All permission, it
  will be exposed to all Indicators. Otherwise, it will be exposed only to the Indicators it created" (List
  Indicators API): the pack needs ``Ti.ReadWrite.All`` to see the SOC's own allow indicators;
- errors are ``{"error": {"code", "message", "target"}}``; 429 carries Retry-After (100 calls/minute,
  1,500/hour per API).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import requests

from core.credentials import MDE_SCOPE, TokenProvider
from core.errors import BadRequest, DownstreamError, Forbidden, NotFound
from core.http import call, error_code_of, error_message_of, json_object

log = logging.getLogger(__name__)

ACTIVE = frozenset({"Pending", "InProgress"})
FAILED = ("Failed", "TimeOut", "Cancelled")  # final states that changed nothing, worst first
ISOLATION_TYPES = ("Full", "Selective")
ALREADY_IN_PROGRESS = "ActiveRequestAlreadyExists"
IMPORT_BATCH = 500  # Import Indicators API: "Maximum batch size for one API call is 500"
# What may appear inside an OData string literal we build: DNS names, ids, addresses. Anything else is
# refused before it reaches a filter, so a crafted entity cannot widen the query.
_SAFE_LITERAL = re.compile(r"^[A-Za-z0-9._:\-]{1,255}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")  # machine ids (SHA-1 hex), GUIDs, indicator numbers
# An indicator value in a filter: printable ASCII without spaces (URLs too, whose paths hold / ? = & ...), bounded;
# quotes are doubled as OData escapes them.
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,2048}$")
# Defender indicator types (Indicator resource type) of what the pack blocks, by what the pack calls them.
INDICATOR_TYPES = {"ip": "IpAddress", "sha256": "FileSha256", "sha1": "FileSha1", "md5": "FileMd5", "url": "Url",
                   "domain": "DomainName"}


def odata_literal(value: str) -> str:
    """``value`` as an OData string literal, after checking it holds only name / id / address characters."""
    if not _SAFE_LITERAL.match(value):
        raise BadRequest(f"{value[:60]!r} is not a valid machine name, id or address")
    return "'" + value.replace("'", "''") + "'"


def odata_value_literal(value: str) -> str:
    """An indicator value (an address, a hash, a domain or a URL) as an OData string literal."""
    if not _SAFE_VALUE.match(value):
        raise BadRequest(f"{value[:60]!r} is not a valid indicator value")
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Machine:
    id: str
    computer_dns_name: str
    health_status: str | None = None
    os_platform: str | None = None
    machine_tags: tuple[str, ...] = ()
    last_seen: str | None = None

    @classmethod
    def from_api(cls, data: dict) -> Machine:
        return cls(id=str(data.get("id", "")), computer_dns_name=str(data.get("computerDnsName") or "").lower(),
                   health_status=data.get("healthStatus"), os_platform=data.get("osPlatform"),
                   machine_tags=tuple(str(t) for t in data.get("machineTags") or ()), last_seen=data.get("lastSeen"))

    @property
    def label(self) -> str:
        return f"{self.computer_dns_name or '?'} ({self.id[:12]}…)"


@dataclass(frozen=True)
class MachineAction:
    id: str
    type: str
    status: str
    machine_id: str
    computer_dns_name: str | None = None
    scope: str | None = None
    created: str = ""
    updated: str | None = None

    @classmethod
    def from_api(cls, data: dict) -> MachineAction:
        return cls(id=str(data.get("id", "")), type=str(data.get("type", "")), status=str(data.get("status", "")),
                   machine_id=str(data.get("machineId", "")), computer_dns_name=data.get("computerDnsName"),
                   scope=data.get("scope"), created=str(data.get("creationDateTimeUtc") or ""),
                   updated=data.get("lastUpdateDateTimeUtc") or data.get("lastUpdateTimeUtc"))

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "status": self.status, "machineId": self.machine_id,
                "computerDnsName": self.computer_dns_name, "scope": self.scope, "created": self.created,
                "updated": self.updated}


class ActionInProgress(Exception):
    """Defender answered 400 ActiveRequestAlreadyExists: the same action is already pending."""


class DefenderRejected(BadRequest):
    """Defender refused this one request (400: unsupported OS, invalid input...): a per-target failure."""

    code = "DefenderBadRequest"


class DefenderClient:
    """Machines, machine actions and indicators; raises PackErrors for what the caller cannot handle."""

    service = "DefenderForEndpoint"

    def __init__(self, session: requests.Session, tokens: TokenProvider, endpoint: str) -> None:
        self.session = session
        self.tokens = tokens
        self.endpoint = endpoint.rstrip("/")

    def __repr__(self) -> str:
        return f"DefenderClient(endpoint={self.endpoint!r})"

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
                 missing_ok: bool = False) -> requests.Response | None:
        response = call(self.session, method, f"{self.endpoint}{path}", service=self.service, params=params,
                        json=body, headers={"Authorization": self.tokens.bearer(MDE_SCOPE)})
        if response.status_code < 400:
            return response
        code = error_code_of(response) or f"HTTP {response.status_code}"
        message = error_message_of(response)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 404:
            raise NotFound(f"Defender for Endpoint: {path} not found ({code})")
        if response.status_code == 401:
            raise DownstreamError(f"Defender for Endpoint rejected the function's access token ({code})",
                                  code="DefenderUnauthorized")
        if response.status_code == 403:
            raise Forbidden(f"Defender for Endpoint refused the function's identity ({code}: {message}); grant it "
                            "Machine.Read.All, Machine.Isolate and Ti.ReadWrite.All (docs/permissions.md)",
                            code="DefenderAccessDenied")
        if response.status_code == 400 and code == ALREADY_IN_PROGRESS:
            raise ActionInProgress(message)
        raise DefenderRejected(f"Defender for Endpoint rejected the request ({code}): {message}")

    @staticmethod
    def _json(response: requests.Response) -> dict:
        return json_object(response, "Defender for Endpoint")

    def _list(self, path: str, filter_: str, top: int | None = None) -> list[dict]:
        params = {"$filter": filter_}
        if top:
            params["$top"] = str(top)
        response = self._request("GET", path, params=params)
        assert response is not None
        return [item for item in self._json(response).get("value") or [] if isinstance(item, dict)]

    # -- machines -----------------------------------------------------------------------------
    def get_machine(self, machine_id: str) -> Machine | None:
        response = self._request("GET", f"/api/machines/{_path_id(machine_id)}", missing_ok=True)
        return Machine.from_api(self._json(response)) if response is not None else None

    def machines_named(self, dns_name: str) -> list[Machine]:
        """Machines whose computerDnsName is exactly ``dns_name`` (case-insensitive)."""
        name = dns_name.lower()
        found = self._list("/api/machines", f"computerDnsName eq {odata_literal(name)}")
        return [m for m in map(Machine.from_api, found) if m.computer_dns_name == name]

    def machines_with_host_label(self, host: str) -> list[Machine]:
        """Machines whose first DNS label is exactly ``host`` (``host.<any domain>``): a prefix query,
        verified label by label here, so ``ws-1`` never matches ``ws-10``."""
        prefix = host.lower() + "."
        found = self._list("/api/machines", f"startswith(computerDnsName,{odata_literal(prefix)})")
        return [m for m in map(Machine.from_api, found) if m.computer_dns_name.startswith(prefix)]

    # -- machine actions ----------------------------------------------------------------------
    def machine_actions(self, machine_id: str, types: tuple[str, ...]) -> list[MachineAction]:
        """The machine's actions of ``types``, newest first."""
        actions: list[MachineAction] = []
        for kind in types:
            filter_ = f"machineId eq {odata_literal(machine_id)} and type eq {odata_literal(kind)}"
            actions += map(MachineAction.from_api, self._list("/api/machineactions", filter_, top=50))
        return sorted(actions, key=lambda a: a.created, reverse=True)

    def get_action(self, action_id: str) -> MachineAction | None:
        response = self._request("GET", f"/api/machineactions/{_path_id(action_id)}", missing_ok=True)
        return MachineAction.from_api(self._json(response)) if response is not None else None

    def isolate(self, machine_id: str, comment: str, isolation_type: str) -> MachineAction:
        body = {"Comment": comment, "IsolationType": isolation_type}
        response = self._request("POST", f"/api/machines/{_path_id(machine_id)}/isolate", body=body)
        assert response is not None
        return MachineAction.from_api(self._json(response))

    def unisolate(self, machine_id: str, comment: str) -> MachineAction:
        response = self._request("POST", f"/api/machines/{_path_id(machine_id)}/unisolate", body={"Comment": comment})
        assert response is not None
        return MachineAction.from_api(self._json(response))

    # -- indicators ---------------------------------------------------------------------------
    def indicators_for(self, value: str, indicator_type: str) -> list[dict]:
        filter_ = (f"indicatorValue eq {odata_value_literal(value)} and indicatorType eq "
                   f"{odata_literal(indicator_type)}")
        return self._list("/api/indicators", filter_)

    def submit_indicator(self, indicator: dict) -> dict:
        response = self._request("POST", "/api/indicators", body=indicator)
        assert response is not None
        return self._json(response)

    def import_indicators(self, indicators: list[dict]) -> dict[str, dict]:
        """Submit or update several indicators in one call (Import Indicators API, at most 500); the result per
        indicator value (lower-case): ``{"id", "indicator", "isFailed", "failureReason"}``."""
        if not indicators:
            return {}
        if len(indicators) > IMPORT_BATCH:
            raise BadRequest(f"at most {IMPORT_BATCH} indicators per import, got {len(indicators)}")
        response = self._request("POST", "/api/indicators/import", body={"Indicators": indicators})
        assert response is not None
        results = [r for r in self._json(response).get("value") or [] if isinstance(r, dict)]
        return {str(r.get("indicator", "")).lower(): r for r in results}

    def delete_indicator(self, indicator_id: str) -> bool:
        """Delete; False when it was already gone (404)."""
        return self._request("DELETE", f"/api/indicators/{_path_id(indicator_id)}", missing_ok=True) is not None


def machine_id_valid(value: str) -> bool:
    """Whether ``value`` can name a Defender machine in a path and a filter (else resolution refuses it)."""
    return bool(_SAFE_ID.match(value) and _SAFE_LITERAL.match(value))


def _path_id(value: str) -> str:
    if not _SAFE_ID.match(value):
        raise BadRequest(f"{value[:60]!r} is not a valid Defender id")
    return value


__all__ = ["ACTIVE", "FAILED", "INDICATOR_TYPES", "ISOLATION_TYPES", "ActionInProgress", "DefenderClient",
           "DefenderRejected", "Machine", "MachineAction", "machine_id_valid", "odata_literal",
           "odata_value_literal"]
