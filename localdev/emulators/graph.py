"""Microsoft Graph v1.0 on loopback: users, Identity Protection risky users, and sendMail.

The contract (Graph v1.0 reference):
- a bearer token for ``https://graph.microsoft.com`` (else 401 ``InvalidAuthenticationToken``);
- ``GET /v1.0/users/{id | userPrincipalName}`` (``$select`` honoured) -> the user; unknown: 404
  ``Request_ResourceNotFound`` ("Resource '…' does not exist or one of its queried reference-property
  objects are not present.");
- ``PATCH /v1.0/users/{id | upn}`` with known user properties (``accountEnabled`` ...) -> 204; an unknown
  property is 400 ``Request_BadRequest``; changing a user that holds a privileged admin role is 403
  ``Authorization_RequestDenied`` ("Insufficient privileges to complete the operation."), as Graph answers
  an app holding only User.EnableDisableAccount.All;
- ``POST /v1.0/users/{id | upn}/revokeSignInSessions`` -> 200 ``{"value": true}``; it moves the user's
  ``signInSessionsValidFromDateTime`` to now;
- ``GET /v1.0/identityProtection/riskyUsers/{id}`` -> the risky user (404 when the user has no risk record);
  ``POST /v1.0/identityProtection/riskyUsers/confirmCompromised`` ``{"userIds": [...]}`` -> 204, sets
  ``riskState`` confirmedCompromised and ``riskLevel`` high. Without an Entra ID P2 licence
  (``licensed=False``) both are 403 ``Forbidden`` "Your tenant is not licensed for this feature.";
- ``POST /v1.0/users/{mailbox}/sendMail`` (``localdev.emulators.mail``), so one emulator serves
  ``GRAPH_ENDPOINT``.
Error bodies carry ``innerError`` {date, request-id, client-request-id} like Graph's.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import GRAPH_AUDIENCE
from localdev.emulators.graph_domains import install_domains
from localdev.emulators.mail import install_send_mail

V1 = "https://graph.microsoft.com/v1.0/$metadata#"
USER_PROPERTIES = {"accountEnabled", "displayName", "givenName", "surname", "jobTitle", "department",
                   "mail", "mobilePhone", "officeLocation", "usageLocation", "userPrincipalName", "mailNickname"}
NOT_LICENSED = "Your tenant is not licensed for this feature."
ADELE = "b1a2c3d4-e5f6-4789-8abc-def012345678"  # the Account entity of the sample incidents


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(req: Request | None, status: int, code: str, message: str) -> Response:
    inner = {"date": _now(), "request-id": str(uuid.uuid4()),
             "client-request-id": (req.headers.get("client-request-id") if req else None) or str(uuid.uuid4())}
    return Response(status, {"error": {"code": code, "message": message, "innerError": inner}})


class GraphEmulator(Emulator):
    name = "graph"

    def __init__(self, authority: Any = None, mailboxes: tuple[str, ...] = (), *, licensed: bool = True,
                 seed: bool = True, **kw) -> None:
        super().__init__(**kw)
        self.authority = authority
        self.licensed = licensed
        self.seed = seed
        self._licensed_default = licensed
        self._state = threading.RLock()
        self._users: dict[str, dict] = {}
        self._privileged: set[str] = set()
        self._risky: dict[str, dict] = {}
        for method, pattern, handler in (
            ("GET", r"/v1\.0/users/(?P<user>[^/]+)", self._get_user),
            ("PATCH", r"/v1\.0/users/(?P<user>[^/]+)", self._patch_user),
            ("POST", r"/v1\.0/users/(?P<user>[^/]+)/revokeSignInSessions", self._revoke),
            ("GET", r"/v1\.0/identityProtection/riskyUsers/(?P<user>[^/]+)", self._get_risky),
            ("POST", r"/v1\.0/identityProtection/riskyUsers/confirmCompromised", self._confirm),
        ):
            self.route(method, pattern, self._guarded(handler))
        self.outbox = install_send_mail(self, authority, mailboxes)
        self.directory = install_domains(self, authority)  # GET /v1.0/domains (localdev/emulators/graph_domains.py)
        self._seed()

    # -- state and test controls --------------------------------------------------------------
    def _seed(self) -> None:
        if self.seed:
            self.add_user(ADELE, "adele.vance@contoso.com", "Adele Vance")

    def reset(self) -> None:
        super().reset()
        self.outbox.clear()
        self.directory.reset()
        with self._state:
            self.licensed = self._licensed_default
            self._users.clear()
            self._privileged.clear()
            self._risky.clear()
            self._seed()

    def add_user(self, object_id: str, upn: str, display_name: str = "", *, enabled: bool = True,
                 privileged: bool = False) -> dict:
        user = {"id": object_id, "userPrincipalName": upn, "displayName": display_name or upn.split("@")[0],
                "accountEnabled": enabled, "mail": upn, "signInSessionsValidFromDateTime": "2026-01-05T09:00:00Z",
                "userType": "Member"}
        with self._state:
            self._users[object_id.lower()] = user
            if privileged:
                self._privileged.add(object_id.lower())
        return dict(user)

    def user(self, id_or_upn: str) -> dict | None:
        with self._state:
            found = self._find(id_or_upn)
            return copy.deepcopy(found) if found else None

    def risky_user(self, object_id: str) -> dict | None:
        with self._state:
            found = self._risky.get(object_id.lower())
            return copy.deepcopy(found) if found else None

    def set_risk(self, object_id: str, state: str = "atRisk", level: str = "medium") -> None:
        with self._state:
            user = self._users[object_id.lower()]
            self._risky[object_id.lower()] = {
                "id": user["id"], "userPrincipalName": user["userPrincipalName"],
                "userDisplayName": user["displayName"], "riskState": state, "riskLevel": level,
                "riskDetail": "none", "riskLastUpdatedDateTime": _now(), "isDeleted": False, "isProcessing": False}

    # -- plumbing -----------------------------------------------------------------------------
    def error_body(self, status: int, message: str | None = None) -> Any:
        code = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Forbidden", 404: "itemNotFound",
                429: "TooManyRequests", 500: "generalException", 503: "serviceNotAvailable",
                504: "gatewayTimeout"}.get(status, f"HTTP{status}")
        return _error(None, status, code, message or f"injected HTTP {status}").body

    def _guarded(self, handler):
        def guarded(req: Request) -> Response:
            if self.authority is not None and (denied := self.authority.check(req, GRAPH_AUDIENCE)):
                return denied
            return handler(req)
        return guarded

    def _find(self, id_or_upn: str) -> dict | None:
        key = id_or_upn.lower()
        return self._users.get(key) or next(
            (u for u in self._users.values() if u["userPrincipalName"].lower() == key), None)

    @staticmethod
    def _missing(req: Request, what: str) -> Response:
        return _error(req, 404, "Request_ResourceNotFound",
                      f"Resource '{what}' does not exist or one of its queried reference-property objects are not "
                      "present.")

    @staticmethod
    def _body(req: Request) -> Any:
        """The JSON body, or None when there is none or it is not JSON."""
        try:
            return json.loads(req.body or b"null")
        except ValueError:
            return None

    # -- users --------------------------------------------------------------------------------
    def _get_user(self, req: Request) -> Response:
        with self._state:
            user = self._find(req.params["user"])
            if user is None:
                return self._missing(req, req.params["user"])
            select = [s.strip() for s in req.query.get("$select", "").split(",") if s.strip()]
            shown = {k: v for k, v in user.items() if not select or k in select or k == "id"}
            return Response(200, {"@odata.context": V1 + "users/$entity", **copy.deepcopy(shown)})

    def _patch_user(self, req: Request) -> Response:
        body = self._body(req)
        if not isinstance(body, dict):
            return _error(req, 400, "BadRequest", "Unable to read JSON request payload.")
        changes = {k: v for k, v in body.items() if not k.startswith("@odata.")}
        unknown = sorted(set(changes) - USER_PROPERTIES)
        if unknown:
            return _error(req, 400, "Request_BadRequest",
                          f"Property '{unknown[0]}' does not exist on type 'microsoft.graph.user'.")
        if "accountEnabled" in changes and not isinstance(changes["accountEnabled"], bool):
            return _error(req, 400, "Request_BadRequest", "Invalid value specified for property 'accountEnabled'.")
        with self._state:
            user = self._find(req.params["user"])
            if user is None:
                return self._missing(req, req.params["user"])
            if user["id"].lower() in self._privileged:
                return _error(req, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the "
                                                                       "operation.")
            user.update(changes)
            return Response(204)

    def _revoke(self, req: Request) -> Response:
        with self._state:
            user = self._find(req.params["user"])
            if user is None:
                return self._missing(req, req.params["user"])
            user["signInSessionsValidFromDateTime"] = _now()
            return Response(200, {"@odata.context": V1 + "Edm.Boolean", "value": True})

    # -- Identity Protection ------------------------------------------------------------------
    def _get_risky(self, req: Request) -> Response:
        if not self.licensed:
            return _error(req, 403, "Forbidden", NOT_LICENSED)
        with self._state:
            risky = self._risky.get(req.params["user"].lower())
            if risky is None:
                return self._missing(req, req.params["user"])
            return Response(200, {"@odata.context": V1 + "identityProtection/riskyUsers/$entity",
                                  **copy.deepcopy(risky)})

    def _confirm(self, req: Request) -> Response:
        if not self.licensed:
            return _error(req, 403, "Forbidden", NOT_LICENSED)
        body = self._body(req)
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return _error(req, 400, "BadRequest", "The 'userIds' property is required and must be a list of ids.")
        with self._state:
            users = [self._users.get(i.lower()) for i in ids]
            if any(u is None for u in users):
                return _error(req, 400, "BadRequest", "One or more user ids are invalid.")
            for user in users:
                assert user is not None
                self.set_risk(user["id"], "confirmedCompromised", "high")
            return Response(204)
