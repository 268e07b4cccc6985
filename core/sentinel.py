"""The one Sentinel (ARM) client: incidents, entities, alerts, comments, relations and tasks.

Follows the SecurityInsights REST API 2025-09-01 (``../shared/contracts/sentinel/``). The lists the spec
marks ``x-ms-pageable`` (incidents, comments, relations, tasks) answer a page and a ``nextLink``: the
client follows it, only to the ARM endpoint it was given (the link carries the token's audience, nothing
else may receive the token), and stops at a repeated link or a page bound. The entities and alerts lists
are POSTs without paging. Every call's path must lie under a workspace ``SENTINEL_WORKSPACES`` names
(core/workspace.py), whatever path led to it.

Two properties make it safe under Logic App retries and concurrent playbooks:
- comments are PUT under a caller-chosen, deterministic id, so a retried write overwrites
  the same comment instead of adding another;
- incident updates send the etag read just before; a 409 (someone else changed the incident)
  re-reads and re-applies the change, a bounded number of times, then answers 429 (``Busy``) so the
  Logic App retries later (it never retries a 409). An action that has just read the incident passes it
  as ``current``: the first attempt then needs no second read (issue #16: the incident read once per action).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import requests

from core.credentials import ARM_SCOPE, TokenProvider
from core.errors import BadRequest, Busy, DownstreamError, Forbidden, NotFound, PackError
from core.http import call, error_code_of, error_message_of, json_object

if TYPE_CHECKING:
    from core.workspace import Pinning

log = logging.getLogger(__name__)

API_VERSION = "2025-09-01"
COMMENT_MAX_CHARS = 30_000
COMMENT_NAMESPACE = uuid.UUID("7f3c1b0e-5d2a-4c8e-9b6f-1a2d3e4f5a6b")
MAX_PAGES = 100  # a comment list holds at most 100 comments; incident listings pass their own bound


def comment_id(incident_id: str, *parts: str) -> str:
    """A deterministic comment id: the same incident and parts always give the same id."""
    return str(uuid.uuid5(COMMENT_NAMESPACE, "|".join([incident_id.lower(), *parts])))


class SentinelClient:
    """Plain client over a requests session and a token provider; no Azure Functions types."""

    def __init__(self, session: requests.Session, tokens: TokenProvider, arm_endpoint: str,
                 max_conflict_retries: int = 3, pinning: Pinning | None = None) -> None:
        self.session = session
        self.tokens = tokens
        self.arm_endpoint = arm_endpoint.rstrip("/")
        self.max_conflict_retries = max_conflict_retries
        self.pinning = pinning

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None
                 ) -> requests.Response:
        if self.pinning is not None:
            self.pinning.check_path(path)
        url = f"{self.arm_endpoint}{path}"
        headers = {"Authorization": self.tokens.bearer(ARM_SCOPE)}
        params = {"api-version": API_VERSION, **(query or {})}
        response = call(self.session, method, url, service="Sentinel", params=params, json=body, headers=headers)
        if response.status_code < 400:
            return response
        code = error_code_of(response) or f"HTTP {response.status_code}"
        message = error_message_of(response)
        if response.status_code == 404:
            raise NotFound(f"Sentinel: {path.rsplit('/providers/', 1)[-1]} not found ({code})")
        if response.status_code == 409:
            raise Busy(f"Sentinel: conflicting update ({code})", code="Conflict", retry_after=5)
        if response.status_code == 401:
            raise DownstreamError(f"Sentinel rejected the function's access token ({code})",
                                  code="SentinelUnauthorized")
        if response.status_code == 403:
            # Our identity lacks a role: retrying will not help, the deployment must grant it.
            raise Forbidden(
                f"Sentinel refused the function's identity ({code}): grant it Microsoft Sentinel Responder "
                "on the workspace", code="SentinelAccessDenied")
        if response.status_code == 400:
            raise BadRequest(f"Sentinel rejected the request ({code}): {message}", code="SentinelBadRequest")
        raise DownstreamError(f"Sentinel answered HTTP {response.status_code} ({code})")

    @staticmethod
    def _json(response: requests.Response) -> dict:
        return json_object(response, "Sentinel")

    def _next(self, link: str, first_path: str) -> tuple[str, dict[str, str]]:
        """(path, query) of a ``nextLink``; it must point back at the ARM endpoint and the same list."""
        parts, base = urlsplit(link), urlsplit(self.arm_endpoint)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or \
                parts.path.rstrip("/").lower() != first_path.rstrip("/").lower():
            raise DownstreamError("Sentinel answered a nextLink outside the list it was reading; not followed",
                                  code="SentinelBadNextLink")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.pop("api-version", None)  # _request sends the client's own
        return parts.path, query

    def _pages(self, path: str, query: dict[str, str] | None = None, *, max_pages: int = MAX_PAGES) -> list[dict]:
        """Every item of a pageable list (``value`` + ``nextLink``), in the order ARM serves them."""
        items: list[dict] = []
        seen: set[str] = set()
        page_path, page_query = path, dict(query or {})
        for _ in range(max_pages):
            page = self._json(self._request("GET", page_path, query=page_query))
            items += [item for item in page.get("value") or () if isinstance(item, dict)]
            link = page.get("nextLink")
            if not isinstance(link, str) or not link or link in seen:
                return items
            seen.add(link)
            page_path, page_query = self._next(link, path)
        log.warning("stopped reading %s after %d pages", path.rsplit("/providers/", 1)[-1], max_pages)
        return items

    # -- reads --------------------------------------------------------------------------------
    def get_incident(self, incident_id: str) -> dict:
        return self._json(self._request("GET", incident_id))

    def list_entities(self, incident_id: str) -> list[dict]:
        return list(self._json(self._request("POST", f"{incident_id}/entities")).get("entities") or [])

    def list_alerts(self, incident_id: str) -> list[dict]:
        return list(self._json(self._request("POST", f"{incident_id}/alerts")).get("value") or [])

    def list_comments(self, incident_id: str) -> list[dict]:
        """Every comment, all pages (comments past the first page reach ServiceNow too)."""
        return self._pages(f"{incident_id}/comments")

    def get_comment(self, incident_id: str, comment_key: str) -> dict | None:
        """The comment, or None when the incident has no comment of that id."""
        try:
            return self._json(self._request("GET", f"{incident_id}/comments/{comment_key}"))
        except NotFound:
            return None

    def get_task(self, incident_id: str, task_id: str) -> dict | None:
        """The incident task, or None when there is none of that id."""
        try:
            return self._json(self._request("GET", f"{incident_id}/tasks/{task_id}"))
        except NotFound:
            return None

    def put_task(self, incident_id: str, task_id: str, properties: dict, etag: str | None = None) -> dict:
        """Create or replace a task (IncidentTasks_CreateOrUpdate); with ``etag``, a task changed since it was read
        is a 409 (Busy), never overwritten."""
        body: dict[str, Any] = {"properties": properties}
        if etag:
            body["etag"] = etag
        return self._json(self._request("PUT", f"{incident_id}/tasks/{task_id}", body))

    def list_relations(self, incident_id: str) -> list[dict]:
        return self._pages(f"{incident_id}/relations")

    def list_tasks(self, incident_id: str) -> list[dict]:
        return self._pages(f"{incident_id}/tasks")

    def list_incidents(self, workspace_id: str, *, filter_: str | None = None, top: int | None = None,
                       max_pages: int = 10) -> list[dict]:
        """Incidents of a workspace (``/subscriptions/…/workspaces/{name}``), following ``nextLink``."""
        query = {k: v for k, v in (("$filter", filter_), ("$top", str(top) if top else None)) if v}
        return self._pages(f"{workspace_id.rstrip('/')}/providers/Microsoft.SecurityInsights/incidents", query,
                           max_pages=max_pages)

    # -- writes -------------------------------------------------------------------------------
    def put_comment(self, incident_id: str, comment_key: str, message: str) -> dict:
        """Create or overwrite the comment with id ``comment_key`` (idempotent)."""
        if len(message) > COMMENT_MAX_CHARS:
            raise ValueError(f"comment of {len(message)} characters exceeds {COMMENT_MAX_CHARS}")
        body = {"properties": {"message": message}}
        return self._json(self._request("PUT", f"{incident_id}/comments/{comment_key}", body))

    def update_incident(self, incident_id: str, change: Callable[[dict], bool], *, current: dict | None = None
                        ) -> dict:
        """Read the incident, let ``change`` edit its properties in place, PUT it with the etag.

        ``change`` returns False when nothing needs writing (then no PUT is sent). A 409 means
        someone changed the incident in between: read again and re-apply, up to the bound. ``current``
        is the incident as this action just read it: the first attempt uses it instead of reading again.
        An update never stands in for a create: a PUT that created the incident (201, possible only with a
        ``current`` from a trigger body of an incident that did not exist) is NotFound.
        """
        for attempt in range(self.max_conflict_retries + 1):
            incident = current if attempt == 0 and current is not None else self.get_incident(incident_id)
            properties = dict(incident.get("properties") or {})
            if not change(properties):
                return incident
            body = {"etag": incident.get("etag"), "properties": properties}
            try:
                response = self._request("PUT", incident_id, body)
            except Busy:
                log.info("etag conflict on %s, attempt %d", incident_id, attempt + 1)
                continue
            if response.status_code == 201:
                # PUT is create-or-update: an update from a trigger body (``current``) of an incident that no longer
                # exists (or never did) created one. Nothing may act as if it had updated the incident.
                log.error("the update of %s created it: the incident did not exist", incident_id.rsplit("/", 1)[-1])
                raise NotFound(f"Sentinel: {incident_id.rsplit('/providers/', 1)[-1]} not found (the update created "
                               "an incident of that id: it did not exist)")
            return self._json(response)
        raise Busy(f"Sentinel: the incident kept changing; gave up after {self.max_conflict_retries + 1} "
                   "attempts", code="Conflict", retry_after=5)

    def add_labels(self, incident_id: str, *labels: str, current: dict | None = None) -> dict:
        """Add user labels that are not there yet (case-insensitive), in one etag-safe update."""

        def change(properties: dict) -> bool:
            current = list(properties.get("labels") or [])
            have = {str(label.get("labelName", "")).lower() for label in current}
            missing = [name for name in labels if name.lower() not in have]
            properties["labels"] = current + [{"labelName": name, "labelType": "User"} for name in missing]
            return bool(missing)

        return self.update_incident(incident_id, change, current=current)


__all__ = ["API_VERSION", "COMMENT_MAX_CHARS", "PackError", "SentinelClient", "comment_id"]
