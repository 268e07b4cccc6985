"""Attacks on the approval wait, the function keys and the links (issue 14, items 1, 2, 3, 4 and 10), each a
regression test over real HTTP that failed on the main branch before the fix.

1. A callback URL whose host the allow-list check and the connecting parser read differently
   (``https://evil.example\\.logic.azure.com``) is refused, and a callback that keeps failing is redelivered a
   bounded number of times, then marked failed with an audit comment.
2. Malformed callback URLs (a broken IPv6 literal, ports 99999 and -1) are 400s naming the problem, not 500s
   the Logic App would retry.
3. The functions with their own key (the ServiceNow push, the firewall block list) accept it, and every other
   keyed route refuses it: whoever reads that key in ServiceNow or on a firewall cannot isolate or disable.
4. Outside LOCAL_MODE no link is built from the request's Host header (PUBLIC_BASE_URL is required), and no
   key goes into any link.
10. Opening an expired link changes nothing; only the sweep times the approval out.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid

import pytest
import requests

from localdev.emulators.sentinel_arm import DEFAULT_WORKSPACE
from tests.conftest import HostClient, wait_for
from tests.fixtures import fresh_incident
from tests.orchestration.helpers import CallbackReceiver, link_for, links_in
from tests.reliability.test_auth import concrete, protected

ROUTE = "orchestration/approvals"
LOGIC_APP = "https://prod-07.westeurope.logic.azure.com/workflows/{}/triggers/manual/paths/invoke?sig=sas-secret"

# Outside LOCAL_MODE the deployment pins the pack to its workspace (issue 14.5): the samples' one.
HOME_WORKSPACE = ("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.OperationalInsights/workspaces/{}"
                  .format(*DEFAULT_WORKSPACE))

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def callbacks():
    with CallbackReceiver() as receiver:
        yield receiver


@pytest.fixture
def incident(clean_stack):
    body = fresh_incident()
    clean_stack.arm.seed_from_trigger(body)
    return body


def sweep(host: HostClient) -> None:
    fired = requests.post(f"{host.host.url}/admin/functions/approval_sweep", json={},
                          headers={"x-functions-key": host.host.master_key}, timeout=30)
    assert fired.status_code == 202


def comments(stack, incident) -> str:
    return " ".join(c["properties"]["message"] for c in stack.arm.comments(incident["object"]["id"]))


# -- 14.1 -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("callback", [
    "https://evil.example\\.logic.azure.com/workflows/x/run?sig=1",  # urlsplit: logic.azure.com; urllib3: evil
    "https://evil.example%5C.logic.azure.com/workflows/x/run?sig=1",
    "https://evil.example%2F.logic.azure.com/workflows/x/run?sig=1",
    "https://prod-07.westeurope.logic.azure.com\\@evil.example/x",
    "https://prod-07.westeurope.logic.azure.com\t.evil.example/x",
    "https://prød-07.westeurope.logic.azure.com/x",
])
def test_14_1_callback_hosts_are_checked_with_the_parser_that_connects(clean_stack, host, incident, callback):
    response = host.post(ROUTE, {"callbackUrl": callback, "incident": incident})
    assert response.status_code == 400, response.text
    assert "callbackUrl" in response.json()["error"]["message"] and "evil" not in response.text
    assert clean_stack.outbox.sent == [] and clean_stack.teams.messages == []


def test_14_1_a_failing_callback_is_redelivered_a_bounded_number_of_times(clean_stack, host_with, callbacks,
                                                                           incident):
    host = host_with(CALLBACK_MAX_ATTEMPTS="2", HTTP_MAX_RETRIES="0")
    url = callbacks.new_url()
    callbacks.fail(500, times=1000)
    try:
        assert host.post(ROUTE, {"callbackUrl": url, "incident": incident, "timeout": "PT1S"}).status_code == 201
        time.sleep(1.2)
        path = url.split("?")[0].split("127.0.0.1")[1].split("/", 1)[1]

        def posts() -> int:
            return len(callbacks.requests_to("POST", "/" + path + "$"))

        for attempt in (1, 2):  # the sweep times the approval out, then redelivers once
            sweep(host)
            wait_for(lambda n=attempt: posts() == n, timeout=30)
        sweep(host)  # the third sweep gives up: marked failed, with an audit comment
        wait_for(lambda: "Playbook not resumed" in comments(clean_stack, incident), timeout=30)
        for _ in range(2):
            sweep(host)
        time.sleep(1.0)
        assert posts() == 2
        assert "failed 2 time(s)" in comments(clean_stack, incident)
    finally:
        callbacks.clear_faults()


# -- 14.2 -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("callback", [
    "https://[::1/workflows/x",
    "https://prod-07.westeurope.logic.azure.com:99999/workflows/x",
    "https://prod-07.westeurope.logic.azure.com:-1/workflows/x",
])
def test_14_2_malformed_callback_urls_are_400_naming_the_problem(clean_stack, host, incident, callback):
    response = host.post(ROUTE, {"callbackUrl": callback, "incident": incident})
    assert response.status_code == 400, response.text
    assert "callbackUrl is not a valid URL" in response.json()["error"]["message"]
    assert clean_stack.outbox.sent == []


# -- 14.3 -------------------------------------------------------------------------------------------------------
OWN_ROUTES = {"servicenow_inbound": ("sync/servicenow/inbound", "POST"), "ip_blocklist": ("response/blocklist", "GET")}


def test_14_3_a_function_key_opens_its_own_function_only(clean_stack, host_with):
    keys = {name: f"own-{name}-" + secrets.token_hex(12) for name in OWN_ROUTES}
    host = host_with(LOCAL_FUNCTION_KEYS=json.dumps(keys))
    clean_stack.arm.seed_from_trigger(fresh_incident())
    body = json.dumps({"sys_id": "a" * 32, "sys_mod_count": "1"})
    for name, (route, method) in OWN_ROUTES.items():
        own = requests.request(method, f"{host.host.url}/api/{route}", headers={"x-functions-key": keys[name]},
                               data=body if method == "POST" else None, timeout=30)
        # The function ran: the block list answers 200, the push reaches its own signature check (a JSON 401,
        # where the host's refusal of a key is an empty 401).
        ran = own.status_code == 200 or (own.status_code == 401 and own.content
                                         and own.json()["error"]["code"] == "SignatureMissing")
        assert ran, (name, own.status_code)
        assert requests.get(f"{host.host.url}/api/response/blocklist", params={"code": keys[name]}, timeout=30) \
            .status_code == (200 if name == "ip_blocklist" else 401)
        opened = []
        for other, other_method in protected():
            if (other, other_method) == (route, method):
                continue
            response = requests.request(other_method, f"{host.host.url}/api/{concrete(other)}", timeout=30,
                                        headers={"x-functions-key": keys[name], "Content-Type": "application/json"},
                                        data=json.dumps(fresh_incident()) if other_method != "GET" else None)
            if response.status_code != 401 or response.content:
                opened.append(f"{other_method} {other}: {response.status_code}")
        assert not opened, f"the {name} key opened: {opened}"
    admin = requests.post(f"{host.host.url}/admin/functions/approval_sweep", json={}, timeout=30,
                          headers={"x-functions-key": keys["ip_blocklist"]})
    assert admin.status_code == 401
    # The host keys still open both.
    assert requests.get(f"{host.host.url}/api/response/blocklist", headers={"x-functions-key": host.host.function_key},
                        timeout=30).status_code == 200


# -- 14.4 -------------------------------------------------------------------------------------------------------
def test_14_4_links_never_come_from_the_host_header_and_never_carry_a_key(clean_stack, host_with, incident):
    unconfigured = host_with(LOCAL_MODE="false", SENTINEL_WORKSPACES=HOME_WORKSPACE)
    callback = LOGIC_APP.format(uuid.uuid4().hex)
    forged_host = {"Host": "approvals.evil.example", "x-functions-key": unconfigured.host.function_key}
    response = requests.post(f"{unconfigured.host.url}/api/{ROUTE}", json={"callbackUrl": callback,
                                                                            "incident": incident},
                             headers=forged_host, timeout=60)
    assert response.status_code == 500 and "PUBLIC_BASE_URL" in response.json()["error"]["message"]
    assert clean_stack.outbox.sent == [] and clean_stack.teams.messages == []

    public = "https://func-sentinel-test.azurewebsites.net"
    configured = host_with(LOCAL_MODE="false", SENTINEL_WORKSPACES=HOME_WORKSPACE, PUBLIC_BASE_URL=public)
    master = {"Host": "approvals.evil.example", "x-functions-key": configured.host.master_key}
    response = requests.post(f"{configured.host.url}/api/{ROUTE}", json={"callbackUrl": callback,
                                                                          "incident": incident},
                             headers=master, timeout=60)
    assert response.status_code == 201, response.text
    sent = json.dumps([clean_stack.outbox.sent, clean_stack.teams.messages, clean_stack.slack.messages,
                       clean_stack.arm.comments(incident["object"]["id"])])
    links = links_in(sent)
    assert links and all(link.startswith(public + "/api/orchestration/approvals/") for link in links)
    assert "evil.example" not in sent and "code=" not in sent
    for key in (configured.host.function_key, configured.host.master_key):
        assert key not in sent and key not in response.text


# -- 14.10 ------------------------------------------------------------------------------------------------------
def test_14_10_opening_an_expired_link_changes_nothing(clean_stack, host, callbacks, incident):
    url = callbacks.new_url()
    assert host.post(ROUTE, {"callbackUrl": url, "incident": incident, "timeout": "PT1S"}).status_code == 201
    block = link_for(links_in(clean_stack.outbox.to("alice@contoso.com")[0]["body"]), "Block")
    time.sleep(1.3)
    from localdev.emulators.tls import certificate_files

    for _ in range(3):  # mail scanners, previews, the approver: GETs of the expired link, redirects followed to Entra
        requests.get(block, timeout=30, verify=str(certificate_files().bundle_file))
    time.sleep(0.5)
    assert callbacks.bodies(url) == [], "a GET timed the approval out and called the playbook back"
    assert "Approval timed out" not in comments(clean_stack, incident)
    again = host.post(ROUTE, {"callbackUrl": url, "incident": incident})  # a retried subscribe: the stored state
    assert again.status_code == 200 and again.json()["state"] == "pending"
    from localdev.stack import Stack

    signed_in = requests.Session()
    Stack.sign_in(signed_in, host.host.url, "alice@contoso.com")
    page = signed_in.get(block, timeout=30)
    assert page.status_code == 410 and "expired" in page.text
    assert callbacks.bodies(url) == []
    sweep(host)  # the sweep, and only the sweep, times it out
    (callback,) = wait_for(lambda: callbacks.bodies(url))
    assert callback["decision"] == "TimedOut"
