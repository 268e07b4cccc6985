"""The mapping tables between Sentinel and ServiceNow, as data, overridable by one setting.

``DEFAULT_MAPPING`` is the documented default (docs/servicenow.md shows it as a table).
``SERVICENOW_MAPPING`` may hold a JSON object with any of the same keys; each table given there
is merged over the default entry by entry (``null`` removes an entry), so an instance with its
own close codes overrides two lines, not the whole table. A malformed override is a
``ConfigurationError`` naming the setting and the entry, reported when the sync first runs.

Classifications are written ``Classification/Reason`` (``TruePositive/SuspiciousActivity``) or a
bare ``Classification`` where Sentinel takes no reason (``Undetermined``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigurationError
from sync.query import SYS_ID, word

log = logging.getLogger(__name__)

SETTING = "SERVICENOW_MAPPING"
STATUSES = ("New", "Active", "Closed")
SEVERITIES = ("High", "Medium", "Low", "Informational")
# Which classificationReason values Sentinel accepts with each classification (IncidentTypes.json).
REASONS: dict[str, tuple[str, ...]] = {
    "TruePositive": ("SuspiciousActivity",),
    "BenignPositive": ("SuspiciousButExpected",),
    "FalsePositive": ("IncorrectAlertLogic", "InaccurateData"),
    "Undetermined": (),
}

DEFAULT_MAPPING: dict[str, Any] = {
    # correlation_display of the tickets the pack creates; the poller only looks at these.
    "source": "Microsoft Sentinel",
    # Sentinel status -> ServiceNow incident state written when Sentinel changes it.
    # Closing resolves (6); ServiceNow's own auto-close job moves Resolved to Closed (7) later.
    "status_to_state": {"New": "1", "Active": "2", "Closed": "6"},
    # ServiceNow state -> Sentinel status: 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled.
    "state_to_status": {"1": "New", "2": "Active", "3": "Active", "6": "Closed", "7": "Closed", "8": "Closed"},
    # Sentinel severity -> [impact, urgency]; ServiceNow derives the priority from the pair.
    "severity_to_impact_urgency": {"High": ["1", "2"], "Medium": ["2", "2"], "Low": ["2", "3"],
                                   "Informational": ["3", "3"]},
    # ServiceNow priority (1 Critical .. 5 Planning) -> Sentinel severity.
    "priority_to_severity": {"1": "High", "2": "High", "3": "Medium", "4": "Low", "5": "Informational"},
    # Sentinel classification (or Classification/Reason, which wins) -> ServiceNow close_code. The values are
    # the current out-of-box choices; an instance with other codes overrides them (docs/servicenow.md).
    "classification_to_close_code": {
        "TruePositive": "Solution provided",
        "BenignPositive": "Resolved by caller",
        "FalsePositive": "No resolution provided",
        "Undetermined": "Workaround provided",
    },
    # ServiceNow close_code -> Sentinel Classification/Reason (every out-of-box choice).
    "close_code_to_classification": {
        "Solution provided": "TruePositive/SuspiciousActivity",
        "Known error": "TruePositive/SuspiciousActivity",
        "Resolved by change": "TruePositive/SuspiciousActivity",
        "Resolved by problem": "TruePositive/SuspiciousActivity",
        "Resolved by caller": "BenignPositive/SuspiciousButExpected",
        "Resolved by request": "BenignPositive/SuspiciousButExpected",
        "User error": "BenignPositive/SuspiciousButExpected",
        "No resolution provided": "FalsePositive/IncorrectAlertLogic",
        "Workaround provided": "Undetermined",
        "Duplicate": "Undetermined",
    },
    # Classification used when a ticket is closed or canceled with a code the table does not know.
    "default_classification": "Undetermined",
    # Owners that map: Sentinel owner UPN -> ServiceNow sys_user sys_id, or {"sys_id": ..., "object_id": ...}
    # when Sentinel should also get the user's Entra object id. Owners not listed are not synced.
    "owners": {},
    # States in which the integration user (itil) may no longer write the ticket: Closed and Canceled are
    # read-only to everyone but admin. The sync stops writing to such a ticket and opens a follow-up when the
    # Sentinel incident is reopened.
    "read_only_states": ["7", "8"],
}

_TABLES = ("status_to_state", "state_to_status", "severity_to_impact_urgency", "priority_to_severity",
           "classification_to_close_code", "close_code_to_classification", "owners")


def split_classification(text: str) -> tuple[str, str | None]:
    """``"TruePositive/SuspiciousActivity"`` -> ``("TruePositive", "SuspiciousActivity")``."""
    classification, _, reason = text.partition("/")
    return classification, reason or None


def join_classification(classification: str | None, reason: str | None) -> str:
    if not classification:
        return ""
    return f"{classification}/{reason}" if reason else classification


def _bad(entry: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"setting {SETTING}: {entry} {problem}")


def _check_classification(entry: str, value: Any, *, bare_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _bad(entry, "must be a string like 'TruePositive/SuspiciousActivity'")
    classification, reason = split_classification(value)
    if classification not in REASONS:
        raise _bad(entry, f"names classification {classification!r}, not one of {', '.join(REASONS)}")
    allowed = REASONS[classification]
    if allowed and reason not in allowed and not (bare_ok and reason is None):
        raise _bad(entry, f"needs a reason for {classification}: one of {', '.join(allowed)}")
    if not allowed and reason:
        raise _bad(entry, f"gives a reason, but {classification} takes none")
    return value


@dataclass(frozen=True)
class SyncMapping:
    """The tables, validated, with the look-ups the sync needs."""

    source: str
    status_to_state: Mapping[str, str]
    state_to_status: Mapping[str, str]
    severity_to_impact_urgency: Mapping[str, tuple[str, str]]
    priority_to_severity: Mapping[str, str]
    classification_to_close_code: Mapping[str, str]
    close_code_to_classification: Mapping[str, str]
    default_classification: str
    owners: Mapping[str, str]
    read_only_states: frozenset[str] = frozenset({"7", "8"})
    owner_object_ids: Mapping[str, str] = field(default_factory=dict)
    _owner_by_sys_id: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    # -- Sentinel -> ServiceNow ---------------------------------------------------------------
    def state_for(self, status: str) -> str | None:
        return self.status_to_state.get(status)

    def impact_urgency_for(self, severity: str) -> tuple[str, str] | None:
        return self.severity_to_impact_urgency.get(severity)

    def close_code_for(self, classification: str) -> str:
        bare, _ = split_classification(classification)
        return (self.classification_to_close_code.get(classification)
                or self.classification_to_close_code.get(bare)
                or self.classification_to_close_code.get(self.default_classification)
                or "Workaround provided")

    def owner_sys_id(self, upn: str) -> str | None:
        """"" (unassigned) maps to "" (unassigned); an unmapped user maps to None."""
        if not upn:
            return ""
        return self.owners.get(upn.lower())

    # -- ServiceNow -> Sentinel ---------------------------------------------------------------
    def status_for(self, state: str) -> str | None:
        return self.state_to_status.get(state)

    def severity_for(self, priority: str) -> str | None:
        return self.priority_to_severity.get(priority)

    def classification_for(self, close_code: str) -> str:
        return self.close_code_to_classification.get(close_code) or self.default_classification

    def owner_upn(self, sys_id: str) -> str | None:
        if not sys_id:
            return ""
        return self._owner_by_sys_id.get(sys_id)

    def owner_object_id(self, upn: str) -> str | None:
        return self.owner_object_ids.get(upn.lower())

    def is_closed_state(self, state: str) -> bool:
        return self.status_for(state) == "Closed"

    def is_read_only(self, state: str) -> bool:
        """A ticket in this state refuses the integration user's writes (Closed, Canceled)."""
        return state in self.read_only_states

    def written_values(self) -> dict[str, dict[str, str]]:
        """What the sync writes into ServiceNow choice fields, by field: {value: the mapping entry naming it}."""
        codes = {code: f"classification_to_close_code.{name}"
                 for name, code in self.classification_to_close_code.items()}
        codes.setdefault(self.close_code_for(self.default_classification), "default_classification")
        states = {state: f"status_to_state.{status}" for status, state in self.status_to_state.items()}
        return {"close_code": codes, "state": states}

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_setting(cls, raw: str | None) -> SyncMapping:
        """The default tables with ``raw`` (the SERVICENOW_MAPPING JSON, or empty) merged over them."""
        tables: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in DEFAULT_MAPPING.items()}
        if raw and raw.strip():
            try:
                override = json.loads(raw)
            except ValueError as exc:
                raise ConfigurationError(f"setting {SETTING} is not valid JSON ({exc.msg})") from None
            if not isinstance(override, dict):
                raise ConfigurationError(f"setting {SETTING} must be a JSON object")
            unknown = sorted(set(override) - set(DEFAULT_MAPPING))
            if unknown:
                raise ConfigurationError(f"setting {SETTING}: unknown key(s) {', '.join(unknown)}; "
                                         f"known: {', '.join(DEFAULT_MAPPING)}")
            for key, value in override.items():
                if key in _TABLES:
                    if not isinstance(value, dict):
                        raise _bad(key, "must be an object")
                    for entry, mapped in value.items():
                        if mapped is None:
                            tables[key].pop(entry, None)
                        else:
                            tables[key][entry] = mapped
                else:
                    tables[key] = value
        return cls._validated(tables)

    @classmethod
    def _validated(cls, t: dict[str, Any]) -> SyncMapping:
        if not isinstance(t["source"], str) or not t["source"].strip():
            raise _bad("source", "must be a non-empty string")
        # The source goes into every poll query: a word, never query syntax or script (sync/query.py).
        word(t["source"].strip(), f"setting {SETTING}: source")
        if not (isinstance(t["read_only_states"], list) and all(isinstance(v, str) for v in t["read_only_states"])):
            raise _bad("read_only_states", "must be a list of ServiceNow state values, e.g. [\"7\", \"8\"]")
        for status, state in t["status_to_state"].items():
            if status not in STATUSES:
                raise _bad(f"status_to_state.{status}", f"is not a Sentinel status ({', '.join(STATUSES)})")
            if t["state_to_status"].get(str(state)) != status:
                # Otherwise a value written one way reads back as another and the sides never settle.
                raise _bad(f"status_to_state.{status}", f"-> {state!r}, but state_to_status does not map "
                                                        f"{state!r} back to {status}")
        for state, status in t["state_to_status"].items():
            if status not in STATUSES:
                raise _bad(f"state_to_status.{state}", f"-> {status!r} is not a Sentinel status")
        pairs: dict[str, tuple[str, str]] = {}
        for severity, pair in t["severity_to_impact_urgency"].items():
            if severity not in SEVERITIES:
                raise _bad(f"severity_to_impact_urgency.{severity}", "is not a Sentinel severity")
            if not (isinstance(pair, list) and len(pair) == 2 and all(str(v).isdigit() for v in pair)):
                raise _bad(f"severity_to_impact_urgency.{severity}", "must be [impact, urgency], e.g. [\"1\", \"2\"]")
            pairs[severity] = (str(pair[0]), str(pair[1]))
        for priority, severity in t["priority_to_severity"].items():
            if severity not in SEVERITIES:
                raise _bad(f"priority_to_severity.{priority}", f"-> {severity!r} is not a Sentinel severity")
        for classification, code in t["classification_to_close_code"].items():
            _check_classification(f"classification_to_close_code.{classification}", classification, bare_ok=True)
            if not isinstance(code, str) or not code:
                raise _bad(f"classification_to_close_code.{classification}", "must name a close code")
        for code, classification in t["close_code_to_classification"].items():
            _check_classification(f"close_code_to_classification.{code}", classification)
        _check_classification("default_classification", t["default_classification"])
        owners: dict[str, str] = {}
        object_ids: dict[str, str] = {}
        for upn, user in t["owners"].items():
            if isinstance(user, dict):
                sys_id, object_id = user.get("sys_id"), user.get("object_id")
                if object_id is not None:
                    object_ids[str(upn).lower()] = str(object_id)
            else:
                sys_id = user
            if not isinstance(sys_id, str) or not SYS_ID.match(sys_id):
                raise _bad(f"owners.{upn}", "must be a sys_user sys_id (32 hexadecimal characters) or "
                                            "{\"sys_id\": ..., \"object_id\": ...}")
            owners[str(upn).lower()] = sys_id
        return cls(
            source=t["source"].strip(),
            status_to_state={k: str(v) for k, v in t["status_to_state"].items()},
            state_to_status={str(k): v for k, v in t["state_to_status"].items()},
            severity_to_impact_urgency=pairs,
            priority_to_severity={str(k): v for k, v in t["priority_to_severity"].items()},
            classification_to_close_code=dict(t["classification_to_close_code"]),
            close_code_to_classification=dict(t["close_code_to_classification"]),
            default_classification=t["default_classification"],
            owners=owners,
            read_only_states=frozenset(t["read_only_states"]),
            owner_object_ids=object_ids,
            _owner_by_sys_id={sys_id: upn for upn, sys_id in owners.items()},
        )


__all__ = ["DEFAULT_MAPPING", "SyncMapping", "join_classification", "split_classification"]
