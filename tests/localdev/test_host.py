"""The local function host over real HTTP: routing, keys, async, timers, queues, poison."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from azure.storage.queue import BinaryBase64EncodePolicy, QueueClient

from localdev.azurite import Azurite
from localdev.host import HostProcess, route_regex
from tests.conftest import wait_for


@pytest.fixture(scope="module")
def storage():
    with Azurite() as azurite:
        yield azurite


@pytest.fixture(scope="module")
def host(storage, tmp_path_factory):
    record = tmp_path_factory.mktemp("host") / "record.jsonl"
    env = {"HOST_TEST_STORAGE": storage.connection_string, "HOST_TEST_RECORD": str(record),
           "LOCAL_QUEUE_POLL_SECONDS": "0.1"}
    with HostProcess(env=env, app="tests.localdev.host_app:app") as process:
        process.record = record
        yield process


def records(host, kind: str) -> list:
    path: Path = host.record
    if not path.exists():
        return []
    return [r["value"] for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def get(host, route: str, key: str | None = "function", **kw) -> requests.Response:
    headers = {}
    if key == "function":
        headers["x-functions-key"] = host.function_key
    elif key:
        headers["x-functions-key"] = key
    return requests.get(f"{host.url}/{route}", headers=headers, timeout=10, **kw)


def test_route_templates():
    assert route_regex("items/{id:int}").match("items/42")
    assert not route_regex("items/{id:int}").match("items/x")
    assert route_regex("a/{id?}").match("a") and route_regex("a/{id?}").match("a/1")
    assert route_regex("r/{*rest}").match("r/x/y/z")["rest"] == "x/y/z"
    assert route_regex("g/{id:guid}").match("g/5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e")


def test_routes_params_methods_and_headers(host):
    response = get(host, "api/items/7/a/b", params={"q": "x"})
    assert response.status_code == 200 and response.headers["X-Item"] == "yes"
    assert response.json() == {"id": "7", "rest": "a/b", "method": "GET", "q": "x", "code_hidden": True}
    assert requests.put(f"{host.url}/api/items/7/a?code={host.function_key}", timeout=10).json()["method"] == "PUT"
    assert requests.post(f"{host.url}/api/items/7/a?code={host.function_key}", timeout=10).status_code == 404
    assert get(host, "api/items/x/a").status_code == 404
    assert get(host, "api/nothing").status_code == 404


def test_keys(host):
    assert get(host, "api/items/1/x", key=None).status_code == 401
    assert get(host, "api/items/1/x", key="wrong").status_code == 401
    assert get(host, "api/items/1/x", key=host.master_key).status_code == 200
    assert get(host, "api/admin-only").status_code == 401
    assert get(host, "api/admin-only", key=host.master_key).status_code == 200
    assert requests.post(f"{host.url}/api/open", data=b"hi", timeout=10).text == "hi"
    assert get(host, "admin/host/status").status_code == 401
    assert get(host, "admin/host/status", key=host.master_key).json() == {"state": "Running"}


def test_async_functions_run_concurrently(host):
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: get(host, "api/slow").status_code, range(4)))
    assert statuses == [202] * 4
    assert time.monotonic() - started < 1.5  # four 0.5 s sleeps overlapped


def test_exception_is_an_empty_500(host):
    response = get(host, "api/boom")
    assert response.status_code == 500 and response.text == ""


def test_timer_fired_through_the_admin_api(host):
    url = f"{host.url}/admin/functions/tick"
    assert requests.post(url, json={"input": ""}, timeout=10).status_code == 401
    assert requests.post(url, json={"input": ""}, headers={"x-functions-key": host.master_key},
                         timeout=10).status_code == 202
    assert records(host, "timer") == [False]
    assert requests.post(f"{host.url}/admin/functions/nope", headers={"x-functions-key": host.master_key},
                         timeout=10).status_code == 404


def test_queue_messages_are_processed_and_failures_poisoned(host, storage):
    client = QueueClient.from_connection_string(storage.connection_string, "host-test",
                                                message_encode_policy=BinaryBase64EncodePolicy())
    wait_for(lambda: _exists(client), timeout=10)
    client.send_message(b"hello")
    client.send_message(b"fail please")
    wait_for(lambda: any(r["body"] == "hello" for r in records(host, "queue")), timeout=10)
    poison = QueueClient.from_connection_string(storage.connection_string, "host-test-poison")
    wait_for(lambda: poison.get_queue_properties().approximate_message_count == 1, timeout=30)
    attempts = [r["dequeue_count"] for r in records(host, "queue") if r["body"] == "fail please"]
    assert attempts == [1, 2, 3, 4, 5]
    assert [r["body"] for r in records(host, "queue")].count("hello") == 1
    assert client.get_queue_properties().approximate_message_count == 0


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
        return True
    except Exception:
        return False
