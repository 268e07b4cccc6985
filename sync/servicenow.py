"""ServiceNow Table API client (pysnow) for the ``incident`` and ``sys_journal_field`` tables.

A plain class, free of Azure Functions types. Why it is shaped the way it is:
- pysnow is imported when a client is built, never at cold start (it costs ~0.3 s to import).
- Two sessions: reads go through the pack's retrying session (429/5xx, connection errors);
  writes (POST, PATCH) through a session that does not retry, because ServiceNow has no
  idempotency key: a create or a work note retried after a read timeout would be written twice.
  A failed write surfaces as a PackError and the caller's next run re-reads before writing again
  (look-up by correlation id; work notes carry a marker the sync recognises).
- pysnow's own ``update`` is a GET then a PUT; the sync already holds the record it reads, so an
  update here is one PATCH through pysnow's custom request.
- pysnow raises ``requests.HTTPError`` for every 4xx/5xx and its own exceptions for odd bodies:
  both are mapped to the pack's error model here, with ServiceNow's ``error.message`` and never a
  credential.
- A fresh pysnow ``Resource`` per call: a Resource shares its query parameters between requests,
  so one shared across threads would mix their queries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests

from core.errors import BadRequest, ConfigurationError, DownstreamError, Forbidden, NotFound, PackError, Throttled
from core.http import retry_after_seconds

log = logging.getLogger(__name__)

INCIDENT = "/table/incident"
JOURNAL = "/table/sys_journal_field"
TICKET_FIELDS = ("sys_id", "number", "state", "priority", "impact", "urgency", "assigned_to", "close_code",
                 "close_notes", "correlation_id", "correlation_display", "short_description", "sys_created_on",
                 "sys_updated_on", "sys_mod_count")
JOURNAL_FIELDS = ("sys_id", "element_id", "element", "value", "sys_created_on", "sys_created_by")
JOURNAL_ELEMENTS = ("comments", "work_notes")
MAX_JOURNAL_PAGES = 20


def ref_value(value: Any) -> str:
    """The sys_id of a reference field, whether it came as ``{link, value}`` or as a plain string."""
    if isinstance(value, dict):
        return str(value.get("value") or "")
    return "" if value is None else str(value)


def query_value(value: str) -> str:
    """Escape a value for an encoded query: a literal ``^`` is written ``^^``."""
    return str(value).replace("^", "^^")


class ServiceNowClient:
    """Tickets and journal entries of one ServiceNow instance, as the integration user."""

    def __init__(self, instance_url: str, username: str, password: str, *, read_session: requests.Session,
                 write_session: requests.Session, timeout: float = 10.0) -> None:
        import pysnow

        parts = urlsplit(instance_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError("setting SERVICENOW_INSTANCE_URL must be https://<instance>.service-now.com")
        self.instance_url = f"{parts.scheme}://{parts.netloc}"
        self.username = username
        self.timeout = timeout
        clients = []
        for session in (read_session, write_session):
            session.auth = (username, str(password))
            clients.append(pysnow.Client(host=parts.netloc, use_ssl=parts.scheme == "https", session=session))
        self._reads, self._writes = clients

    def __repr__(self) -> str:  # never show the session (it holds the password)
        return f"ServiceNowClient({self.instance_url!r}, user={self.username!r})"

    def ticket_url(self, sys_id: str) -> str:
        return f"{self.instance_url}/nav_to.do?uri=incident.do%3Fsys_id%3D{sys_id}"

    # -- plumbing -----------------------------------------------------------------------------
    def _resource(self, path: str, *, write: bool = False, fields: Sequence[str] = ()):
        resource = (self._writes if write else self._reads).resource(api_path=path, timeout=self.timeout)
        if fields:
            resource.parameters.fields = list(fields)
        return resource

    @contextmanager
    def _answers(self, what: str) -> Iterator[None]:
        """Turn what pysnow and requests raise into the pack's errors."""
        from pysnow.exceptions import PysnowException

        try:
            yield
        except PackError:
            raise
        except requests.HTTPError as exc:
            raise self._http_error(exc.response, what) from None
        except requests.Timeout:
            raise DownstreamError(f"ServiceNow did not answer in time ({what})", code="ServiceNowTimeout") from None
        except requests.ConnectionError:
            raise DownstreamError(f"ServiceNow could not be reached ({what})", code="ServiceNowUnreachable") from None
        except (PysnowException, ValueError) as exc:  # requests' JSONDecodeError is a ValueError too
            raise DownstreamError(f"ServiceNow answered with an unexpected body ({what}): {type(exc).__name__}",
                                  code="ServiceNowBadAnswer") from None
        except requests.RequestException as exc:
            raise DownstreamError(f"ServiceNow request failed ({what}): {type(exc).__name__}") from None

    @staticmethod
    def _http_error(response: requests.Response | None, what: str) -> PackError:
        if response is None:
            return DownstreamError(f"ServiceNow request failed ({what})")
        status = response.status_code
        try:
            error = response.json().get("error") or {}
            text = "; ".join(str(part) for part in (error.get("message"), error.get("detail")) if part)[:300]
        except (ValueError, AttributeError):
            text = ""
        text = text or f"HTTP {status}"
        if status == 401:
            return ConfigurationError(f"ServiceNow rejected the integration user ({text}): check SERVICENOW_USERNAME "
                                      "and SERVICENOW_PASSWORD", code="ServiceNowCredentialsRejected")
        if status == 403:
            return Forbidden(f"ServiceNow refused to {what}: {text}", code="ServiceNowForbidden")
        if status == 404:
            return NotFound(f"ServiceNow: {what}: {text}", code="ServiceNowNotFound")
        if status == 429:
            return Throttled(f"ServiceNow throttled the request ({what})", code="ServiceNowThrottled",
                             retry_after=retry_after_seconds(response))
        if status >= 500:
            retry = retry_after_seconds(response) if "Retry-After" in response.headers else 30
            return DownstreamError(f"ServiceNow failed with HTTP {status} ({what})", code="ServiceNowUnavailable",
                                   retry_after=retry)
        return BadRequest(f"ServiceNow rejected the request ({what}): {text}", code="ServiceNowBadRequest")

    # -- incident -----------------------------------------------------------------------------
    def get_ticket(self, sys_id: str) -> dict:
        with self._answers(f"read incident {sys_id}"):
            return self._resource(INCIDENT, fields=TICKET_FIELDS).request("GET", path_append=f"/{sys_id}").one()

    def find_by_correlation(self, correlation_id: str, source: str) -> dict | None:
        """The ticket created for ``correlation_id`` earlier, if any (oldest first when several)."""
        query = (f"correlation_id={query_value(correlation_id)}^correlation_display={query_value(source)}"
                 "^ORDERBYsys_created_on")
        with self._answers("look up the ticket by correlation id"):
            found = self._resource(INCIDENT).get(query=query, limit=10, fields=list(TICKET_FIELDS)).all()
        # A misspelt field in an encoded query is silently dropped and matches everything: check.
        found = [t for t in found if t.get("correlation_id") == correlation_id]
        return found[0] if found else None

    def create_ticket(self, fields: dict[str, str]) -> dict:
        with self._answers("create the incident"):
            return self._resource(INCIDENT, write=True, fields=TICKET_FIELDS).create(fields).one()

    def update_ticket(self, sys_id: str, fields: dict[str, str]) -> dict:
        with self._answers(f"update incident {sys_id}"):
            resource = self._resource(INCIDENT, write=True, fields=TICKET_FIELDS)
            return resource.request("PATCH", path_append=f"/{sys_id}", data=json.dumps(fields)).one()

    def changed_since(self, since: str, source: str, *, limit: int, offset: int = 0) -> list[dict]:
        """Tickets of ``source`` updated at or after ``since``, oldest change first (stable order)."""
        query = (f"correlation_display={query_value(source)}^sys_updated_on>={query_value(since)}"
                 "^ORDERBYsys_updated_on^ORDERBYsys_id")
        with self._answers("list changed incidents"):
            return list(self._resource(INCIDENT).get(query=query, limit=limit, offset=offset,
                                                     fields=list(TICKET_FIELDS)).all())

    # -- journal ------------------------------------------------------------------------------
    def journal(self, sys_ids: Sequence[str], since: str, *, limit: int = 100) -> list[dict]:
        """Work notes and comments of the tickets ``sys_ids`` created at or after ``since``, oldest first."""
        if not sys_ids:
            return []
        query = (f"name=incident^element_idIN{','.join(sys_ids)}^elementIN{','.join(JOURNAL_ELEMENTS)}"
                 f"^sys_created_on>={query_value(since)}^ORDERBYsys_created_on^ORDERBYsys_id")
        entries: list[dict] = []
        with self._answers("read work notes and comments"):
            for page in range(MAX_JOURNAL_PAGES):
                rows = list(self._resource(JOURNAL).get(query=query, limit=limit, offset=page * limit,
                                                        fields=list(JOURNAL_FIELDS)).all())
                entries += rows
                if len(rows) < limit:
                    break
            else:
                log.warning("journal of %d ticket(s) has more than %d entries since %s; the rest follows next run",
                            len(sys_ids), MAX_JOURNAL_PAGES * limit, since)
        wanted = set(sys_ids)
        return [e for e in entries if ref_value(e.get("element_id")) in wanted and e.get("element") in JOURNAL_ELEMENTS]


__all__ = ["JOURNAL_FIELDS", "TICKET_FIELDS", "ServiceNowClient", "query_value", "ref_value"]
