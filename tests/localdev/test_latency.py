"""Latency profiles: emulators and storage answer no sooner than the profile says (lower bounds only:
a busy machine can only make them slower), and everything still works through the storage proxy."""

from __future__ import annotations

import time

import pytest
import requests

from localdev.azurite import Azurite
from localdev.emulators.base import Emulator, Response
from localdev.latency import PROFILES, LatencyProxy, profile


class Echo(Emulator):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.route("POST", r"/echo", lambda req: Response(200, {"got": req.json}))


def test_profiles_parse_by_name_json_or_mapping_and_refuse_unknown_names():
    assert profile("real") == PROFILES["real"] and profile(None) == {} and profile("none") == {}
    assert profile('{"virustotal": 0.5}') == {"virustotal": 0.5}
    assert profile({"graph": 1}) == {"graph": 1.0}
    with pytest.raises(ValueError, match="unknown latency profile"):
        profile("fast")


def test_an_emulator_answers_after_its_latency():
    with Echo() as echo:
        echo.latency = 0.2
        started = time.monotonic()
        assert requests.post(echo.url + "/echo", json={"a": 1}, timeout=30).json() == {"got": {"a": 1}}
        assert time.monotonic() - started >= 0.2


def test_the_proxy_passes_requests_and_answers_through_and_delays_them():
    with Echo() as echo:
        port = int(echo.url.rsplit(":", 1)[1])
        with LatencyProxy(port, latency=0.15) as proxy, requests.Session() as session:
            url = f"http://127.0.0.1:{proxy.port}/echo"
            big = {"blob": "x" * 200_000}  # several chunks
            for _ in range(3):  # kept-alive connection: every request pays the latency
                started = time.monotonic()
                assert session.post(url, json=big, timeout=30).json() == {"got": big}
                assert time.monotonic() - started >= 0.15
            proxy.latency = 0.0
            assert session.post(url, json={"b": 2}, timeout=30).json() == {"got": {"b": 2}}


def test_azurite_behind_the_proxy_serves_tables_and_queues():
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    with Azurite(latency_proxy=True) as storage:
        storage.set_latency(0.05)
        assert f"TableEndpoint=http://127.0.0.1:{storage.ports['table']}/" not in storage.connection_string
        table = TableServiceClient.from_connection_string(storage.connection_string).create_table("latency")
        started = time.monotonic()
        table.create_entity({"PartitionKey": "p", "RowKey": "r", "v": 1})
        assert table.get_entity("p", "r")["v"] == 1
        assert time.monotonic() - started >= 0.1
        queue = QueueClient.from_connection_string(storage.connection_string, "latency")
        queue.create_queue()
        queue.send_message("hello")
        assert next(iter(queue.receive_messages())).content == "hello"
