"""What to write where: a three-way merge of one incident and its ticket, as plain data.

Each side is reduced to four fields in its *own* terms: Sentinel ``status``, ``severity``, ``owner``
(UPN) and ``classification`` (``Classification/Reason``, only while Closed); ServiceNow ``state``,
``priority``, ``assigned_to`` (sys_id) and ``close_code`` (only while resolved/closed). The link keeps
each side's values as of the last sync (the *base*). For every field:

- the two sides already agree (the ServiceNow value maps to the Sentinel one): nothing to do;
- only one side moved away from its base: that side's value is copied to the other;
- both moved (a conflict): the side whose record changed last wins -- Sentinel
  ``lastModifiedTimeUtc`` against ServiceNow ``sys_updated_on``, compared in whole seconds because
  ServiceNow keeps no more; a tie goes to Sentinel, the security system of record;
- neither moved but they disagree (an owner with no mapping, a state the table does not know):
  left alone, so an unmappable value never causes a write at every sync.

Comparing each side with its own base (not through the mapping) is what keeps lossy mappings quiet:
ServiceNow "On Hold" and "In Progress" are both Sentinel "Active", so moving between them changes
nothing in Sentinel, and the value the sync wrote is the base the next sync compares with: the
pack's own writes never come back as changes.

Status and classification travel together: closing one side carries the classification (close
code and notes) with it; the classification alone is merged only while both sides are closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.mapping import SyncMapping, join_classification
from sync.servicenow import ref_value

FIELDS = ("status", "severity", "owner", "classification")


def sentinel_view(properties: dict[str, Any]) -> dict[str, str]:
    """The four fields of a Sentinel incident, in Sentinel terms."""
    status = str(properties.get("status") or "")
    owner = properties.get("owner") or {}
    upn = (owner.get("userPrincipalName") or owner.get("email") or "") if isinstance(owner, dict) else ""
    classification = ""
    if status == "Closed":
        classification = join_classification(properties.get("classification"), properties.get("classificationReason"))
    return {"status": status, "severity": str(properties.get("severity") or ""), "owner": str(upn).lower(),
            "classification": classification}


def servicenow_view(ticket: dict[str, Any], mapping: SyncMapping) -> dict[str, str]:
    """The four fields of a ServiceNow incident, in ServiceNow terms."""
    state = str(ticket.get("state") or "")
    return {"status": state, "severity": str(ticket.get("priority") or ""),
            "owner": ref_value(ticket.get("assigned_to")),
            "classification": str(ticket.get("close_code") or "") if mapping.is_closed_state(state) else ""}


def as_sentinel(name: str, value: str, mapping: SyncMapping) -> str | None:
    """A ServiceNow-side value in Sentinel terms; None when the mapping has no answer."""
    if name == "status":
        return mapping.status_for(value)
    if name == "severity":
        return mapping.severity_for(value)
    if name == "owner":
        return mapping.owner_upn(value)
    return mapping.classification_for(value)


def expressible(name: str, value: str, mapping: SyncMapping) -> bool:
    """Whether a Sentinel-side value can be written to ServiceNow."""
    if name == "status":
        return mapping.state_for(value) is not None
    if name == "severity":
        return mapping.impact_urgency_for(value) is not None
    if name == "owner":
        return mapping.owner_sys_id(value) is not None
    return bool(value)


def parse_sentinel_time(text: str | None) -> float:
    """``2026-11-20T11:42:17.5531208Z`` (seven fraction digits) -> epoch seconds; 0 when absent."""
    if not text:
        return 0.0
    main, _, fraction = text.rstrip("Z").partition(".")
    try:
        stamp = datetime.fromisoformat(main).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
    return stamp + (float("0." + fraction) if fraction.isdigit() else 0.0)


def parse_servicenow_time(text: str | None) -> float:
    """``2026-11-20 10:15:00`` (UTC, whole seconds) -> epoch seconds; 0 when absent."""
    try:
        return datetime.strptime(text or "", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


@dataclass
class Plan:
    """Values to write: Sentinel-side values to express in ServiceNow, and Sentinel values to set."""

    to_servicenow: dict[str, str] = field(default_factory=dict)
    to_sentinel: dict[str, str] = field(default_factory=dict)
    conflicts: list[dict[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.to_servicenow or self.to_sentinel)


def plan(sentinel: dict[str, str], servicenow: dict[str, str], base_sentinel: dict[str, str],
         base_servicenow: dict[str, str], mapping: SyncMapping, *, sentinel_changed_at: float,
         servicenow_changed_at: float) -> Plan:
    """Decide, field by field, what each side needs (see the module docstring for the rule)."""
    result = Plan()

    def decide(name: str) -> None:
        mine, theirs = sentinel[name], servicenow[name]
        theirs_here = as_sentinel(name, theirs, mapping)
        if theirs_here == mine:
            return
        sentinel_moved = mine != base_sentinel.get(name)
        servicenow_moved = theirs != base_servicenow.get(name)
        if not (sentinel_moved or servicenow_moved):
            return
        if sentinel_moved and servicenow_moved:
            winner = "servicenow" if int(servicenow_changed_at) > int(sentinel_changed_at) else "sentinel"
            result.conflicts.append({"field": name, "sentinel": mine, "servicenow": theirs, "winner": winner})
        else:
            winner = "sentinel" if sentinel_moved else "servicenow"
        if winner == "sentinel" and expressible(name, mine, mapping):
            result.to_servicenow[name] = mine
        elif winner == "servicenow" and theirs_here is not None:
            result.to_sentinel[name] = theirs_here

    for name in ("status", "severity", "owner"):
        decide(name)
    sentinel_closed = result.to_sentinel.get("status", sentinel["status"]) == "Closed"
    servicenow_closed = result.to_servicenow.get("status", as_sentinel("status", servicenow["status"], mapping)) \
        == "Closed"
    if sentinel_closed and servicenow_closed:
        if "status" in result.to_servicenow:  # closing ServiceNow: Sentinel's classification goes with it
            result.to_servicenow["classification"] = sentinel["classification"] or mapping.default_classification
        elif "status" in result.to_sentinel:  # closing Sentinel: the close code's classification goes with it
            result.to_sentinel["classification"] = mapping.classification_for(servicenow["classification"])
        else:
            decide("classification")
    return result


__all__ = ["FIELDS", "Plan", "as_sentinel", "parse_sentinel_time", "parse_servicenow_time", "plan",
           "sentinel_view", "servicenow_view"]
