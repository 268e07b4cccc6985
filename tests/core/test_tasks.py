"""Analyst task templates (core/tasks.py): data per outcome, overridable or off; ids deterministic; the task memo
(Azurite and the ARM emulator): a new task written without a read, never one it cannot vouch for."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import tasks as tasks_module
from core.credentials import TokenProvider
from core.errors import ConfigurationError
from core.http import build_session
from core.sentinel import SentinelClient
from core.state import StateStore
from core.tasks import MEMO_TABLE, TEMPLATES, TaskMemo, Tasks, task_id, templates_from_setting
from tests.conftest import wait_for
from tests.fixtures import INCIDENT_4711, incident_with


def test_defaults_cover_the_outcomes_the_issue_names():
    assert set(TEMPLATES) == {"enrichment.malicious", "approval.block", "isolation"}
    assert templates_from_setting("") == TEMPLATES
    assert templates_from_setting("off") == {}


def test_a_json_setting_replaces_or_silences_outcomes():
    merged = templates_from_setting('{"isolation": [], "approval.block": [{"title": "Call {user}"}]}')
    assert merged["isolation"] == () and merged["approval.block"] == (("Call {user}", ""),)
    assert merged["enrichment.malicious"] == TEMPLATES["enrichment.malicious"]
    assert Tasks(None, merged).titles("approval.block", user="adele") == ["Call adele"]


@pytest.mark.parametrize("raw", ["{not json", "[1]", '{"isolation": "x"}', '{"isolation": [{"no": "title"}]}'])
def test_a_malformed_setting_names_itself(raw):
    with pytest.raises(ConfigurationError, match="INCIDENT_TASKS"):
        templates_from_setting(raw)


def test_ids_depend_on_incident_outcome_and_position_only():
    assert task_id(INCIDENT_4711, "isolation", 0) == task_id(INCIDENT_4711.upper(), "isolation", 0)
    assert len({task_id(INCIDENT_4711, o, p) for o in ("isolation", "approval.block") for p in (0, 1)}) == 4


# -- the task memo (issue #16: a new task is written without being read first) -----------------------------
class _Token:
    """Tokens from the stack's Entra emulator (real bearer checks in the ARM emulator)."""

    def __init__(self, entra) -> None:
        self.entra = entra

    def get_token(self, scope: str, **_kw):
        from azure.core.credentials import AccessToken

        return AccessToken(self.entra.issue(scope.removesuffix("/.default")), int(time.time()) + 3000)


@pytest.fixture
def memo_world(clean_stack):
    """A Sentinel client on the stack's ARM emulator, a state store of its own, and a fresh incident."""
    store = StateStore(connection_string=clean_stack.azurite.connection_string, prefix="tm" + uuid.uuid4().hex[:8])
    tokens = TokenProvider(_Token(clean_stack.entra))
    sentinel = SentinelClient(build_session(timeout=5, retries=1, backoff=0.01), tokens, clean_stack.arm.url)
    incident_id = clean_stack.arm.seed_from_trigger(incident_with(uuid.uuid4().int % 100000, ["203.0.113.9"],
                                                                  name=str(uuid.uuid4())))
    return clean_stack.arm, store, sentinel, incident_id


def _task_calls(arm, method: str) -> int:
    return len(arm.requests_to(method, r"/tasks/"))


def _forget_writes() -> None:
    """A new process: nothing remembered of the tasks written before (only the memo in Table Storage)."""
    with tasks_module._WRITTEN_LOCK:
        tasks_module._WRITTEN.clear()


def test_a_remembered_task_is_created_without_a_read_and_read_before_any_later_change(memo_world):
    arm, store, sentinel, incident_id = memo_world
    tasks = Tasks(sentinel, TEMPLATES, memo=TaskMemo(store))
    [created] = tasks.add(incident_id, "isolation", machine="ws-1")
    assert created.outcome == "created" and _task_calls(arm, "GET") == 0 and _task_calls(arm, "PUT") == 1
    assert [t["name"] for t in arm.tasks(incident_id)] == [created.task_id]
    assert created.task_id == TaskMemo(store).task_id(incident_id, "isolation", 0)  # deterministic in this memo
    assert created.task_id != task_id(incident_id, "isolation", 0)  # never an id another writer may have used
    _forget_writes()
    [again] = Tasks(sentinel, TEMPLATES, memo=TaskMemo(store)).add(incident_id, "isolation", machine="ws-1")
    assert (again.task_id, again.outcome) == (created.task_id, "unchanged")
    assert _task_calls(arm, "GET") == 1 and _task_calls(arm, "PUT") == 1  # claimed before: read, nothing to write
    arm.analyst_task_change(incident_id, created.task_id, status="Completed")
    _forget_writes()
    [kept] = Tasks(sentinel, TEMPLATES, memo=TaskMemo(store)).add(incident_id, "isolation", machine="ws-2")
    assert kept.outcome == "kept-completed" and _task_calls(arm, "PUT") == 1
    [stored] = arm.tasks(incident_id)
    assert stored["properties"]["status"] == "Completed" and "ws-1" in stored["properties"]["description"]


def test_a_claim_made_ahead_is_what_add_uses(memo_world):
    arm, store, sentinel, incident_id = memo_world
    tasks = Tasks(sentinel, TEMPLATES, memo=TaskMemo(store))
    with ThreadPoolExecutor(2) as pool:
        tasks.prepare(incident_id, "approval.block", pool.submit)
        tasks.prepare(incident_id, "approval.block", pool.submit)  # once per task, however often it is asked
        added = tasks.add(incident_id, "approval.block", user="adele@contoso.com")
    assert [t.outcome for t in added] == ["created", "created"] and _task_calls(arm, "GET") == 0
    assert sorted(t["name"] for t in arm.tasks(incident_id)) == sorted(t.task_id for t in added)


def test_a_task_written_without_the_memo_is_never_overwritten_blind(memo_world):
    """An earlier version of the pack (or another deployment) wrote the task under the plain id: the memo cannot
    vouch for it, so its task lives beside it and the completed one stays completed."""
    arm, store, sentinel, incident_id = memo_world
    [legacy] = Tasks(sentinel, TEMPLATES).add(incident_id, "isolation", machine="ws-1")
    arm.analyst_task_change(incident_id, legacy.task_id, status="Completed")
    [fresh] = Tasks(sentinel, TEMPLATES, memo=TaskMemo(store)).add(incident_id, "isolation", machine="ws-1")
    assert fresh.outcome == "created" and fresh.task_id != legacy.task_id
    statuses = {t["name"]: t["properties"]["status"] for t in arm.tasks(incident_id)}
    assert statuses == {legacy.task_id: "Completed", fresh.task_id: "New"}


def test_a_memo_whose_table_was_lost_draws_new_ids_and_never_reopens(memo_world):
    from azure.data.tables import TableServiceClient

    arm, store, sentinel, incident_id = memo_world
    memo = TaskMemo(store)
    [first] = Tasks(sentinel, TEMPLATES, memo=memo).add(incident_id, "isolation", machine="ws-1")
    arm.analyst_task_change(incident_id, first.task_id, status="Completed")
    # The table is lost and created again (empty) while this process still holds the old nonce.
    service = TableServiceClient.from_connection_string(store._conn)
    service.delete_table(store.table_name(MEMO_TABLE))
    wait_for(lambda: _created_again(service, store.table_name(MEMO_TABLE)), timeout=60)
    _forget_writes()
    [second] = Tasks(sentinel, TEMPLATES, memo=memo).add(incident_id, "isolation", machine="ws-1")
    assert second.outcome == "created" and second.task_id != first.task_id
    statuses = {t["name"]: t["properties"]["status"] for t in arm.tasks(incident_id)}
    assert statuses == {first.task_id: "Completed", second.task_id: "New"}


def _created_again(service, name: str) -> bool:
    from azure.core.exceptions import ResourceExistsError

    try:
        service.create_table(name)
    except ResourceExistsError:  # Azurite may still be deleting it
        return False
    return True


def test_two_processes_drawing_the_nonce_at_once_agree(memo_world):
    _arm, store, _sentinel, incident_id = memo_world
    stores = [StateStore(connection_string=store._conn, prefix=store.prefix) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(lambda s: TaskMemo(s).task_id(incident_id, "isolation", 0), stores))
    assert len(ids) == 1
