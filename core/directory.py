"""Who people are in Entra ID, read through Microsoft Graph: users, group members, group membership checks.

Approvals resolve ``APPROVERS`` (UPNs, user object ids, group object ids) to people with a mailbox, and check
that a signed-in person is (still) one of them; the user's own confirmation mails the incident's account.
Plain HTTP over the pack's one session and token provider (a few small reads do not justify msgraph-sdk's
import cost). Graph contracts used (Graph v1.0 reference):
- ``GET /users/{id | userPrincipalName}?$select=...`` (User.Read.All): 404 ``Request_ResourceNotFound``;
- ``GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=...`` (GroupMember.Read.All), paged by
  ``@odata.nextLink``; 404 for an id that is no group;
- ``POST /users/{id}/checkMemberGroups`` ``{"groupIds": [...]}`` -> ``{"value": [ids the user is a member of,
  transitively]}``, at most 20 ids per request (User.Read.All and GroupMember.Read.All).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from core.credentials import GRAPH_SCOPE, TokenProvider
from core.errors import DownstreamError, Forbidden
from core.http import call, error_code_of, json_object

log = logging.getLogger(__name__)

SELECT = "id,userPrincipalName,mail,displayName"
CHECK_BATCH = 20  # checkMemberGroups takes at most 20 group ids per request
MAX_PAGES = 50  # 5,000 members: an approvers group is a handful of people


@dataclass(frozen=True)
class Person:
    """Someone the pack writes to or lets decide."""

    id: str = ""  # Entra object id ("" when the APPROVERS entry could not be looked up)
    upn: str = ""
    mail: str = ""
    name: str = ""

    @property
    def key(self) -> str:
        """What a personal link names: the UPN when known (readable), else the object id."""
        return (self.upn or self.id or self.mail).lower()

    @property
    def address(self) -> str:
        """Where mail goes: the mailbox address (a guest's UPN is not their mail), else the UPN."""
        return (self.mail or self.upn).lower()

    @property
    def label(self) -> str:
        return f"{self.name} ({self.upn or self.mail})" if self.name else (self.upn or self.mail or self.id)

    def names(self) -> set[str]:
        return {v.lower() for v in (self.id, self.upn, self.mail) if v}

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "upn": self.upn, "mail": self.mail, "name": self.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Person:
        return cls(**{k: str(data.get(k) or "") for k in ("id", "upn", "mail", "name")})

    @classmethod
    def from_graph(cls, user: dict[str, Any]) -> Person:
        return cls(id=str(user.get("id") or "").lower(), upn=str(user.get("userPrincipalName") or "").lower(),
                   mail=str(user.get("mail") or "").lower(), name=str(user.get("displayName") or "")[:200])


class Directory:
    def __init__(self, session: requests.Session, tokens: TokenProvider, graph_endpoint: str) -> None:
        self.session = session
        self.tokens = tokens
        self.endpoint = graph_endpoint.rstrip("/")

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = call(self.session, method, url, service="Graph",
                        headers={"Authorization": self.tokens.bearer(GRAPH_SCOPE)}, **kwargs)
        if response.status_code == 403:
            raise Forbidden(f"Graph refused a directory read ({error_code_of(response) or 'HTTP 403'}): grant the "
                            "function identity User.Read.All and GroupMember.Read.All", code="GraphDirectoryDenied")
        if response.status_code == 401:
            raise DownstreamError(f"Graph rejected the function's access token ({error_code_of(response)})",
                                  code="GraphUnauthorized")
        return response

    def user(self, id_or_upn: str) -> Person | None:
        response = self._call("GET", f"{self.endpoint}/v1.0/users/{quote(id_or_upn, safe='@')}",
                              params={"$select": SELECT})
        if response.status_code in (400, 404):  # 400: not a valid id or UPN at all
            return None
        if not response.ok:
            raise DownstreamError(f"Graph answered HTTP {response.status_code} reading a user")
        return Person.from_graph(json_object(response, "Graph"))

    def group_users(self, group_id: str) -> list[Person] | None:
        """The users in a group, nested groups included; None when the id is no group."""
        url: str | None = (f"{self.endpoint}/v1.0/groups/{quote(group_id, safe='')}/transitiveMembers/"
                           f"microsoft.graph.user")
        params: dict[str, str] | None = {"$select": SELECT, "$top": "100"}
        people: list[Person] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return people
            response = self._call("GET", url, params=params)
            if response.status_code in (400, 404):
                return None
            if not response.ok:
                raise DownstreamError(f"Graph answered HTTP {response.status_code} listing a group's members")
            page = json_object(response, "Graph")
            people += [Person.from_graph(u) for u in page.get("value") or [] if isinstance(u, dict)]
            url, params = self._next(page.get("@odata.nextLink")), None
        log.warning("group %s has more members than %d pages: the rest are not asked", group_id, MAX_PAGES)
        return people

    def _next(self, link: Any) -> str | None:
        """The next page, only on Graph's own host (the token goes with it)."""
        if not isinstance(link, str) or not link:
            return None
        if urlsplit(link).netloc.lower() != urlsplit(self.endpoint).netloc.lower():
            raise DownstreamError("Graph's next page link points at another host")
        return link

    def member_of(self, user_id: str, group_ids: list[str]) -> set[str]:
        """Which of ``group_ids`` the user belongs to, transitively."""
        found: set[str] = set()
        for start in range(0, len(group_ids), CHECK_BATCH):
            batch = group_ids[start:start + CHECK_BATCH]
            response = self._call("POST", f"{self.endpoint}/v1.0/users/{quote(user_id, safe='')}/checkMemberGroups",
                                  json={"groupIds": batch})
            if response.status_code == 404:
                return set()
            if not response.ok:
                raise DownstreamError(f"Graph answered HTTP {response.status_code} to checkMemberGroups")
            found |= {str(v).lower() for v in json_object(response, "Graph").get("value") or []}
        return found


__all__ = ["Directory", "Person"]
