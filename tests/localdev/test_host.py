"""The local function host over real HTTP and real queues (Azurite), in process and as a child process."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, QueueClient

from localdev.azurite import Azurite
from localdev.host import FunctionHost, HostProcess, route_regex
from tests.conftest import wait_for
from tests.localdev import sample_app

APP = "tests.localdev.sample_app:app"
GUID = "5c1e9d2a-7b3f-4e8a-9d6c-2f1a0b3c4d5e"


@dataclass
class Running:
    """What a test needs of a host, whichever way it runs."""

    url: str
    function_key: str
    master_key: str
    record: Path
    queue: str
    logs: Callable[[], str]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    with Azurite() as azurite:
        yield azurite


def settings(storage: Azurite, record: Path, queue: str) -> dict[str, str]:
    return {"SAMPLE_RECORD": str(record), "SAMPLE_STORAGE": storage.connection_string, "SAMPLE_QUEUE": queue,
            "LOCAL_QUEUE_POLL_SECONDS": "0.05"}


@pytest.fixture(scope="module", params=["inprocess", "process"])
def host(request, storage, tmp_path_factory) -> Iterator[Running]:
    record = tmp_path_factory.mktemp(request.param) / "record.jsonl"
    queue = f"sample-{request.param}"
    env = settings(storage, record, queue)
    if request.param == "process":
        with HostProcess(env=env, app=APP) as process:
            yield Running(process.url, process.function_key, process.master_key, record, queue,
                          lambda: process.output)
        assert process.returncode == 0  # SIGTERM shuts the host down cleanly
        return
    collect = _Collect()
    logging.getLogger("localdev.host").addHandler(collect)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        served = FunctionHost(sample_app.app, function_key="fk-test", master_key="mk-test").serve()
        try:
            yield Running(served.url, "fk-test", "mk-test", record, queue, lambda: "\n".join(collect.lines))
        finally:
            served.shutdown()
            logging.getLogger("localdev.host").removeHandler(collect)


def records(host: Running, kind: str) -> list[dict]:
    if not host.record.exists():
        return []
    return [r["value"] for r in map(json.loads, host.record.read_text().splitlines()) if r["kind"] == kind]


def call(host: Running, method: str, path: str, key: str | None = "function", **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["x-functions-key"] = {"function": host.function_key, "master": host.master_key}.get(key, key)
    return requests.request(method, f"{host.url}/{path}", headers=headers, timeout=10, **kwargs)


def queue_client(storage: Azurite, name: str, *, base64_encoded: bool = True) -> QueueClient:
    policies = {"message_encode_policy": BinaryBase64EncodePolicy(),
                "message_decode_policy": BinaryBase64DecodePolicy()} if base64_encoded else {}
    client = QueueClient.from_connection_string(storage.connection_string, name, **policies)
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    return client


def count(client: QueueClient) -> int:
    return client.get_queue_properties().approximate_message_count


# -- HTTP triggers --------------------------------------------------------------------------------
def test_route_templates():
    assert route_regex("items/{id:int}").match("items/-42")
    assert not route_regex("items/{id:int}").match("items/x")
    assert route_regex("a/{id?}").match("a") and route_regex("a/{id?}").match("a/1")
    assert route_regex("r/{*rest}").match("r/x/y/z")["rest"] == "x/y/z"
    assert route_regex("g/{id:guid}").match(f"g/{GUID}") and not route_regex("g/{id:guid}").match("g/123")
    assert route_regex("n/{name:alpha}").match("N/Abc") and not route_regex("n/{name:alpha}").match("n/a1")


def test_route_parameters_constraints_and_precedence(host):
    response = call(host, "GET", "api/items/7/a/b", params={"q": "x"})
    assert response.status_code == 200 and response.headers["X-Item"] == "yes"
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"route": {"id": "7", "rest": "a/b"}, "method": "GET", "q": "x"}
    assert call(host, "GET", "api/items/x/a").status_code == 404  # {id:int}
    assert call(host, "GET", "api/echo/special").json() == {"function": "echo_special"}  # literal wins
    assert call(host, "GET", "api/echo/abc").json()["route"] == {"kind": "abc"}  # optional left out
    assert call(host, "GET", f"api/echo/abc/{GUID}").json()["route"] == {"kind": "abc", "id": GUID}
    assert call(host, "GET", "api/echo/abc/not-a-guid").status_code == 404
    assert call(host, "GET", "api/echo/ab1").status_code == 404  # {kind:alpha}
    assert call(host, "GET", "api/nothing").status_code == 404
    assert call(host, "GET", "items/7/a").status_code == 404  # outside the route prefix


def test_methods_a_function_does_not_take_are_404_as_in_the_real_host(host):
    assert call(host, "PUT", "api/items/7/a").json()["method"] == "PUT"
    assert call(host, "POST", "api/items/7/a").status_code == 404
    assert call(host, "HEAD", "api/slow").status_code == 404


def test_function_keys_in_query_or_header(host):
    assert requests.get(f"{host.url}/api/items/1/x?code={host.function_key}", timeout=10).status_code == 200
    assert call(host, "GET", "api/items/1/x").status_code == 200
    assert call(host, "GET", "api/items/1/x", key="master").status_code == 200
    for key in (None, "wrong", ""):
        response = call(host, "GET", "api/items/1/x", key=key)
        assert response.status_code == 401 and response.content == b""
    assert requests.get(f"{host.url}/api/items/1/x?code=wrong", timeout=10).status_code == 401
    assert call(host, "GET", "api/admin-only").status_code == 401
    assert call(host, "GET", "api/admin-only", key="master").text == "admin"
    assert call(host, "POST", "api/open", key=None, data=b"\x00hi").content == b"\x00hi"
    assert call(host, "POST", "api/open", key="wrong", data=b"hi").status_code == 200  # anonymous ignores keys
    assert call(host, "POST", "api/open", key=None, data=iter([b"chunk", b"ed"])).content == b"chunked"


def test_admin_endpoints_need_the_master_key(host):
    assert call(host, "GET", "admin/host/status", key=None).status_code == 401
    assert call(host, "GET", "admin/host/status").status_code == 401
    assert call(host, "GET", "admin/host/status", key="master").json() == {"state": "Running"}
    assert call(host, "POST", "admin/functions/tick", json={"input": ""}).status_code == 401


def test_async_functions_run_concurrently(host):
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: call(host, "GET", "api/slow"), range(2)))
    assert [r.status_code for r in responses] == [202, 202] and responses[0].text == "slept"
    assert time.monotonic() - started < 0.9  # two 0.5 s sleeps overlapped on the one event loop


def test_an_exception_is_an_empty_500_and_a_logged_traceback(host):
    response = call(host, "GET", "api/boom")
    assert response.status_code == 500 and response.content == b""
    wait_for(lambda: "internal detail that must not leak" in host.logs(), timeout=5)
    assert "Functions.boom" in host.logs() and "Traceback" in host.logs()


# -- timer and queue triggers ---------------------------------------------------------------------
def test_timer_fired_through_the_admin_api(host):
    response = call(host, "POST", "admin/functions/tick", key="master", json={"input": ""})
    assert response.status_code == 202
    assert wait_for(lambda: records(host, "timer"), timeout=5) == [{"past_due": False}]
    assert call(host, "POST", "admin/functions/nope", key="master", json={"input": ""}).status_code == 404


def test_queue_message_is_processed_and_deleted(host, storage):
    client = queue_client(storage, host.queue)
    client.send_message(b'{"hello": "world"}')
    [got] = wait_for(lambda: [r for r in records(host, "queue") if r["body"] == '{"hello": "world"}'], timeout=10)
    assert got["dequeue_count"] == 1 and got["id"]
    wait_for(lambda: count(client) == 0, timeout=5)


def test_failing_message_lands_in_the_poison_queue_after_five_dequeues(host, storage):
    client = queue_client(storage, host.queue)
    poison = queue_client(storage, f"{host.queue}-poison")
    body = f"fail {uuid.uuid4()}"
    client.send_message(body.encode())
    wait_for(lambda: body.encode() in [m.content for m in poison.peek_messages(max_messages=32)], timeout=15)
    assert [r["dequeue_count"] for r in records(host, "queue") if r["body"] == body] == [1, 2, 3, 4, 5]
    assert count(client) == 0


def test_a_message_that_is_not_base64_goes_to_poison_without_running(host, storage):
    raw = queue_client(storage, host.queue, base64_encoded=False)
    poison = queue_client(storage, f"{host.queue}-poison", base64_encoded=False)
    seen = len(records(host, "queue"))
    raw.send_message("plain text, not base64!")
    wait_for(lambda: "plain text, not base64!" in [m.content for m in poison.peek_messages(max_messages=32)],
             timeout=10)
    assert len(records(host, "queue")) == seen and count(raw) == 0


def test_a_message_dequeued_too_often_is_poisoned_before_running(storage, tmp_path, monkeypatch):
    """A message whose earlier runs killed the host (no failure recorded) is never run again."""
    queue = f"early-{uuid.uuid4().hex[:8]}"
    for name, value in settings(storage, tmp_path / "record.jsonl", queue).items():
        monkeypatch.setenv(name, value)
    client = queue_client(storage, queue)
    client.send_message(b"crashed the host five times")
    for _ in range(5):
        [message] = client.receive_messages(max_messages=1, visibility_timeout=1)
        client.update_message(message.id, pop_receipt=message.pop_receipt, visibility_timeout=0)
    served = FunctionHost(sample_app.app, function_key="fk", master_key="mk").serve()
    try:
        poison = queue_client(storage, f"{queue}-poison")
        wait_for(lambda: count(poison) == 1, timeout=10)
        assert not (tmp_path / "record.jsonl").exists()
    finally:
        served.shutdown()


def test_pollers_survive_an_azurite_outage(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    with Azurite() as storage:
        for name, value in settings(storage, record, "outage").items():
            monkeypatch.setenv(name, value)
        served = FunctionHost(sample_app.app, function_key="fk", master_key="mk").serve()
        try:
            queue_client(storage, "outage").send_message(b"before")
            wait_for(lambda: record.exists() and "before" in record.read_text(), timeout=10)
            storage.restart()  # the queue and its messages are gone; the poller must recreate and go on
            wait_for(lambda: _exists(storage, "outage"), timeout=20)
            queue_client(storage, "outage").send_message(b"after")
            wait_for(lambda: "after" in record.read_text(), timeout=20)
        finally:
            served.shutdown()


def _exists(storage: Azurite, name: str) -> bool:
    try:
        QueueClient.from_connection_string(storage.connection_string, name, retry_total=0).get_queue_properties()
        return True
    except Exception:
        return False


# -- the host as a process ------------------------------------------------------------------------
def test_host_process_reports_why_it_did_not_start():
    with pytest.raises(RuntimeError, match="exited with code 1") as failure:
        HostProcess(app="tests.localdev.no_such_module:app").start()
    assert "No module named 'tests.localdev.no_such_module'" in str(failure.value)


def test_host_process_names_a_queue_setting_it_lacks_and_still_serves():
    with HostProcess(env={"SAMPLE_STORAGE": "", "SAMPLE_QUEUE": ""}, app=APP) as process:
        status = requests.get(f"{process.url}/admin/host/status", headers={"x-functions-key": process.master_key},
                              timeout=10)
        assert status.json() == {"state": "Running"}
        wait_for(lambda: "function consume: setting SAMPLE_STORAGE" in process.output, timeout=5)
    assert process.returncode == 0



# -- per-function keys --------------------------------------------------------------------------------------------
def test_a_functions_own_key_opens_that_function_only():
    served = FunctionHost(sample_app.app, function_key="fk-own", master_key="mk-own",
                          function_keys={"echo": "own-echo-key"}).serve()
    try:
        def status(path: str, key: str, method: str = "GET") -> int:
            return requests.request(method, f"{served.url}/{path}", headers={"x-functions-key": key},
                                    timeout=10).status_code

        assert status("api/echo/abc", "own-echo-key") == 200
        assert requests.get(f"{served.url}/api/echo/abc", params={"code": "own-echo-key"}, timeout=10).ok
        for path, method in (("api/echo/special", "GET"), ("api/items/1/x", "GET"), ("api/items/1/x", "PUT"),
                             ("api/admin-only", "GET"), ("admin/host/status", "GET"),
                             ("admin/functions/tick", "POST")):
            assert status(path, "own-echo-key", method) == 401, path
        for key in ("fk-own", "mk-own"):  # host keys open every function-level function
            assert status("api/echo/abc", key) == 200 and status("api/echo/special", key) == 200
    finally:
        served.shutdown()


def test_function_keys_setting_is_json_of_function_names():
    from localdev.host import function_keys_from

    assert function_keys_from("") == {} and function_keys_from('{"ip_blocklist": "k"}') == {"ip_blocklist": "k"}
    for bad in ('["k"]', '{"ip_blocklist": ""}', '{"a": 1}'):
        with pytest.raises(ValueError):
            function_keys_from(bad)


# -- App Service Authentication (Easy Auth) emulation -------------------------------------------------------------
CLIENT_ID = "e45a0000-0000-4000-8000-0000000000c1"


@pytest.fixture(scope="module")
def easy_auth_host():
    """The sample app behind the Easy Auth emulation, signing people in at the Entra emulator (Graph directory)."""
    from localdev.easyauth import EasyAuth
    from localdev.emulators.entra import EntraEmulator
    from localdev.emulators.graph import GraphEmulator

    with EntraEmulator() as entra, GraphEmulator(authority=entra) as graph:
        entra.sign_in.directory = graph
        entra.sign_in.register_app(CLIENT_ID, "http://127.0.0.1/.auth/login/aad/callback")
        served = FunctionHost(sample_app.app, function_key="fk-ea", master_key="mk-ea",
                              easy_auth=EasyAuth(entra.sign_in.authority, CLIENT_ID, entra.sign_in.issuer)).serve()
        try:
            yield served, entra
        finally:
            served.shutdown()


def test_easy_auth_signs_in_injects_the_principal_and_strips_client_copies(easy_auth_host):
    import base64

    from localdev.easyauth import sign_in
    from localdev.emulators.graph import LOCAL_PASSWORD, MFA_CODE, PEOPLE

    served, entra = easy_auth_host
    forged = {"X-MS-CLIENT-PRINCIPAL": "eyJmb3JnZWQiOiB0cnVlfQ==", "X-MS-CLIENT-PRINCIPAL-ID": PEOPLE[0][0],
              "X-MS-TOKEN-AAD-ID-TOKEN": "forged"}
    assert requests.get(f"{served.url}/api/whoami", headers=forged, timeout=10).json() == {}
    assert requests.get(f"{served.url}/.auth/me", timeout=10).status_code == 401

    http = requests.Session()
    landed = sign_in(http, served.url, "Alice@Contoso.com", LOCAL_PASSWORD, mfa_code=MFA_CODE, next_path="/api/whoami")
    seen = landed.json()
    principal = json.loads(base64.b64decode(seen["x-ms-client-principal"]))
    claims = {c["typ"]: c["val"] for c in principal["claims"]}
    assert principal["auth_typ"] == "aad" and principal["name_typ"].endswith("/claims/name")
    assert claims["http://schemas.microsoft.com/identity/claims/objectidentifier"] == PEOPLE[0][0]
    assert [c["val"] for c in principal["claims"] if c["typ"].endswith("authnmethodsreferences")] == ["pwd", "mfa"]
    assert seen["x-ms-client-principal-id"] == PEOPLE[0][0] and seen["x-ms-client-principal-idp"] == "aad"
    assert seen["x-ms-token-aad-id-token"].count(".") == 2
    # A client copy sent along with a real session is replaced, not merged.
    again = http.get(f"{served.url}/api/whoami", headers=forged, timeout=10).json()
    assert again["x-ms-client-principal-id"] == PEOPLE[0][0] and again["x-ms-token-aad-id-token"] != "forged"
    me = http.get(f"{served.url}/.auth/me", timeout=10).json()
    assert me[0]["provider_name"] == "aad" and me[0]["user_id"] == "alice@contoso.com"
    assert entra.sign_in.signins[-1] == {"upn": "alice@contoso.com", "amr": ["pwd", "mfa"]}
    http.get(f"{served.url}/.auth/logout", timeout=10)
    assert http.get(f"{served.url}/api/whoami", timeout=10).json() == {}


def test_easy_auth_refuses_what_app_service_refuses(easy_auth_host):
    from localdev.easyauth import sign_in
    from localdev.emulators.graph import LOCAL_PASSWORD

    served, entra = easy_auth_host
    external = requests.get(f"{served.url}/.auth/login/aad", params={"post_login_redirect_uri": "https://evil.example/"},
                            allow_redirects=False, timeout=10)
    assert external.status_code == 403
    with pytest.raises(PermissionError, match="AADSTS50126"):
        sign_in(requests.Session(), served.url, "alice@contoso.com", "wrong-password")
    directory = entra.sign_in.directory
    directory.set_enabled(directory.user("bob@contoso.com")["id"], False)
    try:
        with pytest.raises(PermissionError, match="AADSTS50057"):  # a disabled account cannot sign in
            sign_in(requests.Session(), served.url, "bob@contoso.com", LOCAL_PASSWORD)
    finally:
        directory.set_enabled(directory.user("bob@contoso.com")["id"], True)
    # A tampered ID token (the payload changed, the signature kept) opens no session.
    http = requests.Session()
    start = http.get(f"{served.url}/.auth/login/aad", allow_redirects=True, timeout=10)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', start.text))
    posted = http.post(start.url, data={**fields, "login": "bob@contoso.com", "password": LOCAL_PASSWORD}, timeout=10)
    token = re.search(r'name="id_token" value="([^"]+)"', posted.text)[1]
    state = re.search(r'name="state" value="([^"]+)"', posted.text)[1]
    header, payload, signature = token.split(".")
    forged = ".".join((header, payload[:-4] + ("AAAA" if not payload.endswith("AAAA") else "BBBB"), signature))
    refused = http.post(f"{served.url}/.auth/login/aad/callback", data={"id_token": forged, "state": state},
                        allow_redirects=False, timeout=10)
    assert refused.status_code == 401 and "AppServiceAuthSession" not in refused.headers.get("Set-Cookie", "")
    # An app registration the redirect URI does not belong to: AADSTS50011 at Entra.
    entra.sign_in.register_app(CLIENT_ID, "https://func.example.net/.auth/login/aad/callback")
    try:
        mismatch = requests.get(f"{served.url}/.auth/login/aad", allow_redirects=True, timeout=10)
        assert mismatch.status_code == 400 and "AADSTS50011" in mismatch.text
    finally:
        entra.sign_in.register_app(CLIENT_ID, "http://127.0.0.1/.auth/login/aad/callback")
