"""Analyst tasks on the incident (Sentinel incident tasks): data per outcome, deterministic ids, never reopened.

Sentinel incident tasks (``/incidents/{id}/tasks/{taskId}``, IncidentTasks_* in the 2025-09-01 spec:
``title`` and ``status`` New | Completed required, ``description`` optional) give the analyst a checklist
beside the incident. The pack adds them for outcomes that need a person, as data (``TEMPLATES``), each
configurable or off with ``INCIDENT_TASKS`` (a JSON object ``{"outcome": [{"title", "description"}] | []}``
replacing those outcomes' templates, or ``off`` for none):

| outcome | tasks |
|---|---|
| ``enrichment.malicious`` | Review the {count} malicious indicators |
| ``approval.block`` | Reset the user's credentials; Tell the user's manager |
| ``isolation`` | Collect an investigation package |

Titles and descriptions are ``str.format`` templates over the values the caller gives (``count``,
``indicators``, ``user``, ``machine`` ...). Each task's id is derived from the incident, the outcome and the
template's position, so a retry or a later run finds the same task: an open task (New) is updated when its
text changed (with its etag: an analyst's concurrent change wins); a task an analyst completed is never
touched again, so it is never reopened. A task this process wrote with the same text is not read again
(``_WRITTEN``): a repeated run costs no call, and a run with new text reads the task before changing it.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import Busy, ConfigurationError
from core.sentinel import SentinelClient

log = logging.getLogger(__name__)

TASK_NAMESPACE = uuid.UUID("3b1f6a2c-8d4e-4f5a-9b6c-7d8e9f0a1b2c")
MAX_TITLE, MAX_DESCRIPTION = 150, 2000  # kept short; the spec sets no limit

_WRITTEN: OrderedDict[str, tuple[str, str]] = OrderedDict()  # task id -> text this process last wrote
_WRITTEN_LOCK = threading.Lock()
_WRITTEN_MAX = 10_000

Template = tuple[str, str]  # (title, description)
TEMPLATES: dict[str, tuple[Template, ...]] = {
    "enrichment.malicious": ((
        "Review the {count} malicious indicators",
        "VirusTotal rates {count} indicator(s) of this incident malicious: {indicators}. Check where each was "
        "seen, block what should be blocked, and record the decision in a comment."),),
    "approval.block": (
        ("Reset the user's credentials", "The approver chose Block for {user}: reset the password and any "
                                         "other credentials, and review the sign-in methods."),
        ("Tell the user's manager", "Let the manager of {user} know about the incident and the block."),
    ),
    "isolation": ((
        "Collect an investigation package",
        "{machine} is isolated: collect an investigation package in Defender for Endpoint before releasing it."),),
}


def task_id(incident_id: str, outcome: str, position: int) -> str:
    """Deterministic: the same incident, outcome and template always name the same task."""
    return str(uuid.uuid5(TASK_NAMESPACE, f"{incident_id.lower()}|{outcome}|{position}"))


def templates_from_setting(raw: str | None) -> dict[str, tuple[Template, ...]]:
    """``INCIDENT_TASKS``: empty = the built-in templates; ``off`` = none; a JSON object overrides outcomes."""
    text = (raw or "").strip()
    if not text:
        return dict(TEMPLATES)
    if text.lower() in ("off", "none", "false"):
        return {}
    try:
        overrides = json.loads(text)
    except ValueError:
        raise ConfigurationError("setting INCIDENT_TASKS must be empty, 'off' or a JSON object") from None
    if not isinstance(overrides, dict):
        raise ConfigurationError("setting INCIDENT_TASKS must be a JSON object of outcome -> list of tasks")
    merged = dict(TEMPLATES)
    for outcome, tasks in overrides.items():
        if tasks in (None, False):
            tasks = []
        if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("title"), str)
                                                  for t in tasks):
            raise ConfigurationError(f"setting INCIDENT_TASKS: {outcome!s:.60} must be a list of "
                                     "{\"title\", \"description\"}")
        merged[str(outcome)] = tuple((t["title"], str(t.get("description") or "")) for t in tasks)
    return merged


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    title: str
    outcome: str  # created | updated | unchanged | kept-completed

    def to_dict(self) -> dict[str, str]:
        return {"taskId": self.task_id, "title": self.title, "result": self.outcome}


class Tasks:
    def __init__(self, sentinel: SentinelClient, templates: Mapping[str, Sequence[Template]]) -> None:
        self.sentinel = sentinel
        self.templates = templates

    def titles(self, outcome: str, **values: Any) -> list[str]:
        """What ``add`` would name the tasks (for an action's comment), without writing anything."""
        return [_fill(title, values, MAX_TITLE) for title, _ in self.templates.get(outcome, ())]

    def add(self, incident_id: str, outcome: str, **values: Any) -> list[TaskResult]:
        results = []
        for position, (title, description) in enumerate(self.templates.get(outcome, ())):
            results.append(self.ensure(incident_id, task_id(incident_id, outcome, position),
                                       _fill(title, values, MAX_TITLE), _fill(description, values, MAX_DESCRIPTION)))
        return results

    def ensure(self, incident_id: str, key: str, title: str, description: str) -> TaskResult:
        """Create the task, or bring an open one's text up to date; a completed task stays as the analyst left it."""
        with _WRITTEN_LOCK:
            if _WRITTEN.get(key) == (title, description):
                return TaskResult(key, title, "unchanged")  # written by this process: nothing to add
        result = self._ensure(incident_id, key, title, description)
        if result.outcome in ("created", "updated", "unchanged"):
            with _WRITTEN_LOCK:
                _WRITTEN[key] = (title, description)
                _WRITTEN.move_to_end(key)
                while len(_WRITTEN) > _WRITTEN_MAX:
                    _WRITTEN.popitem(last=False)
        return result

    def _ensure(self, incident_id: str, key: str, title: str, description: str) -> TaskResult:
        for _ in range(3):
            current = self.sentinel.get_task(incident_id, key)
            if current is None:
                self.sentinel.put_task(incident_id, key, {"title": title, "description": description, "status": "New"})
                return TaskResult(key, title, "created")
            props = current.get("properties") or {}
            if props.get("status") != "New":
                return TaskResult(key, title, "kept-completed")
            if props.get("title") == title and (props.get("description") or "") == description:
                return TaskResult(key, title, "unchanged")
            try:
                self.sentinel.put_task(incident_id, key, {"title": title, "description": description,
                                                          "status": "New"}, etag=current.get("etag"))
                return TaskResult(key, title, "updated")
            except Busy:  # an analyst changed the task since we read it: look again
                log.info("task %s changed while it was updated; reading it again", key)
        raise Busy("Sentinel: the incident task kept changing; retry", code="Conflict", retry_after=5)


def _fill(template: str, values: Mapping[str, Any], limit: int) -> str:
    try:
        text = template.format(**values)
    except (KeyError, IndexError, ValueError):
        text = template  # a template naming a value this outcome does not give: shown as written
    return text[:limit]


__all__ = ["TEMPLATES", "TaskResult", "Tasks", "task_id", "templates_from_setting"]
