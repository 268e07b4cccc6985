"""Encoded queries (``sysparm_query``) built only from values of a known shape.

A query value is not inert on ServiceNow: ``javascript:`` makes the instance run the rest as server-side
script (the Table API documents ``caller_id=javascript:gs.getUserID()``), ``^`` starts another condition,
``^NQ`` another query, and a condition on a field the table lacks is silently dropped. Escaping is no
answer: the platform documents no escape for these. So every value that reaches a query is checked against
the shape it must have -- a GUID (an incident name), a sys_id, a ServiceNow date-time, a word from the
pack's own settings -- and anything else is refused before a request is sent. Free text never goes into
``sysparm_query``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from core.errors import BadRequest, ConfigurationError

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SYS_ID = re.compile(r"^[0-9a-f]{32}$")
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
# A name from the pack's settings (the mapping's ``source``, a choice element): letters, digits, spaces and a few
# separators; never ^ = @ , : or anything that reads as query syntax or script.
WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()/-]{0,99}$")
SCRIPT = re.compile(r"javascript\s*:", re.IGNORECASE)
FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")


def refuse_script(value: str, what: str) -> str:
    """``value`` unless it holds ``javascript:`` (which ServiceNow would evaluate), in which case BadRequest."""
    if SCRIPT.search(value):
        raise BadRequest(f"{what} must not contain 'javascript:' (ServiceNow evaluates it as server-side script)",
                         code="UnsafeQueryValue")
    return value


def _shaped(value: object, pattern: re.Pattern, what: str, shape: str) -> str:
    text = refuse_script(str(value if value is not None else ""), what)
    if not pattern.match(text):
        raise BadRequest(f"{what} must be {shape} to be looked up in ServiceNow", code="UnsafeQueryValue")
    return text


def guid(value: object, what: str = "the incident name") -> str:
    """An incident name: a GUID, lower case (the pack's correlation_id)."""
    return _shaped(str(value or "").lower(), GUID, what, "a GUID")


def sys_id(value: object, what: str = "a ticket sys_id") -> str:
    return _shaped(value, SYS_ID, what, "a 32-character hexadecimal sys_id")


def stamp(value: object, what: str = "a date-time") -> str:
    return _shaped(value, STAMP, what, "a date-time 'YYYY-MM-DD HH:MM:SS'")


def word(value: object, what: str) -> str:
    """A name from the pack's own settings; a bad one is a configuration problem, named by ``what``."""
    try:
        return _shaped(value, WORD, what, "letters, digits, spaces and . _ ( ) / - (at most 100)")
    except BadRequest as bad:
        raise ConfigurationError(bad.message) from None


def condition(field: str, operator: str, value: str) -> str:
    """One ``<field><operator><value>`` condition; the value was shaped by one of the functions above."""
    if not FIELD.match(field):
        raise ValueError(f"not a field name: {field!r}")
    if "^" in value or "\n" in value or "\r" in value:
        raise ValueError(f"query value with query syntax: {value!r}")
    return f"{field}{operator}{refuse_script(value, field)}"


def one_of(field: str, values: Iterable[str]) -> str:
    """``<field>IN<a>,<b>``: every value must already be shaped (sys_ids, words)."""
    listed = [str(v) for v in values]
    if any("," in v for v in listed):
        raise ValueError(f"IN list value with a comma: {listed!r}")
    return condition(field, "IN", ",".join(listed))


def joined(*parts: str) -> str:
    """Conditions (and ORDERBY clauses) joined with ``^``."""
    return "^".join(part for part in parts if part)


def new_query(*groups: str) -> str:
    """Queries joined with ``^NQ``: a record matches if it matches any of them."""
    return "^NQ".join(group for group in groups if group)


def order_by(*fields: str) -> str:
    for field in fields:
        if not FIELD.match(field):
            raise ValueError(f"not a field name: {field!r}")
    return "^".join(f"ORDERBY{field}" for field in fields)


__all__ = ["condition", "guid", "joined", "new_query", "one_of", "order_by", "refuse_script", "stamp", "sys_id",
           "word"]
