"""Microsoft Defender for Endpoint API on loopback: machines, machine actions, indicators.

The contract (Defender for Endpoint API reference, "Handling REST API errors"):
- every call needs a bearer token for ``https://api.securitycenter.microsoft.com`` (else 401);
- ``GET /api/machines`` / ``/api/machineactions`` / ``/api/indicators`` with OData ``$filter`` (``field eq
  'value'``, ``startswith(field,'value')``, joined by ``and``; ``''`` escapes a quote) on the documented
  filterable fields, and ``$top``; anything else is 400 ``ODataError``. Answers ``{"@odata.context", "value"}``;
- ``GET /api/machines/{id}``; unknown ids are 404 ``ResourceNotFound`` ("Machine {id} was not found");
- ``POST /api/machines/{id}/isolate`` ``{"Comment", "IsolationType"}`` and ``/unisolate`` ``{"Comment"}``:
  body parameters are case-sensitive (a missing ``Comment`` is 400 ``MissingRequiredParameter``); 201 with
  the MachineAction. While an action of the same type is Pending or InProgress on the machine, another is
  400 ``ActiveRequestAlreadyExists`` ("Action is already in progress"). An isolate of a machine that is
  already isolated is accepted and creates another action, as the service does;
- machine actions progress asynchronously: each ``GET /api/machineactions/{id}`` moves a new action one
  step, Pending -> InProgress -> its outcome (Succeeded unless ``set_outcome`` says Failed, TimeOut or
  Cancelled; ``hold`` keeps actions pending). A succeeded Isolate isolates the machine, a succeeded
  Unisolate releases it;
- ``POST /api/indicators`` submits *or updates* (same value and type -> same indicator), 200; ``application``
  is kept from the first writer ("This field only works for new indicators"). The value is checked for its type
  with the documented error codes ("Handling REST API errors"): ``InvalidHashValue`` (a FileSha256 / FileSha1 /
  FileMd5 that is not 64 / 40 / 32 hex digits), ``InvalidDomainName``, ``InvalidUrl`` (not an absolute http(s)
  URL), ``InvalidIpAddress`` (CIDR too); ``BlockAndRemediate`` only for files and certificates ("Overview of
  indicators": the actions available per indicator type); ``Audit`` needs ``generateAlert`` true;
  ``POST /api/indicators/import`` ``{"Indicators": [...]}`` submits or updates up to 500 at once, 200 with
  ``{"value": [{"id", "indicator", "isFailed", "failureReason"}]}`` (an invalid indicator fails alone; more
  than 500 is 400 ``MaximumBatchSizeExceeded``, no list 400) (Import Indicators API); ``DELETE
  /api/indicators/{id}`` 204, 404 when unknown;
- indicators belong to the application that created them (``createdBy`` = its client id): "If the
  application has Ti.ReadWrite.All permission, it will be exposed to all Indicators. Otherwise, it will be
  exposed only to the Indicators it created" (List Indicators API). The token's application and roles come
  from the Entra emulator (``authority.caller``);
- application permissions per API (each API's "Permissions" section): machines and machine actions need
  Machine.Read.All or Machine.ReadWrite.All, isolate / unisolate Machine.Isolate, indicators Ti.ReadWrite or
  Ti.ReadWrite.All; without one: 403 ``Forbidden`` "The application does not have any of the required
  application permissions (...) to access the resource." (the service's wording, as reported in
  MicrosoftDocs/microsoft-365-docs issues #6053 and #6062).
Errors are ``{"error": {"code", "message", "target"}}``.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import DEPLOYED_ROLES, MANAGED_IDENTITY, MDE_AUDIENCE, Caller

CONTEXT = "https://api.securitycenter.microsoft.com/api/$metadata#"
ACTION_TYPES = ("Isolate", "Unisolate")
OUTCOMES = ("Succeeded", "Failed", "TimeOut", "Cancelled")
FILTERABLE = {
    "machines": {"computerDnsName", "id", "version", "deviceValue", "aadDeviceId", "machineTags", "lastSeen",
                 "exposureLevel", "onboardingStatus", "lastIpAddress", "healthStatus", "osPlatform", "riskScore",
                 "rbacGroupId"},
    "machineactions": {"id", "status", "machineId", "type", "requestor", "creationDateTimeUtc"},
    "indicators": {"application", "createdByDisplayName", "expirationTime", "generateAlert", "title",
                   "rbacGroupNames", "rbacGroupIds", "indicatorValue", "indicatorType", "creationTimeDateTimeUtc",
                   "createdBy", "action", "severity"},
}
INDICATOR_TYPES = ("FileSha1", "FileSha256", "FileMd5", "CertificateThumbprint", "IpAddress", "DomainName", "Url")
INDICATOR_ACTIONS = ("Alert", "Warn", "Block", "Audit", "BlockAndRemediate", "AlertAndBlock", "Allowed")
SEVERITIES = ("Informational", "Low", "Medium", "High")
HASH_DIGITS = {"FileSha256": 64, "FileSha1": 40, "FileMd5": 32}
# "The table below shows which actions are available per indicator (IoC) type": Block and remediate for files and
# certificates only (Learn, "Overview of indicators in Microsoft Defender for Endpoint").
REMEDIATE_TYPES = ("FileSha1", "FileSha256", "FileMd5", "CertificateThumbprint")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CLAUSE = re.compile(
    r"^\s*(?:(?P<field>\w+)\s+eq\s+'(?P<value>(?:[^']|'')*)'"
    r"|startswith\(\s*(?P<sfield>\w+)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\))\s*$")
APP = "sentinel-playbooks"  # requestor of what the function app does (its identity's display name)
IMPORT_BATCH = 500  # Import Indicators API: "Maximum batch size for one API call is 500"
MACHINE_READ = ("Machine.Read.All", "Machine.ReadWrite.All")
TI = ("Ti.ReadWrite", "Ti.ReadWrite.All")
# The machines of the sample incidents (tests/fixtures): their MdatpDeviceId, seeded with their FQDN.
WS_FIN_0042 = "7d3c9b2a1f0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
SRV_APP_07 = "2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b3d5f7a9c"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message, "target": str(uuid.uuid4())}})


def _is_time(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _domain(value: str) -> bool:
    """A DNS name as a DomainName indicator takes it: labels of letters, digits and hyphens, no scheme, path or
    wildcard ("wildcards and ranges are not supported"), not an address."""
    labels = value.rstrip(".").split(".")
    try:
        ipaddress.ip_address(value)
        return False
    except ValueError:
        pass
    return len(value) <= 253 and len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def _url(value: str) -> bool:
    """An absolute http(s) URL with a host and no spaces (network protection blocks HTTP and HTTPS)."""
    if any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _json_body(req: Request) -> dict | Response:
    """The request's JSON object, or the 400 InvalidRequestBody the service answers."""
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else _error(400, "InvalidRequestBody", "Request body is incorrect")


@dataclass
class _Action:
    data: dict
    steps: list[str] = field(default_factory=list)  # statuses still to come


class DefenderEmulator(Emulator):
    name = "defender"

    def __init__(self, authority: Any = None, seed: bool = True, **kw) -> None:
        super().__init__(**kw)
        self.authority = authority
        self.seed = seed
        self.hold = False  # True: new actions stay Pending until released
        self._state = threading.RLock()
        self._machines: dict[str, dict] = {}
        self._isolated: dict[str, str | None] = {}  # machine id -> isolation scope (None: not isolated)
        self._outcomes: dict[str, str] = {}
        self._actions: dict[str, _Action] = {}
        self._indicators: dict[str, dict] = {}
        self._indicator_ids = itertools.count(1001)
        for method, pattern, handler, roles in (
            ("GET", r"/api/machines", self._list_machines, MACHINE_READ),
            ("GET", r"/api/machines/(?P<id>[^/]+)", self._get_machine, MACHINE_READ),
            ("POST", r"/api/machines/(?P<id>[^/]+)/isolate", self._isolate, ("Machine.Isolate",)),
            ("POST", r"/api/machines/(?P<id>[^/]+)/unisolate", self._unisolate, ("Machine.Isolate",)),
            ("GET", r"/api/machineactions", self._list_actions, MACHINE_READ),
            ("GET", r"/api/machineactions/(?P<id>[^/]+)", self._get_action, MACHINE_READ),
            ("GET", r"/api/indicators", self._list_indicators, TI),
            ("POST", r"/api/indicators", self._submit_indicator, TI),
            ("POST", r"/api/indicators/import", self._import_indicators, TI),
            ("DELETE", r"/api/indicators/(?P<id>[^/]+)", self._delete_indicator, TI),
        ):
            self.route(method, pattern, self._guarded(handler, roles))
        self._seed()

    # -- state and test controls --------------------------------------------------------------
    def _seed(self) -> None:
        if not self.seed:
            return
        self.add_machine(WS_FIN_0042, "ws-fin-0042.corp.contoso.com", os_platform="Windows11",
                         aad_device_id="a1b2c3d4-0042-4f00-8000-000000000042")
        self.add_machine(SRV_APP_07, "srv-app-07.corp.contoso.com", os_platform="WindowsServer2022")

    def reset(self) -> None:
        super().reset()
        with self._state:
            self.hold = False
            self._machines.clear()
            self._isolated.clear()
            self._outcomes.clear()
            self._actions.clear()
            self._indicators.clear()
            self._seed()

    def add_machine(self, machine_id: str, dns_name: str, *, health: str = "Active", os_platform: str = "Windows11",
                    tags: tuple[str, ...] = (), aad_device_id: str | None = None) -> dict:
        machine = {
            "id": machine_id, "computerDnsName": dns_name.lower(), "firstSeen": "2025-02-03T08:00:00Z",
            "lastSeen": _now(), "osPlatform": os_platform, "version": "22H2", "osProcessor": "x64",
            "lastIpAddress": "10.0.0.5", "lastExternalIpAddress": "198.51.100.7", "healthStatus": health,
            "onboardingStatus": "Onboarded", "riskScore": "Medium", "exposureLevel": "Medium",
            "rbacGroupId": 0, "rbacGroupName": None, "isAadJoined": aad_device_id is not None,
            "aadDeviceId": aad_device_id, "machineTags": list(tags), "deviceValue": "Normal",
        }
        with self._state:
            self._machines[machine_id] = machine
            self._isolated.setdefault(machine_id, None)
        return dict(machine)

    def set_outcome(self, machine_id: str, status: str) -> None:
        """The final status of the machine's next actions (Succeeded, Failed, TimeOut, Cancelled)."""
        assert status in OUTCOMES, status
        with self._state:
            self._outcomes[machine_id] = status

    def isolation(self, machine_id: str) -> str | None:
        """The machine's isolation scope (Full, Selective) or None when it is not isolated."""
        with self._state:
            return self._isolated.get(machine_id)

    def set_isolated(self, machine_id: str, scope: str | None = "Full") -> dict | None:
        """A machine isolated earlier (by hand, in the portal): a succeeded Isolate action in its history."""
        with self._state:
            self._isolated[machine_id] = scope
            if scope is None:
                return None
            action = self._new_action(machine_id, "Isolate", scope, "isolated in the portal", requestor="analyst")
            action.data["status"], action.steps = "Succeeded", []
            return dict(action.data)

    def actions(self, machine_id: str | None = None, type_: str | None = None) -> list[dict]:
        with self._state:
            return [dict(a.data) for a in self._actions.values()
                    if (machine_id is None or a.data["machineId"] == machine_id)
                    and (type_ is None or a.data["type"] == type_)]

    def complete(self, action_id: str, status: str = "Succeeded") -> None:
        with self._state:
            action = self._actions[action_id]
            action.steps = []
            self._set_status(action, status)

    def indicators(self) -> list[dict]:
        """Every indicator of the tenant, whoever created it."""
        with self._state:
            return [dict(i) for i in self._indicators.values()]

    def add_indicator(self, value: str, action: str, *, app_id: str, title: str = "Added in the portal",
                      indicator_type: str = "IpAddress", expiration: str | None = None) -> dict:
        """An indicator another application created (the SOC's portal session, a TI connector)."""
        body = {"indicatorValue": value, "indicatorType": indicator_type, "action": action, "title": title,
                "description": title, "expirationTime": expiration}
        with self._state:
            return dict(self._upsert_indicator(body, Caller(app_id, frozenset(TI))))

    # -- plumbing -----------------------------------------------------------------------------
    def error_body(self, status: int, message: str | None = None) -> Any:
        code = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 429: "TooManyRequests",
                500: "InternalServerError"}.get(status, f"HTTP{status}")
        return {"error": {"code": code, "message": message or f"injected HTTP {status}", "target": str(uuid.uuid4())}}

    def _guarded(self, handler, roles: tuple[str, ...]):
        def guarded(req: Request) -> Response:
            if self.authority is not None and (denied := self.authority.check(req, MDE_AUDIENCE)):
                return denied
            caller = self._caller(req)
            if not caller.roles & set(roles):
                return _error(403, "Forbidden", "The application does not have any of the required application "
                                                f"permissions ({', '.join(roles)}) to access the resource.")
            return handler(req)
        return guarded

    def _caller(self, req: Request) -> Caller:
        """The token's application; without an authority (standalone tests), the function app's identity."""
        caller = self.authority.caller(req) if self.authority is not None else None
        return caller or Caller(MANAGED_IDENTITY, DEPLOYED_ROLES)

    @staticmethod
    def _visible(caller: Caller, indicator: dict) -> bool:
        return "Ti.ReadWrite.All" in caller.roles or indicator.get("createdBy") == caller.app_id

    @staticmethod
    def _filter(collection: str, req: Request) -> list[tuple[str, str, bool]] | Response:
        """[(field, value, is_prefix)] from ``$filter``; a 400 ODataError for what the service rejects."""
        raw = req.query.get("$filter")
        if raw is None:
            return []
        clauses = []
        for part in re.split(r"\s+and\s+", raw.strip()):
            match = _CLAUSE.match(part)
            if not match:
                return _error(400, "ODataError", f"Invalid OData URI query: unsupported filter clause {part!r}")
            name = match["field"] or match["sfield"]
            if name not in FILTERABLE[collection]:
                return _error(400, "ODataError", f"Invalid OData URI query: cannot filter on '{name}'")
            value = match["value"] if match["field"] else match["prefix"]
            clauses.append((name, value.replace("''", "'"), match["field"] is None))
        return clauses

    @staticmethod
    def _matches(item: dict, clauses: list[tuple[str, str, bool]]) -> bool:
        for name, value, prefix in clauses:
            field_value = item.get(name)
            values = [str(v).lower() for v in field_value] if isinstance(field_value, list) else \
                [str(field_value).lower()] if field_value is not None else []
            wanted = value.lower()
            if not any(v.startswith(wanted) if prefix else v == wanted for v in values):
                return False
        return True

    def _collection(self, collection: str, items: list[dict], req: Request, context: str) -> Response:
        clauses = self._filter(collection, req)
        if isinstance(clauses, Response):
            return clauses
        selected = [dict(i) for i in items if self._matches(i, clauses)]
        top = req.query.get("$top")
        if top is not None:
            if not top.isdigit() or int(top) > 10000:
                return _error(400, "ODataError", "Invalid OData URI query: $top must be 0..10000")
            selected = selected[:int(top)]
        return Response(200, {"@odata.context": CONTEXT + context, "value": selected})

    # -- machines -----------------------------------------------------------------------------
    def _list_machines(self, req: Request) -> Response:
        with self._state:
            return self._collection("machines", list(self._machines.values()), req, "Machines")

    def _get_machine(self, req: Request) -> Response:
        with self._state:
            machine = self._machines.get(req.params["id"])
            if machine is None:
                return _error(404, "ResourceNotFound", f"Machine {req.params['id']} was not found")
            return Response(200, {"@odata.context": CONTEXT + "Machines/$entity", **machine})

    # -- machine actions ----------------------------------------------------------------------
    def _new_action(self, machine_id: str, type_: str, scope: str | None, comment: str,
                    requestor: str = APP) -> _Action:
        now = _now()
        data = {"id": str(uuid.uuid4()), "type": type_, "title": None, "scope": scope, "requestor": requestor,
                "requestSource": "PublicApi", "requestorComment": comment, "status": "Pending",
                "machineId": machine_id, "computerDnsName": self._machines[machine_id]["computerDnsName"],
                "creationDateTimeUtc": now, "lastUpdateDateTimeUtc": now, "cancellationRequestor": None,
                "cancellationComment": None, "cancellationDateTimeUtc": None, "errorHResult": 0,
                "relatedFileInfo": None, "commands": [], "externalId": None}
        outcome = self._outcomes.get(machine_id, "Succeeded")
        action = _Action(data, ["InProgress", outcome])
        self._actions[data["id"]] = action
        return action

    def _set_status(self, action: _Action, status: str) -> None:
        data = action.data
        data["status"], data["lastUpdateDateTimeUtc"] = status, _now()
        if status == "Succeeded" and data["type"] == "Isolate":
            self._isolated[data["machineId"]] = data["scope"] or "Full"
        elif status == "Succeeded" and data["type"] == "Unisolate":
            self._isolated[data["machineId"]] = None

    def _request_action(self, req: Request, type_: str) -> Response:
        body = _json_body(req)
        if isinstance(body, Response):
            return body
        comment = body.get("Comment")  # case-sensitive, as documented
        if not isinstance(comment, str) or not comment.strip():
            return _error(400, "MissingRequiredParameter", "Parameter Comment is missing.")
        scope = None
        if type_ == "Isolate":
            scope = body.get("IsolationType", "Full")
            if scope not in ("Full", "Selective", "UnManagedDevice"):
                return _error(400, "InvalidInput", f"Invalid input IsolationType: {scope}")
        with self._state:
            machine_id = req.params["id"]
            if machine_id not in self._machines:
                return _error(404, "ResourceNotFound", f"Machine {machine_id} was not found")
            if any(a.data["machineId"] == machine_id and a.data["type"] == type_ and a.data["status"] in
                   ("Pending", "InProgress") for a in self._actions.values()):
                return _error(400, "ActiveRequestAlreadyExists", "Action is already in progress")
            action = self._new_action(machine_id, type_, scope, comment[:1000])
            return Response(201, {"@odata.context": CONTEXT + "MachineActions/$entity", **action.data})

    def _isolate(self, req: Request) -> Response:
        return self._request_action(req, "Isolate")

    def _unisolate(self, req: Request) -> Response:
        return self._request_action(req, "Unisolate")

    def _list_actions(self, req: Request) -> Response:
        with self._state:
            newest_first = sorted((a.data for a in self._actions.values()),
                                  key=lambda d: d["creationDateTimeUtc"], reverse=True)
            return self._collection("machineactions", newest_first, req, "MachineActions")

    def _get_action(self, req: Request) -> Response:
        with self._state:
            action = self._actions.get(req.params["id"])
            if action is None:
                return _error(404, "ResourceNotFound", f"MachineAction {req.params['id']} was not found")
            if action.steps and not self.hold:  # the device picks the action up between polls
                self._set_status(action, action.steps.pop(0))
            return Response(200, {"@odata.context": CONTEXT + "MachineActions/$entity", **action.data})

    # -- indicators ---------------------------------------------------------------------------
    def _list_indicators(self, req: Request) -> Response:
        caller = self._caller(req)
        with self._state:
            visible = [i for i in self._indicators.values() if self._visible(caller, i)]
            return self._collection("indicators", visible, req, "Indicators")

    @staticmethod
    def _invalid_indicator(body: dict) -> tuple[str, str] | None:
        """(code, message) of what the service refuses in one indicator, or None."""
        for name in ("indicatorValue", "indicatorType", "action", "title", "description"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                return "MissingRequiredParameter", f"Parameter {name} is missing."
        if body["indicatorType"] not in INDICATOR_TYPES:
            return "InvalidInput", f"Invalid input indicatorType: {body['indicatorType']}"
        if body["action"] not in INDICATOR_ACTIONS:
            return "InvalidInput", f"Invalid input action: {body['action']}"
        if body.get("severity") is not None and body["severity"] not in SEVERITIES:
            return "InvalidInput", f"Invalid input severity: {body['severity']}"
        if body["action"] == "BlockAndRemediate" and body["indicatorType"] not in REMEDIATE_TYPES:
            return "InvalidInput", f"Invalid input action: BlockAndRemediate is not available for " \
                                   f"{body['indicatorType']}"
        if body["action"] == "Audit" and body.get("generateAlert") is not True:
            return "InvalidInput", "Invalid input generateAlert: must be true for an Audit indicator"
        if body.get("expirationTime") is not None and not _is_time(body["expirationTime"]):
            return "InvalidInput", f"Invalid input expirationTime: {str(body['expirationTime'])[:60]}"
        return DefenderEmulator._invalid_value(body["indicatorType"], body["indicatorValue"])

    @staticmethod
    def _invalid_value(kind: str, value: str) -> tuple[str, str] | None:
        """The documented error of a value that is not one of its type ("Handling REST API errors")."""
        if kind == "IpAddress":
            try:
                ipaddress.ip_address(value)
            except ValueError:  # CIDR notation is not supported either
                return "InvalidIpAddress", f"IP address {value} is invalid."
        elif kind in HASH_DIGITS and (len(value) != HASH_DIGITS[kind] or not _HEX.match(value)):
            return "InvalidHashValue", f"Hash value {value} is invalid."
        elif kind == "DomainName" and not _domain(value):
            return "InvalidDomainName", f"Domain name {value} is invalid."
        elif kind == "Url" and not _url(value):
            return "InvalidUrl", f"URL {value} is invalid."
        return None

    def _upsert_indicator(self, body: dict, caller: Caller) -> dict:
        """Submit or update by value and type (hold ``_state``); the creator stays the first application."""
        existing = next((i for i in self._indicators.values()
                         if i["indicatorValue"].lower() == body["indicatorValue"].lower()
                         and i["indicatorType"] == body["indicatorType"]), None)
        name = APP if caller.app_id == MANAGED_IDENTITY else caller.app_id
        indicator = existing or {"id": str(next(self._indicator_ids)), "creationTimeDateTimeUtc": _now(),
                                 "createdBy": caller.app_id, "createdByDisplayName": name,
                                 "createdBySource": "PublicApi", "sourceType": "AadApp"}
        indicator.update({k: body.get(k) for k in ("indicatorValue", "indicatorType", "action", "title",
                                                   "description", "expirationTime", "severity",
                                                   "recommendedActions", "generateAlert")})
        if existing is None:  # "This field only works for new indicators. It doesn't update the value on an
            indicator["application"] = body.get("application")  # existing indicator." (Submit Indicator API)
        indicator.update({"lastUpdateTime": _now(), "lastUpdatedBy": name,
                          "rbacGroupNames": body.get("rbacGroupNames") or []})
        self._indicators[indicator["id"]] = indicator
        return indicator

    def _submit_indicator(self, req: Request) -> Response:
        body = _json_body(req)
        if isinstance(body, Response):
            return body
        invalid = self._invalid_indicator(body)
        if invalid:
            return _error(400, *invalid)
        with self._state:
            indicator = self._upsert_indicator(body, self._caller(req))
            return Response(200, {"@odata.context": CONTEXT + "Indicators/$entity", **indicator})

    def _import_indicators(self, req: Request) -> Response:
        body = _json_body(req)
        if isinstance(body, Response):
            return body
        items = body.get("Indicators")
        if not isinstance(items, list) or not items:
            return _error(400, "MissingRequiredParameter", "Parameter Indicators is missing.")
        if len(items) > IMPORT_BATCH:
            return _error(400, "MaximumBatchSizeExceeded",
                          f"Maximum batch size exceeded. Received: {len(items)}, allowed: {IMPORT_BATCH}.")
        caller, results = self._caller(req), []
        with self._state:
            for item in items:
                invalid = self._invalid_indicator(item) if isinstance(item, dict) else ("InvalidInput", "not an object")
                value = item.get("indicatorValue") if isinstance(item, dict) else None
                if invalid:
                    results.append({"id": None, "indicator": value, "isFailed": True, "failureReason": invalid[1]})
                    continue
                indicator = self._upsert_indicator(item, caller)
                results.append({"id": indicator["id"], "indicator": indicator["indicatorValue"], "isFailed": False,
                                "failureReason": None})
        return Response(200, {"value": results})

    def _delete_indicator(self, req: Request) -> Response:
        with self._state:
            if self._indicators.pop(req.params["id"], None) is None:
                return _error(404, "ResourceNotFound", f"Indicator {req.params['id']} was not found")
            return Response(204)
