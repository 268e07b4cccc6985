"""ServiceNow Table API client (pysnow) for ``incident``, ``sys_journal_field`` and ``sys_choice``.

A plain class, free of Azure Functions types. Why it is shaped the way it is:
- pysnow is imported when a client is built, never at cold start (it costs ~0.3 s to import).
- Two sessions: reads go through the pack's retrying session (429/5xx, connection errors);
  writes (POST, PATCH) through a session that does not retry, because ServiceNow has no
  idempotency key: a create or a work note retried after a read timeout would be written twice.
  A failed write surfaces as a PackError and the caller's next run re-reads before writing again
  (look-up by correlation id; work notes carry a marker the sync recognises).
- pysnow's own ``update`` is a GET then a PUT; the sync already holds the record it reads, so an
  update here is one PATCH through pysnow's custom request, and its answer is the record after the update.
- Every query is built by sync/query.py from values of a known shape: no free text, no ``javascript:``.
- Lists read ``X-Total-Count``: ServiceNow applies ``sysparm_limit`` before row ACLs, so a short page does not
  mean the last page, and rows counted but not returned are rows the integration user may not read.
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
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from core.errors import BadRequest, ConfigurationError, DownstreamError, Forbidden, NotFound, PackError, Throttled
from core.http import retry_after_seconds
from sync import query as q
from sync.fields import clip_field

log = logging.getLogger(__name__)

INCIDENT = "/table/incident"
JOURNAL = "/table/sys_journal_field"
CHOICES = "/table/sys_choice"
TICKET_FIELDS = ("sys_id", "number", "state", "priority", "impact", "urgency", "assigned_to", "close_code",
                 "close_notes", "correlation_id", "correlation_display", "short_description", "sys_created_on",
                 "sys_updated_on", "sys_mod_count", "parent_incident")
JOURNAL_FIELDS = ("sys_id", "element_id", "element", "value", "sys_created_on", "sys_created_by")
JOURNAL_ELEMENTS = ("comments", "work_notes")
MAX_JOURNAL_PAGES = 20
# sysparm_query travels in the URL, and ServiceNow answers 414 past 8192 bytes: 100 sys_ids (3.3 KB) per IN list.
IN_CHUNK = 100
ACL_REFUSED = "ServiceNowAclRefused"


def ref_value(value: Any) -> str:
    """The sys_id of a reference field, whether it came as ``{link, value}`` or as a plain string."""
    if isinstance(value, dict):
        return str(value.get("value") or "")
    return "" if value is None else str(value)


@dataclass
class Page:
    """One answer to a list request: its rows, ``X-Total-Count`` and the instance's clock (``Date``)."""

    rows: list[dict] = field(default_factory=list)
    total: int | None = None
    instance_time: str | None = None  # "YYYY-MM-DD HH:MM:SS" (UTC) when ServiceNow answered

    @property
    def hidden(self) -> int:
        """Rows the query counted on this page's range but the user may not read (0 when unknown)."""
        return 0 if self.total is None else max(0, self.total - len(self.rows))


@dataclass(frozen=True)
class Position:
    """Where a poll stands in ``(sys_updated_on, sys_id)`` order; an empty sys_id means "from this second on"."""

    stamp: str
    sys_id: str = ""

    def before(self, row: dict) -> bool:
        return (str(row.get("sys_updated_on") or ""), str(row.get("sys_id") or "")) > (self.stamp, self.sys_id)


class ServiceNowClient:
    """Tickets, journal entries and choice lists of one ServiceNow instance, as the integration user."""

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
            code = ACL_REFUSED if "ACL Exception" in text else "ServiceNowForbidden"
            return Forbidden(f"ServiceNow refused to {what}: {text}", code=code)
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

    def _list(self, path: str, query: str, *, limit: int, offset: int = 0, fields: Sequence[str] = ()) -> Page:
        response = self._resource(path).get(query=query, limit=limit, offset=offset, fields=list(fields))
        rows = list(response.all())
        headers = response.headers
        total = headers.get("X-Total-Count")
        return Page(rows, int(total) if str(total or "").isdigit() else None, _instance_time(headers.get("Date")))

    # -- incident -----------------------------------------------------------------------------
    def get_ticket(self, sys_id: str) -> dict:
        sys_id = q.sys_id(sys_id)
        with self._answers(f"read incident {sys_id}"):
            return self._resource(INCIDENT, fields=TICKET_FIELDS).request("GET", path_append=f"/{sys_id}").one()

    def find_by_correlation(self, incident_key: str, source: str, *, exclude: Sequence[str] = ()) -> dict | None:
        """The oldest ticket created for incident ``incident_key`` (a GUID) that is not in ``exclude``."""
        key = q.guid(incident_key)
        query = q.joined(q.condition("correlation_id", "=", key),
                         q.condition("correlation_display", "=", q.word(source, "SERVICENOW_MAPPING source")),
                         q.order_by("sys_created_on"))
        with self._answers("look up the ticket by correlation id"):
            found = self._list(INCIDENT, query, limit=20, fields=TICKET_FIELDS).rows
        # A misspelt field in an encoded query is silently dropped and matches everything: check.
        found = [t for t in found if t.get("correlation_id") == key and t.get("sys_id") not in exclude]
        return found[0] if found else None

    def create_ticket(self, fields: dict[str, str]) -> dict:
        with self._answers("create the incident"):
            return self._resource(INCIDENT, write=True, fields=TICKET_FIELDS).create(_clipped(fields)).one()

    def update_ticket(self, sys_id: str, fields: dict[str, str]) -> dict:
        sys_id = q.sys_id(sys_id)
        with self._answers(f"update incident {sys_id}"):
            resource = self._resource(INCIDENT, write=True, fields=TICKET_FIELDS)
            return resource.request("PATCH", path_append=f"/{sys_id}", data=json.dumps(_clipped(fields))).one()

    def changed_after(self, position: Position, source: str, *, limit: int, offset: int = 0) -> Page:
        """Tickets of ``source`` after ``position`` in (sys_updated_on, sys_id) order, oldest change first.

        "After" is "a later second, or the same second and a later sys_id" (``^NQ``: ServiceNow's encoded
        queries have no parentheses). Should an instance ignore the ``sys_id`` condition, the rest of that second
        comes back again: such rows are dropped here (and the poll skips any it has handled), so the order stays
        right either way.
        """
        source = q.word(source, "SERVICENOW_MAPPING source")
        ours = q.condition("correlation_display", "=", source)
        at = q.stamp(position.stamp, "the poll position")
        if position.sys_id:
            later = q.joined(ours, q.condition("sys_updated_on", ">", at))
            same = q.joined(ours, q.condition("sys_updated_on", ">=", at), q.condition("sys_updated_on", "<=", at),
                            q.condition("sys_id", ">", q.sys_id(position.sys_id)))
            where = q.new_query(later, same)
        else:
            where = q.joined(ours, q.condition("sys_updated_on", ">=", at))
        query = q.joined(where, q.order_by("sys_updated_on", "sys_id"))
        with self._answers("list changed incidents"):
            page = self._list(INCIDENT, query, limit=limit, offset=offset, fields=TICKET_FIELDS)
        page.rows = [row for row in page.rows if position.before(row)]
        return page

    # -- journal ------------------------------------------------------------------------------
    def journal(self, sys_ids: Sequence[str], since: str, *, limit: int = 100) -> tuple[list[dict], int]:
        """(work notes and comments of the tickets ``sys_ids`` created at or after ``since``, oldest first;
        how many rows the query counted that the integration user may not read)."""
        wanted = [q.sys_id(s) for s in dict.fromkeys(sys_ids)]
        entries: list[dict] = []
        hidden = 0
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start:start + IN_CHUNK]
            query = q.joined(q.condition("name", "=", "incident"), q.one_of("element_id", chunk),
                             q.one_of("element", JOURNAL_ELEMENTS),
                             q.condition("sys_created_on", ">=", q.stamp(since or "1970-01-01 00:00:00")),
                             q.order_by("sys_created_on", "sys_id"))
            with self._answers("read work notes and comments"):
                for number in range(MAX_JOURNAL_PAGES):
                    page = self._list(JOURNAL, query, limit=limit, offset=number * limit, fields=JOURNAL_FIELDS)
                    entries += page.rows
                    seen = min(limit, max(0, (page.total if page.total is not None else 0) - number * limit))
                    hidden += max(0, seen - len(page.rows))
                    if page.total is None or (number + 1) * limit >= page.total:
                        break
                else:
                    log.warning("journal of %d ticket(s) has more than %d entries since %s; the rest follows next run",
                                len(chunk), MAX_JOURNAL_PAGES * limit, since)
        keep = set(wanted)
        return ([e for e in entries if ref_value(e.get("element_id")) in keep and e.get("element") in JOURNAL_ELEMENTS],
                hidden)

    def journal_visibility(self) -> Page:
        """One incident journal row, with the count of all of them: counted but not returned means the
        integration user cannot read sys_journal_field (ServiceNow answers 200, not 403)."""
        query = q.joined(q.condition("name", "=", "incident"), q.one_of("element", JOURNAL_ELEMENTS))
        with self._answers("read work notes and comments"):
            return self._list(JOURNAL, query, limit=1, fields=("sys_id",))

    # -- instance -----------------------------------------------------------------------------
    def ping(self) -> Page:
        """The cheapest authenticated read (one incident sys_id): checks the URL and the credentials."""
        with self._answers("read incidents"):
            return self._list(INCIDENT, "", limit=1, fields=("sys_id",))

    def choices(self, elements: Sequence[str]) -> dict[str, set[str]]:
        """The active ``incident.<element>`` choice values, per element (Forbidden without read access)."""
        query = q.joined(q.condition("name", "=", "incident"),
                         q.one_of("element", [q.word(e, "a choice element") for e in elements]),
                         q.condition("inactive", "=", "false"))
        with self._answers("read the incident choice lists (sys_choice)"):
            page = self._list(CHOICES, query, limit=1000, fields=("element", "value"))
        found: dict[str, set[str]] = {element: set() for element in elements}
        for row in page.rows:
            found.setdefault(str(row.get("element") or ""), set()).add(str(row.get("value") or ""))
        return found


def _clipped(fields: dict[str, str]) -> dict[str, str]:
    return {name: clip_field(name, value) if isinstance(value, str) else value for name, value in fields.items()}


def _instance_time(header: str | None) -> str | None:
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return None


__all__ = ["ACL_REFUSED", "JOURNAL_FIELDS", "TICKET_FIELDS", "Page", "Position", "ServiceNowClient", "ref_value"]
