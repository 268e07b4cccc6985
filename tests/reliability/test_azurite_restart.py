"""Table and Queue Storage (Azurite) going away in the middle of a run of actions.

Which outage is honest: Azure Storage keeps its data through any restart, so these tests run their
own Azurite with its data on disk (``Azurite(persistent=True)``) and restart it on the same ports.
The session's Azurite runs in memory, where a restart is a different event: every link, verdict and
watermark is gone (and a running host's table clients point at tables that no longer exist until it
restarts). ``test_storage_that_lost_its_data_duplicates_nothing`` shows what the pack does after that.
A frozen process (SIGSTOP) stands for a stalled storage account: requests hang instead of failing.

For each, the action answers 503 StateUnavailable with Retry-After (a status the Logic App retries)
within a bounded time, or carries on unharmed; once storage is back the Logic App's retry leaves
exactly the end state of a run without the outage (the snapshots of the fault matrix).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from localdev.azurite import Azurite
from localdev.stack import SNOW_PASSWORD, VT_KEY
from tests.reliability.faults import FAULT_HOST_SETTINGS, RETRYABLE
from tests.reliability.test_faults_enrichment_sync import (
    SCENARIOS,
    Scenario,
    baseline,
    converged,
    host_settings,
)
from tests.sync.conftest import SyncClient

pytestmark = pytest.mark.e2e

# A ServiceNow create is held until Azurite has restarted (an event, not a fixed window: a restart takes about a
# second on an idle machine and far longer on a loaded one); past this bound the test fails.
HOLD_BOUND = 90.0
# One try and one retry of the fault settings' timeout, plus backoff: what "bounded" means for a 503 here.
ANSWER_WITHIN = 2 * float(FAULT_HOST_SETTINGS["HTTP_TIMEOUT_SECONDS"]) + 3


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    with Azurite(persistent=True) as running:
        yield running


def restart_settings(storage: Azurite, **overrides: str) -> dict[str, str]:
    """The fault matrix's host settings, on this module's storage."""
    return {**host_settings(), "STATE_STORAGE_CONNECTION": storage.connection_string, **overrides}


@pytest.fixture(scope="module")
def client(stack, storage) -> Iterator[SyncClient]:
    process = stack.host(**restart_settings(storage))
    try:
        yield SyncClient(process, stack)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def baselines() -> dict[str, dict]:
    return {}


@pytest.fixture
def running(storage) -> Iterator[Azurite]:
    """Storage is up when a test starts and when it ends, whatever the test did to it."""
    yield storage
    if not storage.running:
        storage.start()


def unavailable(answer: requests.Response, took: float) -> None:
    """503 StateUnavailable with Retry-After, in bounded time, naming the state store and no secret."""
    assert answer.status_code == 503 and answer.status_code in RETRYABLE, answer.text
    assert answer.json()["error"]["code"] == "StateUnavailable", answer.text
    assert "state store" in answer.json()["error"]["message"]
    assert int(answer.headers["Retry-After"]) > 0
    assert VT_KEY not in answer.text and SNOW_PASSWORD not in answer.text
    assert took < ANSWER_WITHIN, f"the answer took {took:.1f}s"


def act_timed(scenario: Scenario, client: SyncClient, subject) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = scenario.act(client, subject)
    return answer, time.monotonic() - started


def retry_converges(stack, client: SyncClient, scenario: Scenario, subject, expected: dict) -> None:
    retried = scenario.act(client, subject)
    assert retried.status_code == 200, retried.text
    converged(stack, client, scenario, subject, expected)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=[f"{name}-storage-down" for name in SCENARIOS])
def test_storage_down_answers_503_and_the_retry_converges(stack, client, baselines, running, scenario):
    """Storage stops between two actions of a run; the next action meets the outage, its retry does not."""
    expected = baseline(stack, client, baselines, scenario)
    stack.reset()
    subject = scenario.prepare(stack, client)
    running.stop()
    answer, took = act_timed(scenario, client, subject)
    running.start()  # same ports, same data
    unavailable(answer, took)
    retry_converges(stack, client, scenario, subject, expected)


@pytest.mark.parametrize("scenario", [SCENARIOS["enrich"], SCENARIOS["inbound"]], ids=["enrich-hung", "inbound-hung"])
def test_hung_storage_answers_503_in_bounded_time(stack, client, baselines, running, scenario):
    """A frozen storage account holds connections open: the state store's timeout, not the Logic App's, ends it."""
    expected = baseline(stack, client, baselines, scenario)
    stack.reset()
    subject = scenario.prepare(stack, client)
    with running.paused():
        answer, took = act_timed(scenario, client, subject)
    unavailable(answer, took)
    retry_converges(stack, client, scenario, subject, expected)


def test_restart_during_a_ticket_create_is_invisible(stack, storage, client, baselines, running):
    """Azurite restarts while the sync waits for ServiceNow to create the ticket: the run's next state
    writes go over new connections to the restarted service, and the run completes as if nothing happened."""
    scenario = SCENARIOS["create"]
    expected = baseline(stack, client, baselines, scenario)
    stack.reset()
    subject = scenario.prepare(stack, client)
    # An instance whose timeout lets ServiceNow take HOLD_BOUND, on the same storage and tables.
    process = stack.host(**restart_settings(storage, HTTP_TIMEOUT_SECONDS=str(int(HOLD_BOUND) + 5),
                                            STATE_TABLE_PREFIX=client.host.env["STATE_TABLE_PREFIX"]))
    try:
        patient = SyncClient(process, stack)
        restarted = threading.Event()
        held = stack.snow.hold(until=restarted.is_set, timeout=HOLD_BOUND, method="POST")  # served, just late
        answers: list[requests.Response] = []
        worker = threading.Thread(target=lambda: answers.append(scenario.act(patient, subject)))
        worker.start()
        deadline = time.monotonic() + 60
        while not stack.snow.requests_to("POST") and time.monotonic() < deadline:
            time.sleep(0.02)
        [_create] = stack.snow.requests_to("POST")
        running.restart()
        restarted.set()
        worker.join(HOLD_BOUND + 60)
        assert held.released == [True], "the create was answered before Azurite had restarted"
    finally:
        process.stop()
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    converged(stack, client, scenario, subject, expected)


def test_storage_that_lost_its_data_duplicates_nothing(stack, storage, client, baselines):
    """What a restart of the in-memory Azurite means: every link, verdict and watermark gone. An instance
    that starts on the empty store (a new table prefix on the same account) finds the ticket again by
    its correlation id and its own work notes by their markers: Sentinel and ServiceNow end exactly as
    after a run without the loss. Only the bookkeeping starts over (the link row is not compared)."""
    scenario = SCENARIOS["close"]
    expected = baseline(stack, client, baselines, scenario)
    stack.reset()
    subject = scenario.prepare(stack, client)
    process = stack.host(**restart_settings(storage, STATE_TABLE_PREFIX=f"lost{time.time_ns() % 10**8}"))
    try:
        forgetful = SyncClient(process, stack)
        answer = scenario.act(forgetful, subject)
        assert answer.status_code == 200, answer.text
        after = scenario.snapshot(stack, forgetful, subject)
    finally:
        process.stop()
    visible = ("incident", "tickets", "journal")
    assert {part: after[part] for part in visible} == {part: expected[part] for part in visible}
