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

Reading a task before writing it is what keeps a completed task closed, and it makes creating a task two
Sentinel round trips one after the other (Sentinel has no conditional create, and an incident does not list
its tasks). With a ``TaskMemo`` (issue #16: the task's write no longer waits for that read) the pack remembers
in Table Storage which tasks it has created: it claims a task's row (a conditional insert, one Table Storage
round trip) before it first writes the task, and a claim that wins proves the task does not exist, so the task
is written at once; a claim that loses means the task was created before, and it is read first as above.

The memo's tasks carry their own ids, derived from a random value the memo table holds (its *nonce*), not the
ids above: a memo can only vouch for tasks written by runs that claimed them in that same table. So a task
written by an earlier version of the pack, by another deployment on the same workspace, or before the table was
lost can never be overwritten blind: at worst it gets a sibling task, never a reopened one. Rows are never
deleted. Table ``taskmemo``: row (``pointer``, ``nonce``) holds the nonce N; row (N, ``anchor``) exists from
before the pointer names N; row (N, task id) is a claim. A claim is one entity group transaction that inserts the
claim and requires the anchor, so a process that still holds the nonce of a table that was lost and created
again learns it (the anchor is missing) instead of claiming in a memo that forgot its tasks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from core.errors import Busy, ConfigurationError
from core.sentinel import SentinelClient
from core.state import StateStore, TransactionFailed, op_create

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


MEMO_TABLE = "taskmemo"
_POINTER = ("pointer", "nonce")
_ANCHOR = "anchor"
_NONCES: weakref.WeakKeyDictionary[StateStore, str] = weakref.WeakKeyDictionary()  # per store: read once
_NONCES_LOCK = threading.Lock()


class TaskMemo:
    """The tasks this pack created, remembered in Table Storage so that creating one needs no read (module doc)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def task_id(self, incident_id: str, outcome: str, position: int) -> str:
        """The id of a task the memo vouches for: deterministic for this memo table, unlike any other id."""
        return str(uuid.uuid5(TASK_NAMESPACE, f"memo|{self.nonce()}|{incident_id.lower()}|{outcome}|{position}"))

    def claim(self, incident_id: str, outcome: str, position: int) -> tuple[str, bool]:
        """(the task's id, True) when it was never claimed, so it does not exist and this run creates it; False: it
        was claimed before (it may exist). The id is computed again if the nonce had to be read again."""
        for _ in range(2):
            nonce, key = self.nonce(), self.task_id(incident_id, outcome, position)
            merge_anchor = ("update", {"PartitionKey": nonce, "RowKey": _ANCHOR}, {"mode": _merge()})
            try:
                self.store.transaction(MEMO_TABLE, [op_create({"PartitionKey": nonce, "RowKey": key,
                                                               "claimed_at": time.time()}), merge_anchor])
                return key, True
            except TransactionFailed as failed:
                if failed.index == 0:
                    return key, False  # claimed before
                log.warning("task memo %s lost its anchor (the table was lost?): reading its nonce again", nonce)
                self.forget()
        raise Busy("the task memo changed while it was used; retry", code="TaskMemoChanged", retry_after=5)

    def nonce(self) -> str:
        with _NONCES_LOCK:
            known = _NONCES.get(self.store)
        if known is not None:
            return known
        row = self.store.get(MEMO_TABLE, *_POINTER)
        if row is None:
            drawn = uuid.uuid4().hex
            # The anchor first: a pointer always names a nonce whose anchor exists.
            self.store.insert_if_absent(MEMO_TABLE, {"PartitionKey": drawn, "RowKey": _ANCHOR, "at": time.time()})
            if not self.store.insert_if_absent(MEMO_TABLE, {"PartitionKey": _POINTER[0], "RowKey": _POINTER[1],
                                                            "nonce": drawn}):
                row = self.store.get(MEMO_TABLE, *_POINTER)  # another process drew first: use its nonce
            nonce = drawn if row is None else str(row["nonce"])
        else:
            nonce = str(row["nonce"])
        with _NONCES_LOCK:
            _NONCES[self.store] = nonce
        return nonce

    def forget(self) -> None:
        with _NONCES_LOCK:
            _NONCES.pop(self.store, None)


def _merge() -> Any:
    from azure.data.tables import UpdateMode

    return UpdateMode.MERGE  # without an etag: If-Match *, so the anchor must exist


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    title: str
    outcome: str  # created | updated | unchanged | kept-completed

    def to_dict(self) -> dict[str, str]:
        return {"taskId": self.task_id, "title": self.title, "result": self.outcome}


class Tasks:
    def __init__(self, sentinel: SentinelClient, templates: Mapping[str, Sequence[Template]],
                 memo: TaskMemo | None = None) -> None:
        self.sentinel = sentinel
        self.templates = templates
        self.memo = memo
        self._claims: dict[tuple[str, str, int], Future] = {}  # claims started ahead (``prepare``)
        self._lock = threading.Lock()

    def prepare(self, incident_id: str, outcome: str, submit: Callable[[Callable[[], Any]], Future]) -> None:
        """Claim ``outcome``'s tasks in the memo now, through ``submit`` (a pool the caller waits for), as soon as
        the caller knows it will add them: ``add`` then only writes them. Without a memo, nothing to do."""
        memo = self.memo
        if memo is None:
            return
        with self._lock:
            for position in range(len(self.templates.get(outcome, ()))):
                slot = (incident_id.lower(), outcome, position)
                if slot not in self._claims:
                    self._claims[slot] = submit(lambda p=position: memo.claim(incident_id, outcome, p))

    def warm(self) -> None:
        """Read the memo's nonce if this process has not yet (one Table Storage read per process)."""
        if self.memo is not None:
            self.memo.nonce()

    def titles(self, outcome: str, **values: Any) -> list[str]:
        """What ``add`` would name the tasks (for an action's comment), without writing anything."""
        return [_fill(title, values, MAX_TITLE) for title, _ in self.templates.get(outcome, ())]

    def add(self, incident_id: str, outcome: str, **values: Any) -> list[TaskResult]:
        results = []
        for position, (title, description) in enumerate(self.templates.get(outcome, ())):
            text = (_fill(title, values, MAX_TITLE), _fill(description, values, MAX_DESCRIPTION))
            if self.memo is None:
                results.append(self.ensure(incident_id, task_id(incident_id, outcome, position), *text))
            else:
                results.append(self._ensure_remembered(incident_id, outcome, position, *text))
        return results

    def ensure(self, incident_id: str, key: str, title: str, description: str) -> TaskResult:
        """Create the task, or bring an open one's text up to date; a completed task stays as the analyst left it."""
        if _written(key, title, description):
            return TaskResult(key, title, "unchanged")  # written by this process: nothing to add
        return _remember(self._ensure(incident_id, key, title, description), description)

    def _ensure_remembered(self, incident_id: str, outcome: str, position: int, title: str, description: str
                           ) -> TaskResult:
        """``ensure`` through the memo: a task never claimed is created without being read first."""
        assert self.memo is not None
        with self._lock:
            ahead = self._claims.pop((incident_id.lower(), outcome, position), None)
        key = self.memo.task_id(incident_id, outcome, position)
        if _written(key, title, description):
            return TaskResult(key, title, "unchanged")
        key, first = ahead.result() if ahead is not None else self.memo.claim(incident_id, outcome, position)
        if not first:
            return _remember(self._ensure(incident_id, key, title, description), description)
        self.sentinel.put_task(incident_id, key, {"title": title, "description": description, "status": "New"})
        return _remember(TaskResult(key, title, "created"), description)

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


def _written(key: str, title: str, description: str) -> bool:
    with _WRITTEN_LOCK:
        return _WRITTEN.get(key) == (title, description)


def _remember(result: TaskResult, description: str) -> TaskResult:
    """Note a task this process wrote (or found) with this text, so a repeated run does not read it again."""
    if result.outcome in ("created", "updated", "unchanged"):
        with _WRITTEN_LOCK:
            _WRITTEN[result.task_id] = (result.title, description)
            _WRITTEN.move_to_end(result.task_id)
            while len(_WRITTEN) > _WRITTEN_MAX:
                _WRITTEN.popitem(last=False)
    return result


def _fill(template: str, values: Mapping[str, Any], limit: int) -> str:
    try:
        text = template.format(**values)
    except (KeyError, IndexError, ValueError):
        text = template  # a template naming a value this outcome does not give: shown as written
    return text[:limit]


__all__ = ["MEMO_TABLE", "TEMPLATES", "TaskMemo", "TaskResult", "Tasks", "task_id", "templates_from_setting"]
