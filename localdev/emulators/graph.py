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
  (``licensed=False``) both are 403, in one of the forms Graph uses (``LICENCE_ERRORS``, taken in turn): ``Forbidden``
  "Your tenant is not licensed for this feature." or ``Authentication_RequestFromNonPremiumTenantOrB2CTenant``
  "Neither tenant is B2C or tenant doesn't have premium license" (microsoftgraph/microsoft-graph-docs #11986, #14118);
- ``POST /v1.0/users/{mailbox}/sendMail`` (``localdev.emulators.mail``), so one emulator serves
  ``GRAPH_ENDPOINT``;
- the directory the approvals and the user's own confirmation need: ``POST /v1.0/users/{id}/checkMemberGroups``
  ``{"groupIds": [...]}`` -> ``{"value": [...]}`` (transitive; at most 20 ids, each a GUID, else 400
  ``Request_BadRequest``; user-checkmembergroups), ``GET /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user``
  (``$select``, ``$top`` default 100, ``@odata.nextLink`` with ``$skiptoken``; unknown group 404;
  group-list-transitivemembers), ``POST /v1.0/identityProtection/riskyUsers/dismiss`` ``{"userIds": [...]}`` ->
  204, riskState ``dismissed``, riskLevel ``none``, riskDetail ``adminDismissedAllRiskForUser``
  (riskyuser-dismiss; 403 without the P2 licence like the other Identity Protection calls);
- and it is the directory the Entra emulator signs people in from (``authenticate``: UPN and password; an
  authenticator code for MFA), with the people of the demo and tests: ``PEOPLE``.
Error bodies carry ``innerError`` {date, request-id, client-request-id} like Graph's.
"""

from __future__ import annotations

import copy
import hmac
import itertools
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from localdev.emulators.base import Emulator, Request, Response
from localdev.emulators.entra import GRAPH_AUDIENCE
from localdev.emulators.graph_domains import install_domains
from localdev.emulators.mail import install_send_mail

V1 = "https://graph.microsoft.com/v1.0/$metadata#"
USER_PROPERTIES = {"accountEnabled", "displayName", "givenName", "surname", "jobTitle", "department",
                   "mail", "mobilePhone", "officeLocation", "usageLocation", "userPrincipalName", "mailNickname"}
NOT_LICENSED = "Your tenant is not licensed for this feature."
LICENCE_ERRORS = (("Forbidden", NOT_LICENSED),
                  ("Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                   "Neither tenant is B2C or tenant doesn't have premium license"))
ADELE = "b1a2c3d4-e5f6-4789-8abc-def012345678"  # the Account entity of the sample incidents
LOCAL_PASSWORD = "Local-only-passw0rd"  # every seeded person's password (a loopback emulator, no real account)
MFA_CODE = "246810"  # the seeded people's authenticator code
SOC_APPROVERS_GROUP = "5a0c0b1e-0000-4000-8000-0000000000a1"
# (object id, UPN, display name, mail): approvers alice and bob, mallory who reads the SOC channel but decides
# nothing, carol who approves through the SOC approvers group, and dave, a guest whose mail is not his UPN.
PEOPLE = (
    ("a11ce000-0000-4000-8000-000000000001", "alice@contoso.com", "Alice Approver", "alice@contoso.com"),
    ("b0b00000-0000-4000-8000-000000000002", "bob@contoso.com", "Bob Approver", "bob@contoso.com"),
    ("3a110000-0000-4000-8000-000000000003", "mallory@contoso.com", "Mallory Member", "mallory@contoso.com"),
    ("ca201000-0000-4000-8000-000000000004", "carol@contoso.com", "Carol Groupmember", "carol@contoso.com"),
    ("da7e0000-0000-4000-8000-000000000005", "dave_fabrikam.com#ext#@contoso.onmicrosoft.com", "Dave Guest",
     "dave@fabrikam.com"),
)
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


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
        self._secrets: dict[str, tuple[str, str]] = {}  # user id -> (password, authenticator code)
        self._groups: dict[str, dict] = {}  # group id -> {"id", "displayName", "members": [object ids]}
        self._licence_forms = itertools.cycle(LICENCE_ERRORS)
        for method, pattern, handler in (
            ("GET", r"/v1\.0/users/(?P<user>[^/]+)", self._get_user),
            ("PATCH", r"/v1\.0/users/(?P<user>[^/]+)", self._patch_user),
            ("POST", r"/v1\.0/users/(?P<user>[^/]+)/revokeSignInSessions", self._revoke),
            ("GET", r"/v1\.0/identityProtection/riskyUsers/(?P<user>[^/]+)", self._get_risky),
            ("POST", r"/v1\.0/identityProtection/riskyUsers/confirmCompromised", self._confirm),
            ("POST", r"/v1\.0/identityProtection/riskyUsers/dismiss", self._dismiss),
            ("POST", r"/v1\.0/users/(?P<user>[^/]+)/checkMemberGroups", self._check_member_groups),
            ("GET", r"/v1\.0/groups/(?P<group>[^/]+)/transitiveMembers/microsoft\.graph\.user", self._group_users),
        ):
            self.route(method, pattern, self._guarded(handler))
        self.outbox = install_send_mail(self, authority, mailboxes)
        self.directory = install_domains(self, authority)  # GET /v1.0/domains (localdev/emulators/graph_domains.py)
        self._seed()

    # -- state and test controls --------------------------------------------------------------
    def _seed(self) -> None:
        if self.seed:
            self.add_user(ADELE, "adele.vance@contoso.com", "Adele Vance", password=LOCAL_PASSWORD)
            for object_id, upn, name, mail in PEOPLE:
                self.add_user(object_id, upn, name, mail=mail, password=LOCAL_PASSWORD,
                              guest="#ext#" in upn)
            self.add_group(SOC_APPROVERS_GROUP, "SOC approvers", [PEOPLE[3][0]])

    def reset(self) -> None:
        super().reset()
        self.outbox.clear()
        self.directory.reset()
        with self._state:
            self.licensed = self._licensed_default
            self._licence_forms = itertools.cycle(LICENCE_ERRORS)
            self._users.clear()
            self._privileged.clear()
            self._risky.clear()
            self._secrets.clear()
            self._groups.clear()
            self._seed()

    def add_user(self, object_id: str, upn: str, display_name: str = "", *, enabled: bool = True,
                 privileged: bool = False, mail: str | None = None, password: str | None = None,
                 mfa_code: str = MFA_CODE, guest: bool = False) -> dict:
        user = {"id": object_id, "userPrincipalName": upn, "displayName": display_name or upn.split("@")[0],
                "accountEnabled": enabled, "mail": mail or upn,
                "signInSessionsValidFromDateTime": "2026-01-05T09:00:00Z", "userType": "Guest" if guest else "Member"}
        with self._state:
            self._users[object_id.lower()] = user
            if privileged:
                self._privileged.add(object_id.lower())
            if password is not None:
                self._secrets[object_id.lower()] = (password, mfa_code)
        return dict(user)

    def add_group(self, group_id: str, name: str, members: list[str]) -> None:
        """A security group; ``members`` are user or group object ids (nested groups count transitively)."""
        with self._state:
            self._groups[group_id.lower()] = {"id": group_id.lower(), "displayName": name,
                                              "members": [m.lower() for m in members]}

    def add_member(self, group_id: str, member_id: str) -> None:
        with self._state:
            self._groups[group_id.lower()]["members"].append(member_id.lower())

    def remove_member(self, group_id: str, member_id: str) -> None:
        with self._state:
            self._groups[group_id.lower()]["members"].remove(member_id.lower())

    # -- the sign-in directory (used by the Entra emulator) ------------------------------------
    def set_enabled(self, object_id: str, enabled: bool) -> None:
        with self._state:
            self._users[object_id.lower()]["accountEnabled"] = enabled

    def authenticate(self, login: str, password: str) -> dict | None:
        """The user with this UPN (or mail) and password, enabled or not (the sign-in tells them apart); else None."""
        with self._state:
            key = login.strip().lower()
            user = self._find(key) or next((u for u in self._users.values() if u["mail"].lower() == key), None)
            if user is None:
                return None
            stored = self._secrets.get(user["id"].lower())
            return copy.deepcopy(user) if stored and hmac.compare_digest(stored[0], password) else None

    def verify_otp(self, object_id: str, code: str) -> bool:
        with self._state:
            stored = self._secrets.get(object_id.lower())
            return bool(stored) and hmac.compare_digest(stored[1], code.strip())

    def _member_ids(self, group_id: str, seen: set[str] | None = None) -> set[str]:
        """User ids in a group, through nested groups (transitive), each group visited once."""
        seen = seen if seen is not None else set()
        if group_id in seen or group_id not in self._groups:
            return set()
        seen.add(group_id)
        users: set[str] = set()
        for member in self._groups[group_id]["members"]:
            if member in self._groups:
                users |= self._member_ids(member, seen)
            else:
                users.add(member)
        return users

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
    def _unlicensed(self, req: Request) -> Response:
        with self._state:
            code, message = next(self._licence_forms)
        return _error(req, 403, code, message)

    def _get_risky(self, req: Request) -> Response:
        if not self.licensed:
            return self._unlicensed(req)
        with self._state:
            risky = self._risky.get(req.params["user"].lower())
            if risky is None:
                return self._missing(req, req.params["user"])
            return Response(200, {"@odata.context": V1 + "identityProtection/riskyUsers/$entity",
                                  **copy.deepcopy(risky)})

    def _confirm(self, req: Request) -> Response:
        return self._set_risks(req, "confirmedCompromised", "high", "adminConfirmedUserCompromised")

    def _dismiss(self, req: Request) -> Response:
        return self._set_risks(req, "dismissed", "none", "adminDismissedAllRiskForUser")

    def _set_risks(self, req: Request, state: str, level: str, detail: str) -> Response:
        """confirmCompromised and dismiss: the same body (``userIds``), licence check and errors."""
        if not self.licensed:
            return self._unlicensed(req)
        body = self._body(req)
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return _error(req, 400, "BadRequest", "The 'userIds' property is required and must be a list of ids.")
        with self._state:
            if any(i.lower() not in self._users for i in ids):
                return _error(req, 400, "BadRequest", "One or more user ids are invalid.")
            for object_id in ids:
                self.set_risk(object_id, state, level)
                self._risky[object_id.lower()]["riskDetail"] = detail
            return Response(204)

    # -- groups -------------------------------------------------------------------------------
    def _check_member_groups(self, req: Request) -> Response:
        body = self._body(req)
        ids = body.get("groupIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) and GUID_RE.match(i) for i in ids):
            return _error(req, 400, "Request_BadRequest", "Invalid GUID in groupIds.")
        if len(ids) > 20:
            return _error(req, 400, "Request_BadRequest", "The number of groupIds must not exceed 20.")
        with self._state:
            user = self._find(req.params["user"])
            if user is None:
                return self._missing(req, req.params["user"])
            member = user["id"].lower()
            found = [i for i in ids if member in self._member_ids(i.lower())]
        return Response(200, {"@odata.context": V1 + "Collection(Edm.String)", "value": found})

    def _group_users(self, req: Request) -> Response:
        group_id = req.params["group"].lower()
        try:
            top = max(1, min(999, int(req.query.get("$top", "100"))))
            skip = max(0, int(req.query.get("$skiptoken", "0")))
        except ValueError:
            return _error(req, 400, "Request_BadRequest", "Invalid $top or $skiptoken.")
        with self._state:
            if group_id not in self._groups:
                return self._missing(req, req.params["group"])
            ids = sorted(self._member_ids(group_id))
            users = [self._users[i] for i in ids if i in self._users]
            select = [f.strip() for f in req.query.get("$select", "").split(",") if f.strip()]
            page = [{"@odata.type": "#microsoft.graph.user",
                     **{k: v for k, v in u.items() if not select or k in select or k == "id"}}
                    for u in users[skip:skip + top]]
        body: dict[str, Any] = {"@odata.context": V1 + "users", "value": copy.deepcopy(page)}
        if skip + top < len(users):
            query = {k: v for k, v in req.query.items() if k != "$skiptoken"} | {"$skiptoken": str(skip + top)}
            body["@odata.nextLink"] = f"{self.url}{req.path}?{urlencode(query)}"
        return Response(200, body)
