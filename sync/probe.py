"""Is the ServiceNow sync ready? ``readiness(ctx)`` answers for the health route (``GET /api/health/details``).

It finds what fails silently in production, because ServiceNow answers those cases with a success:
- **journal ACLs**: without read access to ``sys_journal_field`` a query answers 200 with no rows, so work
  notes would never reach Sentinel. ServiceNow counts rows (``X-Total-Count``) before it applies row ACLs, so
  "counted but not returned" means "hidden"; no rows at all means "unknown" (no journal entries yet).
- **choice lists**: a ``close_code`` or ``state`` value the instance's choice list lacks is dropped on write,
  and resolving then fails on the "close code mandatory" data policy. The probe reads ``sys_choice`` for
  ``incident.close_code`` and ``incident.state`` (once an hour) and names every mapping entry whose value the
  instance lacks. An empty answer, or a refusal (``itil`` may not query sys_choice by field), means "unknown",
  not "missing".
- credentials, the instance URL and the mapping setting, and the last poll run that did something.
It never raises and never shows a secret; results are kept for a minute so a busy health check costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.errors import PackError

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
CHOICES_CACHE_SECONDS = 3600.0
CHOICE_ELEMENTS = ("close_code", "state")

_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
_choices: dict[tuple[str, str], tuple[float, dict[str, set[str]] | str]] = {}
_lock = threading.Lock()


def readiness(ctx: Any, *, fresh: bool = False) -> dict[str, Any]:
    """``{"configured", "ready", "checks": {...}, "problems": [...]}`` for the ServiceNow sync."""
    settings = ctx.settings
    if settings.values.get("SERVICENOW_INSTANCE_URL") is None:
        return {"configured": False, "ready": False, "checks": {}, "problems": ["SERVICENOW_INSTANCE_URL is not set"]}
    key = (str(settings.values.get("SERVICENOW_INSTANCE_URL")), str(settings.values.get("SERVICENOW_USERNAME")))
    with _lock:
        cached = _cache.get(key)
    if cached and not fresh and cached[0] > time.monotonic():
        return cached[1]
    result = _probe(ctx, key, fresh=fresh)
    with _lock:
        _cache[key] = (time.monotonic() + CACHE_SECONDS, result)
    return result


def _probe(ctx: Any, key: tuple[str, str], *, fresh: bool) -> dict[str, Any]:
    from sync.mapping import SyncMapping
    from sync.service import client_from_settings

    checks: dict[str, Any] = {}
    problems: list[str] = []
    try:
        mapping = SyncMapping.from_setting(ctx.settings["SERVICENOW_MAPPING"])
        snow = client_from_settings(ctx.settings)
        checks["settings"] = "ok"
    except PackError as error:
        return {"configured": True, "ready": False, "checks": {"settings": error.message}, "problems": [error.message]}
    try:
        snow.ping()
        checks["instance"] = "ok"
    except PackError as error:
        problems.append(error.message)
        checks["instance"] = error.message
        return _result(checks, problems)
    checks["journal"] = _journal(snow, problems)
    checks["choices"] = _choice_check(snow, mapping, key, problems, fresh=fresh)
    checks["poll"] = _last_poll(ctx)
    return _result(checks, problems)


def _result(checks: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    return {"configured": True, "ready": not problems, "checks": checks, "problems": problems}


def _journal(snow: Any, problems: list[str]) -> str:
    try:
        page = snow.journal_visibility()
    except PackError as error:
        problems.append(f"work notes cannot be read: {error.message}")
        return "unreadable"
    if page.rows:
        return "readable"
    if page.total:
        problems.append(f"ServiceNow hides incident work notes and comments from {snow.username}: it counts "
                        f"{page.total} but returns none (no read access to sys_journal_field). Grant read on "
                        "incident journal entries (docs/servicenow.md, Set-up)")
        return "hidden"
    return "unknown: no incident work notes or comments exist yet"


def _choice_check(snow: Any, mapping: Any, key: tuple[str, str], problems: list[str], *, fresh: bool) -> dict:
    found = _instance_choices(snow, key, fresh=fresh)
    if isinstance(found, str):
        return {element: found for element in CHOICE_ELEMENTS}
    report: dict[str, Any] = {}
    for element, written in mapping.written_values().items():
        values = found.get(element) or set()
        if not values:
            report[element] = "unknown: the instance returned no choices"
            continue
        missing = {value: entry for value, entry in written.items() if value not in values}
        for value, entry in sorted(missing.items()):
            problems.append(f"setting SERVICENOW_MAPPING: {entry} names {element} {value!r}, which the instance's "
                            f"incident.{element} choice list lacks (ServiceNow would drop it)")
        report[element] = {"missing": sorted(missing)} if missing else "ok"
    return report


def _instance_choices(snow: Any, key: tuple[str, str], *, fresh: bool) -> dict[str, set[str]] | str:
    """The instance's choices (cached an hour), or why they are unknown."""
    with _lock:
        cached = _choices.get(key)
    if cached and not fresh and cached[0] > time.monotonic():
        return cached[1]
    try:
        found: dict[str, set[str]] | str = snow.choices(CHOICE_ELEMENTS)
    except PackError as error:
        if error.status != 403:
            return f"unknown: {error.message}"  # not kept: the next probe asks again
        found = (f"unknown: {snow.username} may not read sys_choice ({error.message}); "
                 "grant it read on sys_choice to have the mapping checked")
    with _lock:
        _choices[key] = (time.monotonic() + CHOICES_CACHE_SECONDS, found)
    return found


def _last_poll(ctx: Any) -> dict[str, Any] | str:
    from sync.links import LinkStore

    try:
        last = LinkStore(ctx.state).last_poll()
    except PackError as error:
        return f"unknown: {error.message}"
    return last or "no poll run has synced anything yet"


__all__ = ["readiness"]
