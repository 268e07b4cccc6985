"""An approval decided Block adds the analyst tasks of its outcome (issue 18, item 3): "Reset the user's
credentials" and "Tell the user's manager" (core/tasks.py ``approval.block``), with deterministic ids, never
twice, never reopening a task an analyst completed, configurable or off with ``INCIDENT_TASKS``; and a task that
cannot be written never holds up the playbook."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from core.tasks import task_id
from tests.conftest import wait_for
from tests.orchestration.helpers import link_for, person, press
from tests.orchestration.test_approvals import comments_text, mail_links, subscribe, sweep

pytestmark = pytest.mark.e2e
TITLES = ["Reset the user's credentials", "Tell the user's manager"]


def decide(stack, host, incident, choice: str, callbacks, **extra) -> tuple[str, dict]:
    """Subscribe, let alice decide ``choice`` through her mailed link; (callback URL, subscribe answer)."""
    stack.outbox.sent.clear()
    url, approval = subscribe(host, callbacks, incident, **extra)
    alice = person(stack, host.host.url, "alice@contoso.com")
    assert press(alice, link_for(mail_links(stack, "alice@contoso.com"), choice), choice).status_code == 200
    return url, approval


def another_user(incident: dict) -> dict:
    """The same incident, its account replaced by another user (a later approval about someone else)."""
    body = copy.deepcopy(incident)
    for entity in body["object"]["properties"]["relatedEntities"]:
        if entity["kind"] == "Account":
            entity["properties"].update(accountName="megan.bowen", friendlyName="megan.bowen", displayName="Megan",
                                        aadUserId=str(uuid.uuid4()))
    return body


def test_block_adds_the_tasks_once_and_the_comment_lists_them(clean_stack, host, callbacks, incident):
    incident_id = incident["object"]["id"]
    url, _ = decide(clean_stack, host, incident, "Block", callbacks)
    tasks = clean_stack.arm.tasks(incident_id)
    assert [t["properties"]["title"] for t in tasks] == TITLES
    assert [t["name"] for t in tasks] == [task_id(incident_id, "approval.block", i) for i in range(2)]
    assert all(t["properties"]["status"] == "New" for t in tasks)
    assert "adele.vance@contoso.com" in tasks[0]["properties"]["description"]
    assert "Analyst tasks: Reset the user&#x27;s credentials; Tell the user&#x27;s manager" in \
        comments_text(clean_stack, incident)
    assert wait_for(lambda: callbacks.bodies(url))[0]["decision"] == "Block"

    # An analyst completes one; a later approval on the incident, about another user, decides Block again:
    # the completed task stays completed, the open one follows the new approval.
    clean_stack.arm.analyst_task_change(incident_id, tasks[0]["name"], status="Completed")
    decide(clean_stack, host, another_user(incident), "Block", callbacks)
    tasks = clean_stack.arm.tasks(incident_id)
    assert len(tasks) == 2
    assert tasks[0]["properties"]["status"] == "Completed" and "adele" in tasks[0]["properties"]["description"]
    assert tasks[1]["properties"]["status"] == "New" and "megan.bowen" in tasks[1]["properties"]["description"]
    assert "completed by an analyst earlier" in comments_text(clean_stack, incident)


def test_ignore_and_time_outs_add_no_task(clean_stack, host, callbacks, incident):
    decide(clean_stack, host, incident, "Ignore", callbacks)
    subscribe(host, callbacks, incident, timeout="PT1S")
    wait_for(lambda: sweep(host) or "timed out" in comments_text(clean_stack, incident), timeout=30, interval=0.5)
    assert clean_stack.arm.tasks(incident["object"]["id"]) == []


def test_a_redelivered_decision_adds_no_task_twice(clean_stack, host, callbacks, incident):
    # The outcome comment fails (Sentinel 500, past the client's retries): the sweep redelivers the decision,
    # tasks included, and they are not added twice.
    url, _ = subscribe(host, callbacks, incident)
    clean_stack.arm.fail(500, path=r"/comments/", method="PUT", times=4)
    alice = person(clean_stack, host.host.url, "alice@contoso.com")
    assert press(alice, link_for(mail_links(clean_stack, "alice@contoso.com"), "Block"), "Block").status_code == 200
    assert callbacks.bodies(url) == []  # the comment first, then the callback
    clean_stack.arm.clear_faults()
    sweep(host)
    assert wait_for(lambda: callbacks.bodies(url))[0]["decision"] == "Block"
    assert len(clean_stack.arm.tasks(incident["object"]["id"])) == 2
    assert len(clean_stack.arm.requests_to("PUT", r"/tasks/")) == 2
    assert "Analyst tasks: Reset" in comments_text(clean_stack, incident)


def test_tasks_follow_the_setting(clean_stack, host_with, callbacks, incident):
    custom = host_with(INCIDENT_TASKS=json.dumps({"approval.block": [{"title": "Call {user}", "description": ""}]}))
    decide(clean_stack, custom, incident, "Block", callbacks)
    assert [t["properties"]["title"] for t in clean_stack.arm.tasks(incident["object"]["id"])] == \
        ["Call adele.vance@contoso.com"]

    off = host_with(INCIDENT_TASKS="off")
    other = another_user(incident)
    other["object"]["id"] = other["object"]["id"].rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    other["object"]["name"] = other["object"]["id"].rsplit("/", 1)[1]
    clean_stack.arm.seed_from_trigger(other)
    decide(clean_stack, off, other, "Block", callbacks)
    assert clean_stack.arm.tasks(other["object"]["id"]) == []
    assert "Analyst tasks" not in comments_text(clean_stack, other)


def test_a_task_that_cannot_be_written_does_not_hold_up_the_playbook(clean_stack, host, callbacks, incident):
    clean_stack.arm.fail(403, path=r"/tasks/", times=10)
    url, _ = decide(clean_stack, host, incident, "Block", callbacks)
    assert wait_for(lambda: callbacks.bodies(url))[0]["decision"] == "Block"
    text = comments_text(clean_stack, incident)
    assert "Analyst tasks could not be added" in text and "add them by hand" in text
    assert "Reset the user&#x27;s credentials" in text
    clean_stack.arm.clear_faults()
