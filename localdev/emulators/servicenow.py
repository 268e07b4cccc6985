"""ServiceNow Table API (``/api/now/table/{table}``) for ``incident``, ``sys_journal_field`` and ``sys_choice``.

What it models and where each behaviour comes from is listed in docs/emulators.md ("ServiceNow Table
API"); the short version:
- basic auth for the configured users (401 ``User Not Authenticated`` otherwise); every user holds ``itil``
  unless ``roles`` says otherwise (``admin``: everything);
- ``{"result": ...}`` bodies, every value a string, references as ``{"link", "value"}`` (or the bare sys_id
  with ``sysparm_exclude_reference_link=true``), ``sysparm_fields``;
- ``sysparm_query``: ``^`` (AND), ``^OR``, ``^NQ`` (a new OR'ed query), ``=``, ``!=``, ``>``, ``>=``, ``<``,
  ``<=``, ``IN``, ``NOT IN``, ``LIKE``, ``NOT LIKE``, ``STARTSWITH``, ``ENDSWITH``, ``ISEMPTY``,
  ``ISNOTEMPTY``, ``BETWEEN``; ``ORDERBY``/``ORDERBYDESC`` on several fields (numbers compare as numbers,
  everything else as text); a condition on an unknown field is dropped (a typo matches everything); a
  ``javascript:`` value is server-side script: it is recorded in ``scripts`` (what an attacker would have
  run) and evaluates to nothing;
- paging: ``sysparm_limit`` (default 10000, applied *before* row ACLs), ``sysparm_offset``, ``X-Total-Count``
  (the query's rows, counted before row ACLs; left out with ``sysparm_no_count=true``), ``Link``; a URL
  over 8192 bytes answers 414; the ``Date`` header follows the instance clock (``advance``);
- writes: priority from impact x urgency, ``sys_updated_on`` at second resolution, ``sys_mod_count`` only
  when something changed, journal rows from ``work_notes``/``comments``, the resolve data policy (403
  naming the form labels), strings clipped to their column (``varchar`` up to 255 characters), choice fields
  (``state``, ``close_code``) outside the choice list silently dropped, ``state`` 7 (Closed) settable only by
  ``itil_admin``/``admin`` (a field ACL: dropped, not refused), and closed or canceled incidents read-only
  for everyone but ``admin`` (403 ``ACL Exception Update Failed due to security constraints``);
- ``sys_journal_field`` read-only; ``hide_journal_from(user)``: its rows are filtered by ACL after paging;
- ``sys_choice``: the out-of-box ``incident.state`` and ``incident.close_code`` choices; querying its
  ``name``/``element``/``value`` fields needs ``admin`` or ``allow_choice_query(user)`` (403 otherwise);
- late commits: ``begin_update`` stamps an update that stays invisible until ``commit``;
- faults on demand through the base class: ``fail(401)``, ``fail(429, retry_after=...)``, ``fail(503)``.
Not modelled: ``sysparm_display_value=true|all`` (400 says so), dot-walked fields, other tables.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from localdev.emulators.base import Emulator, Request, Response

# The incident columns (the sample answer's), with the value a new record starts with.
INCIDENT_DEFAULTS: dict[str, str] = {
    "sys_id": "", "number": "", "task_effective_number": "", "sys_class_name": "incident", "state": "1",
    "incident_state": "1", "active": "true", "impact": "3", "urgency": "3", "priority": "5", "severity": "3",
    "category": "inquiry", "subcategory": "", "contact_type": "", "short_description": "", "description": "",
    "correlation_id": "", "correlation_display": "", "caller_id": "", "opened_by": "", "assigned_to": "",
    "assignment_group": "", "company": "", "location": "", "cmdb_ci": "", "business_service": "",
    "parent_incident": "", "problem_id": "", "opened_at": "", "sys_created_on": "", "sys_created_by": "",
    "sys_updated_on": "", "sys_updated_by": "", "sys_mod_count": "0", "reassignment_count": "0",
    "reopen_count": "0", "hold_reason": "", "close_code": "", "close_notes": "", "resolved_at": "",
    "resolved_by": "", "closed_at": "", "closed_by": "", "work_notes": "", "comments": "",
    "comments_and_work_notes": "", "work_notes_list": "", "watch_list": "", "sys_tags": "", "sys_domain": "global",
    "sys_domain_path": "/", "approval": "not requested", "escalation": "0", "made_sla": "true", "knowledge": "false",
    "notify": "1",
}
JOURNAL_COLUMNS = ("sys_id", "sys_created_on", "name", "element_id", "sys_tags", "value", "sys_created_by", "element")
CHOICE_COLUMNS = ("sys_id", "name", "element", "value", "label", "language", "inactive", "sequence")
REFERENCES = {
    "caller_id": "sys_user", "opened_by": "sys_user", "assigned_to": "sys_user", "resolved_by": "sys_user",
    "closed_by": "sys_user", "assignment_group": "sys_user_group", "sys_domain": "sys_user_group",
    "company": "core_company", "location": "cmn_location", "cmdb_ci": "cmdb_ci", "business_service": "cmdb_ci_service",
    "parent_incident": "incident", "problem_id": "problem",
}
# Columns compared and sorted as numbers; every other column is text (date-times sort as text).
NUMBERS = {"state", "incident_state", "impact", "urgency", "priority", "severity", "sys_mod_count",
           "reassignment_count", "reopen_count", "escalation", "notify", "sequence"}
# String columns stored as varchar(max_length) (max_length <= 255): longer values are clipped to the column.
# Longer fields (description, close_notes, journal values) are mediumtext, 16 MB (KB0685779).
VARCHAR = {"short_description": 160, "correlation_id": 100, "correlation_display": 100, "number": 40,
           "task_effective_number": 40, "category": 40, "subcategory": 40, "contact_type": 40, "hold_reason": 40}
# Set by the platform, never by a caller.
SYSTEM = {"sys_id", "number", "task_effective_number", "sys_class_name", "priority", "incident_state", "active",
          "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count", "reopen_count",
          "opened_by", "resolved_at", "resolved_by", "closed_at", "closed_by", "comments_and_work_notes"}
JOURNAL_ELEMENTS = ("work_notes", "comments")
# Default priority lookup: (impact, urgency) -> priority.
PRIORITY = {("1", "1"): "1", ("1", "2"): "2", ("1", "3"): "3", ("2", "1"): "2", ("2", "2"): "3", ("2", "3"): "4",
            ("3", "1"): "3", ("3", "2"): "4", ("3", "3"): "5"}
CLOSED_STATES = ("6", "7")
INACTIVE_STATES = ("7", "8")
READ_ONLY_STATES = ("7", "8")  # closed or canceled: only admin may still edit the record
CLOSERS = {"itil_admin", "admin"}  # who may set state 7 (Closed)
# The out-of-box choice lists (sys_choice, incident, language en).
OOB_CHOICES: dict[str, list[tuple[str, str]]] = {
    "state": [("1", "New"), ("2", "In Progress"), ("3", "On Hold"), ("6", "Resolved"), ("7", "Closed"),
              ("8", "Canceled")],
    "close_code": [(code, code) for code in (
        "Duplicate", "Known error", "No resolution provided", "Resolved by caller", "Resolved by change",
        "Resolved by problem", "Resolved by request", "Solution provided", "Workaround provided", "User error")],
}
TABLES = ("incident", "sys_journal_field", "sys_choice")
MAX_URL_BYTES = 8192

_OPERATORS = ("!=", ">=", "<=", "=", ">", "<", "NOT IN", "IN", "NOT LIKE", "LIKE", "STARTSWITH", "ENDSWITH",
              "ISNOTEMPTY", "ISEMPTY", "BETWEEN")
_CONDITION = re.compile(r"^(?P<field>[a-z_][a-z0-9_.]*)(?P<op>" + "|".join(re.escape(op) for op in _OPERATORS)
                        + r")(?P<value>.*)$", re.DOTALL)
_CARET = "\x00caret\x00"
_SCRIPT = re.compile(r"^\s*javascript\s*:", re.IGNORECASE)


def _failure(status: int, message: str, detail: str | None = None) -> Response:
    return Response(status, {"error": {"message": message, "detail": detail}, "status": "failure"})


ACL_UPDATE = ("Operation Failed", "ACL Exception Update Failed due to security constraints")


def _text(value: Any) -> str:
    """How the Table API stores a JSON value: every value becomes a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return _text(value.get("value"))
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _key(field: str, value: str) -> tuple:
    """Sort and compare key of a column value: numbers as numbers, the rest as text."""
    if field in NUMBERS:
        try:
            return (0, int(value), "")
        except ValueError:
            return (1, 0, value)
    return (1, 0, value)


class _Query:
    """A parsed ``sysparm_query``: OR of (^NQ) groups, each an AND of OR-lists of conditions."""

    def __init__(self, text: str, columns: set[str], scripts: list[str]) -> None:
        self.groups: list[list[list[tuple[str, str, str]]]] = []
        self.order: list[tuple[str, bool]] = []
        self.fields: set[str] = set()
        text = (text or "").replace("^^", _CARET)
        for part in text.split("^NQ"):
            group: list[list[tuple[str, str, str]]] = []
            for token in part.split("^"):
                token = token.replace(_CARET, "^")
                if not token or token == "EQ":
                    continue
                if token.startswith("ORDERBYDESC"):
                    self.order.append((token[11:], True))
                    continue
                if token.startswith("ORDERBY"):
                    self.order.append((token[7:], False))
                    continue
                alternative = token.startswith("OR") and bool(group)
                condition = self._condition(token[2:] if alternative else token, columns, scripts)
                if condition is None:
                    continue  # unknown field or unparsable: dropped, as the platform does
                self.fields.add(condition[0])
                if alternative:
                    group[-1].append(condition)
                else:
                    group.append([condition])
            self.groups.append(group)

    @staticmethod
    def _condition(token: str, columns: set[str], scripts: list[str]) -> tuple[str, str, str] | None:
        match = _CONDITION.match(token)
        if not match or match["field"] not in columns:
            return None
        value = match["value"]
        if _SCRIPT.match(value):
            scripts.append(value)  # evaluated on the instance as server-side script
            value = ""
        return match["field"], match["op"], value

    def matches(self, record: dict[str, str]) -> bool:
        return any(all(any(self._test(record, *c) for c in alternatives) for alternatives in group)
                   for group in self.groups) if self.groups else True

    @staticmethod
    def _test(record: dict[str, str], field: str, op: str, value: str) -> bool:
        have = record.get(field, "")
        if op == "ISEMPTY":
            return have == ""
        if op == "ISNOTEMPTY":
            return have != ""
        if op in ("IN", "NOT IN"):
            found = have.lower() in {v.strip().lower() for v in value.split(",")}
            return found if op == "IN" else not found
        if op in ("LIKE", "NOT LIKE"):
            found = value.lower() in have.lower()
            return found if op == "LIKE" else not found
        if op == "STARTSWITH":
            return have.lower().startswith(value.lower())
        if op == "ENDSWITH":
            return have.lower().endswith(value.lower())
        if op == "BETWEEN":
            low, _, high = value.partition("@")
            return _key(field, low) <= _key(field, have) <= _key(field, high)
        if op == "=":
            return have.lower() == value.lower()
        if op == "!=":
            return have.lower() != value.lower()
        left, right = _key(field, have), _key(field, value)
        return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]

    def sort(self, records: list[dict[str, str]]) -> list[dict[str, str]]:
        for field, descending in reversed(self.order):
            records = sorted(records, key=lambda r, f=field: _key(f, r.get(f, "")), reverse=descending)
        return records


class ServiceNowEmulator(Emulator):
    """``incident``, ``sys_journal_field`` and ``sys_choice`` of one instance, behind basic auth."""

    name = "servicenow"

    def __init__(self, users: dict[str, str] | None = None, roles: dict[str, set[str]] | None = None, **kw) -> None:
        super().__init__(**kw)
        self.users = dict(users or {"admin": "admin"})
        self.roles = {"admin": {"admin"}, "system": {"admin"}, **(roles or {})}
        self.scripts: list[str] = []  # javascript: query values the instance would have run
        self._data: dict[str, dict[str, dict[str, str]]] = {}
        self._pending: dict[str, tuple[str, dict[str, str], dict[str, str], str]] = {}
        self._numbers = 10000
        self._offset = timedelta()
        self._state = threading.RLock()
        self._journal_hidden: set[str] = set()
        self._choice_readers: set[str] = set()
        self._fresh_tables()
        table = r"/api/now(?:/v[12])?/table/(?P<table>[^/]+)"
        self.route("GET", table, self._guarded(self._list))
        self.route("POST", table, self._guarded(self._create))
        self.route("GET", table + r"/(?P<sys_id>[^/]+)", self._guarded(self._get))
        self.route("PUT", table + r"/(?P<sys_id>[^/]+)", self._guarded(self._update))
        self.route("PATCH", table + r"/(?P<sys_id>[^/]+)", self._guarded(self._update))
        self.route("DELETE", table + r"/(?P<sys_id>[^/]+)", self._guarded(self._delete))

    def _fresh_tables(self) -> None:
        self._data = {table: {} for table in TABLES}
        self.set_choices("state", OOB_CHOICES["state"])
        self.set_choices("close_code", OOB_CHOICES["close_code"])

    def reset(self) -> None:
        """Forget records, faults, requests and ACL modes; the clock keeps its advance (time never goes back)."""
        super().reset()
        with self._state:
            self._fresh_tables()
            self._pending.clear()
            self._numbers = 10000
            self._journal_hidden.clear()
            self._choice_readers.clear()
            self.scripts.clear()

    def error_body(self, status: int, message: str | None = None) -> Any:
        return {"error": {"message": message or f"injected HTTP {status}", "detail": None}, "status": "failure"}

    # -- test and demo controls ---------------------------------------------------------------
    def env(self, username: str) -> dict[str, str]:
        return {"SERVICENOW_INSTANCE_URL": self.url, "SERVICENOW_USERNAME": username,
                "SERVICENOW_PASSWORD": self.users[username]}

    def advance(self, seconds: float) -> None:
        """Move the instance clock (``sys_updated_on``, ``Date``) forward, instead of sleeping in tests."""
        with self._state:
            self._offset += timedelta(seconds=seconds)

    def clock(self) -> datetime:
        with self._state:
            return datetime.now(UTC) + self._offset

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%d %H:%M:%S")

    def roles_of(self, user: str) -> set[str]:
        return self.roles.get(user, {"itil"})

    def hide_journal_from(self, user: str) -> None:
        """``user`` loses read access to sys_journal_field rows: queries answer 200 without them."""
        with self._state:
            self._journal_hidden.add(user)

    def allow_choice_query(self, user: str) -> None:
        """Grant ``user`` read access to sys_choice's name/element/value fields (an admin's choice)."""
        with self._state:
            self._choice_readers.add(user)

    def set_choices(self, element: str, choices: list[tuple[str, str]]) -> None:
        """Replace the instance's choice list of ``incident.<element>`` (an instance with its own codes)."""
        with self._state:
            table = self._data["sys_choice"]
            for sys_id in [k for k, row in table.items() if row["element"] == element]:
                del table[sys_id]
            for sequence, (value, label) in enumerate(choices):
                sys_id = hashlib.md5(f"{element}|{value}".encode(), usedforsecurity=False).hexdigest()
                table[sys_id] = {"sys_id": sys_id, "name": "incident", "element": element, "value": value,
                                 "label": label, "language": "en", "inactive": "false", "sequence": str(sequence)}

    def choices(self, element: str) -> set[str]:
        with self._state:
            return {row["value"] for row in self._data["sys_choice"].values()
                    if row["element"] == element and row["inactive"] == "false"}

    @staticmethod
    def user_sys_id(user_name: str) -> str:
        """A stable sys_user sys_id for a user name (the emulator has no sys_user table)."""
        return hashlib.md5(user_name.encode(), usedforsecurity=False).hexdigest()

    def seed_incident(self, *, by: str = "admin", **fields: Any) -> dict[str, str]:
        """Insert an incident as ``by`` would in the UI; returns the stored record (plain strings)."""
        with self._state:
            return copy.deepcopy(self._insert_incident({k: _text(v) for k, v in fields.items()}, by))

    def update_as(self, sys_id: str, user: str = "megan.bowen", **fields: Any) -> dict[str, str]:
        """A person edits the ticket (fields, ``work_notes``, ``comments``) with their roles; ACLs and data
        policies apply (``PermissionError``, ``ValueError``). ``user="system"`` is the platform itself
        (for example the auto-close job)."""
        with self._state:
            record = self._data["incident"][sys_id]
            updated, notes, problem = self._changed(record, {k: _text(v) for k, v in fields.items()}, user)
            if problem:
                raise (PermissionError if problem == ACL_UPDATE[1] else ValueError)(problem)
            self._store(record, updated, notes, user)
            return copy.deepcopy(record)

    def begin_update(self, sys_id: str, user: str = "megan.bowen", **fields: Any) -> str:
        """An update whose transaction has stamped ``sys_updated_on`` but not committed yet: readers see the
        record as before until ``commit(token)``."""
        with self._state:
            record = self._data["incident"][sys_id]
            updated, notes, problem = self._changed(record, {k: _text(v) for k, v in fields.items()}, user)
            if problem:
                raise ValueError(problem)
            token = uuid.uuid4().hex
            self._pending[token] = (sys_id, updated, notes, user)
            return token

    def commit(self, token: str) -> dict[str, str]:
        with self._state:
            sys_id, updated, notes, user = self._pending.pop(token)
            record = self._data["incident"][sys_id]
            self._store(record, updated, notes, user)  # keeps the stamp the update got when it began
            return copy.deepcopy(record)

    def record(self, sys_id: str) -> dict[str, str]:
        with self._state:
            return copy.deepcopy(self._data["incident"][sys_id])

    def records(self, **where: str) -> list[dict[str, str]]:
        with self._state:
            return [copy.deepcopy(r) for r in self._data["incident"].values()
                    if all(r.get(k) == v for k, v in where.items())]

    def journal(self, sys_id: str | None = None) -> list[dict[str, str]]:
        """Journal rows (of one incident), oldest first."""
        with self._state:
            rows = [copy.deepcopy(r) for r in self._data["sys_journal_field"].values()
                    if sys_id is None or r["element_id"] == sys_id]
        return rows

    def delete_incident(self, sys_id: str) -> None:
        with self._state:
            self._data["incident"].pop(sys_id, None)

    # -- the contract -------------------------------------------------------------------------
    def _answer(self, h, request: Request, response: Response) -> None:
        # The instance's clock in the Date header: clients can tell how old what they read is.
        stamp = format_datetime(self.clock().replace(microsecond=0), usegmt=True)
        h.date_time_string = lambda timestamp=None: stamp
        super()._answer(h, request, response)

    def _guarded(self, handler):
        def guarded(req: Request) -> Response:
            if len(req.path) + len(urlencode(req.query)) + 1 > MAX_URL_BYTES:
                return Response(414, "URI Too Long", {"Content-Type": "text/html"})
            user = self._user(req)
            if user is None:
                return _failure(401, "User Not Authenticated", "Required to provide Auth information")
            table = req.params["table"]
            if table not in TABLES:
                return _failure(400, f"Invalid table {table}")
            display = req.query.get("sysparm_display_value", "false").lower()
            if display not in ("", "false"):
                return _failure(400, "sysparm_display_value=true|all is not modelled by this emulator")
            return handler(req, user, table)

        return guarded

    def _user(self, req: Request) -> str | None:
        header = req.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return name if name in self.users and self.users[name] == password else None

    @staticmethod
    def _columns(table: str) -> set[str]:
        return {"incident": set(INCIDENT_DEFAULTS), "sys_journal_field": set(JOURNAL_COLUMNS),
                "sys_choice": set(CHOICE_COLUMNS)}[table]

    def _render(self, req: Request, table: str, record: dict[str, str]) -> dict[str, Any]:
        fields = [f.strip() for f in req.query.get("sysparm_fields", "").split(",") if f.strip()]
        bare = req.query.get("sysparm_exclude_reference_link", "false").lower() == "true"
        out: dict[str, Any] = {}
        for name in fields or list(record):
            if name not in record:
                continue  # unknown columns in sysparm_fields are left out, not an error
            value = record[name]
            if table == "incident" and name in REFERENCES and value and not bare:
                out[name] = {"link": f"{self.url}/api/now/table/{REFERENCES[name]}/{value}", "value": value}
            else:
                out[name] = value
        return out

    @staticmethod
    def _int(raw: str | None, default: int) -> int:
        try:
            return max(0, int(raw)) if raw not in (None, "") else default
        except ValueError:
            return default

    def _readable(self, user: str, table: str, record: dict[str, str]) -> bool:
        """Row-level read ACLs, evaluated after the query and its paging."""
        return not (table == "sys_journal_field" and user in self._journal_hidden)

    def _list(self, req: Request, user: str, table: str) -> Response:
        with self._state:
            query = _Query(req.query.get("sysparm_query", ""), self._columns(table), self.scripts)
            admin = "admin" in self.roles_of(user)
            if (table == "sys_choice" and not admin and user not in self._choice_readers
                    and query.fields & {"name", "element", "value"}):
                return _failure(403, "Insufficient rights to query records",
                                "Field(s) present in the query do not have permission to be read")
            limit = self._int(req.query.get("sysparm_limit"), 10000)
            offset = self._int(req.query.get("sysparm_offset"), 0)
            matched = query.sort([r for r in self._data[table].values() if query.matches(r)])
            page = [self._render(req, table, r) for r in matched[offset:offset + limit]
                    if self._readable(user, table, r)]
        headers = {}
        if req.query.get("sysparm_no_count", "false").lower() != "true":
            headers["X-Total-Count"] = str(len(matched))
        if req.query.get("sysparm_suppress_pagination_header", "false").lower() != "true" and limit:
            headers["Link"] = self._links(req, offset, limit, len(matched))
        return Response(200, {"result": page}, headers)

    def _links(self, req: Request, offset: int, limit: int, total: int) -> str:
        def link(at: int, rel: str) -> str:
            return f'<{self.url}{req.path}?{urlencode({**req.query, "sysparm_offset": str(at)})}>;rel="{rel}"'

        last = max(0, ((total - 1) // limit) * limit) if total else 0
        links = [link(0, "first")]
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        if offset + limit < total:
            links.append(link(offset + limit, "next"))
        links.append(link(last, "last"))
        return ",".join(links)

    def _get(self, req: Request, user: str, table: str) -> Response:
        with self._state:
            record = self._data[table].get(req.params["sys_id"])
            if record is None or not self._readable(user, table, record):
                return _failure(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            return Response(200, {"result": self._render(req, table, record)})

    @staticmethod
    def _body(req: Request) -> dict | None:
        try:
            body = req.json
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _create(self, req: Request, user: str, table: str) -> Response:
        if table != "incident":
            return _failure(403, "Operation Failed", "ACL Exception Insert Failed due to security constraints")
        body = self._body(req)
        if body is None:
            return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
        fields = {k: _text(v) for k, v in body.items() if k in INCIDENT_DEFAULTS or k in JOURNAL_ELEMENTS}
        with self._state:
            fields = self._allowed(fields, user, "1")
            problem = self._closing_problem({**INCIDENT_DEFAULTS, **fields})
            if problem:
                return _failure(403, "Operation Failed", problem)
            record = self._insert_incident(fields, user)
            return Response(201, {"result": self._render(req, table, record)},
                            {"Location": f"{self.url}/api/now/table/incident/{record['sys_id']}"})

    def _update(self, req: Request, user: str, table: str) -> Response:
        if table != "incident":
            return _failure(403, "Operation Failed", "ACL Exception Update Failed due to security constraints")
        body = self._body(req)
        if body is None:
            return _failure(400, "Exception while reading request", "The payload is not valid JSON.")
        with self._state:
            record = self._data[table].get(req.params["sys_id"])
            if record is None:
                return _failure(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            updated, notes, problem = self._changed(record, {k: _text(v) for k, v in body.items()}, user)
            if problem:
                return _failure(403, *(ACL_UPDATE if problem == ACL_UPDATE[1] else ("Operation Failed", problem)))
            self._store(record, updated, notes, user)
            return Response(200, {"result": self._render(req, table, record)})

    def _delete(self, req: Request, _user: str, table: str) -> Response:
        if table != "incident":
            return _failure(403, "Operation Failed", "ACL Exception Delete Failed due to security constraints")
        with self._state:
            if self._data[table].pop(req.params["sys_id"], None) is None:
                return _failure(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        return Response(204)

    # -- business logic (call under the lock) -------------------------------------------------
    def _allowed(self, fields: dict[str, str], user: str, current_state: str) -> dict[str, str]:
        """What the platform keeps of a write: choice values outside the list and fields the user may not write
        are dropped without an error; strings are clipped to their varchar column."""
        kept = {}
        for name, value in fields.items():
            if name in ("state", "close_code") and value and value not in self.choices(name):
                continue  # not in the choice list: dropped (a data policy may then refuse the write)
            if name == "state" and value == "7" != current_state and not self.roles_of(user) & CLOSERS:
                continue  # closing needs itil_admin or admin: a field ACL, the field is not written
            kept[name] = value[:VARCHAR[name]] if name in VARCHAR else value
        return kept

    @staticmethod
    def _closing_problem(record: dict[str, str]) -> str | None:
        if record.get("state") not in CLOSED_STATES:
            return None
        missing = [label for field, label in (("close_code", "Resolution code"), ("close_notes", "Resolution notes"))
                   if not record.get(field)]
        if not missing:
            return None
        return "Data Policy Exception: \n\tThe following fields are mandatory: " + ", ".join(missing) + "\n"

    def _insert_incident(self, fields: dict[str, str], user: str) -> dict[str, str]:
        self._numbers += 1
        now = self.now()
        number = f"INC{self._numbers:07d}"
        record = dict(INCIDENT_DEFAULTS)
        record.update({k: v for k, v in fields.items()
                       if k in INCIDENT_DEFAULTS and k not in SYSTEM and k not in JOURNAL_ELEMENTS})
        record.update(sys_id=uuid.uuid4().hex, number=number, task_effective_number=number, opened_at=now,
                      opened_by=self.user_sys_id(user), sys_created_on=now, sys_created_by=user, sys_updated_on=now,
                      sys_updated_by=user, sys_mod_count="0")
        self._derive(record, previous_state="1", user=user, now=now)
        self._data["incident"][record["sys_id"]] = record
        self._journal(record, fields, user, now)
        return record

    def _changed(self, record: dict[str, str], fields: dict[str, str], user: str
                 ) -> tuple[dict[str, str], dict[str, str], str | None]:
        """(the record after the update, its journal inputs, the ACL or data-policy problem or None)."""
        if record["state"] in READ_ONLY_STATES and "admin" not in self.roles_of(user):
            return record, {}, ACL_UPDATE[1]
        fields = self._allowed(fields, user, record["state"])
        now = self.now()
        changes = {k: v for k, v in fields.items() if k in INCIDENT_DEFAULTS and k not in SYSTEM
                   and k not in JOURNAL_ELEMENTS}
        updated = {**record, **changes}
        problem = self._closing_problem(updated)
        if problem:
            return record, {}, problem
        notes = {e: fields[e] for e in JOURNAL_ELEMENTS if fields.get(e)}
        self._derive(updated, previous_state=record["state"], user=user, now=now)
        if updated != record or notes:
            updated.update(sys_updated_on=now, sys_updated_by=user,
                           sys_mod_count=str(int(record["sys_mod_count"]) + 1))
        return updated, notes, None

    def _store(self, record: dict[str, str], updated: dict[str, str], notes: dict[str, str], user: str) -> None:
        if updated is record or (updated == record and not notes):
            return  # nothing changed: the platform skips the update (no new sys_mod_count)
        record.clear()
        record.update(updated)
        self._journal(record, notes, user, record["sys_updated_on"])

    def _derive(self, record: dict[str, str], *, previous_state: str, user: str, now: str) -> None:
        """What the platform's business rules set from the fields a caller wrote."""
        record["priority"] = PRIORITY.get((record["impact"], record["urgency"]), record["priority"])
        state = record["state"]
        record["incident_state"] = state
        record["active"] = "false" if state in INACTIVE_STATES else "true"
        if state == previous_state:
            return
        if state == "6":
            record.update(resolved_at=now, resolved_by=self.user_sys_id(user))
        elif state == "7":
            record.update(closed_at=now, closed_by=self.user_sys_id(user))
            if not record["resolved_at"]:
                record.update(resolved_at=now, resolved_by=self.user_sys_id(user))
        elif previous_state in (*CLOSED_STATES, "8") and state in ("1", "2", "3"):
            record.update(reopen_count=str(int(record["reopen_count"]) + 1), resolved_at="", resolved_by="",
                          closed_at="", closed_by="")

    def _journal(self, record: dict[str, str], fields: dict[str, str], user: str, now: str) -> None:
        for element in JOURNAL_ELEMENTS:
            if fields.get(element):
                entry = {"sys_id": uuid.uuid4().hex, "sys_created_on": now, "name": "incident",
                         "element_id": record["sys_id"], "sys_tags": "", "value": fields[element],
                         "sys_created_by": user, "element": element}
                self._data["sys_journal_field"][entry["sys_id"]] = entry
