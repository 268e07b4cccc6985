"""The one Sentinel (ARM) client: incidents, entities, alerts and comments.

Follows the SecurityInsights REST API 2025-09-01. Two properties make it safe under Logic
App retries and concurrent playbooks:
- comments are PUT under a caller-chosen, deterministic id, so a retried write overwrites
  the same comment instead of adding another;
- incident updates send the etag read just before; a 409 (someone else changed the incident)
  re-reads and re-applies the change, a bounded number of times, then answers 429 (``Busy``) so the
  Logic App retries later (it never retries a 409).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import requests

from core.credentials import ARM_SCOPE, TokenProvider
from core.errors import BadRequest, Busy, DownstreamError, Forbidden, NotFound, PackError
from core.http import call, error_code_of, error_message_of, json_object

log = logging.getLogger(__name__)

API_VERSION = "2025-09-01"
COMMENT_MAX_CHARS = 30_000
COMMENT_NAMESPACE = uuid.UUID("7f3c1b0e-5d2a-4c8e-9b6f-1a2d3e4f5a6b")


def comment_id(incident_id: str, *parts: str) -> str:
    """A deterministic comment id: the same incident and parts always give the same id."""
    return str(uuid.uuid5(COMMENT_NAMESPACE, "|".join([incident_id.lower(), *parts])))


class SentinelClient:
    """Plain client over a requests session and a token provider; no Azure Functions types."""

    def __init__(self, session: requests.Session, tokens: TokenProvider, arm_endpoint: str,
                 max_conflict_retries: int = 3) -> None:
        self.session = session
        self.tokens = tokens
        self.arm_endpoint = arm_endpoint.rstrip("/")
        self.max_conflict_retries = max_conflict_retries

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None) -> requests.Response:
        url = f"{self.arm_endpoint}{path}"
        headers = {"Authorization": self.tokens.bearer(ARM_SCOPE)}
        response = call(self.session, method, url, service="Sentinel", params={"api-version": API_VERSION},
                        json=body, headers=headers)
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

    # -- reads --------------------------------------------------------------------------------
    def get_incident(self, incident_id: str) -> dict:
        return self._json(self._request("GET", incident_id))

    def list_entities(self, incident_id: str) -> list[dict]:
        return list(self._json(self._request("POST", f"{incident_id}/entities")).get("entities") or [])

    def list_alerts(self, incident_id: str) -> list[dict]:
        return list(self._json(self._request("POST", f"{incident_id}/alerts")).get("value") or [])

    def list_comments(self, incident_id: str) -> list[dict]:
        return list(self._json(self._request("GET", f"{incident_id}/comments")).get("value") or [])

    # -- writes -------------------------------------------------------------------------------
    def put_comment(self, incident_id: str, comment_key: str, message: str) -> dict:
        """Create or overwrite the comment with id ``comment_key`` (idempotent)."""
        if len(message) > COMMENT_MAX_CHARS:
            raise ValueError(f"comment of {len(message)} characters exceeds {COMMENT_MAX_CHARS}")
        body = {"properties": {"message": message}}
        return self._json(self._request("PUT", f"{incident_id}/comments/{comment_key}", body))

    def update_incident(self, incident_id: str, change: Callable[[dict], bool]) -> dict:
        """Read the incident, let ``change`` edit its properties in place, PUT it with the etag.

        ``change`` returns False when nothing needs writing (then no PUT is sent). A 409 means
        someone changed the incident in between: read again and re-apply, up to the bound.
        """
        for attempt in range(self.max_conflict_retries + 1):
            incident = self.get_incident(incident_id)
            properties = dict(incident.get("properties") or {})
            if not change(properties):
                return incident
            body = {"etag": incident.get("etag"), "properties": properties}
            try:
                return self._json(self._request("PUT", incident_id, body))
            except Busy:
                log.info("etag conflict on %s, attempt %d", incident_id, attempt + 1)
        raise Busy(f"Sentinel: the incident kept changing; gave up after {self.max_conflict_retries + 1} "
                   "attempts", code="Conflict", retry_after=5)

    def add_labels(self, incident_id: str, *labels: str) -> dict:
        """Add user labels that are not there yet (case-insensitive), in one etag-safe update."""

        def change(properties: dict) -> bool:
            current = list(properties.get("labels") or [])
            have = {str(label.get("labelName", "")).lower() for label in current}
            missing = [name for name in labels if name.lower() not in have]
            properties["labels"] = current + [{"labelName": name, "labelType": "User"} for name in missing]
            return bool(missing)

        return self.update_incident(incident_id, change)


__all__ = ["API_VERSION", "COMMENT_MAX_CHARS", "PackError", "SentinelClient", "comment_id"]
