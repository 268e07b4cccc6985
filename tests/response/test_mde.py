"""The Defender for Endpoint client against the emulator over real HTTP (managed identity from the Entra emulator)."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, DownstreamError, Forbidden, Throttled
from core.http import build_session
from localdev.emulators.defender import WS_FIN_0042 as WS
from localdev.emulators.defender import DefenderEmulator
from response.isolation import isolation_state
from response.mde import ActionInProgress, DefenderClient, DefenderRejected, odata_literal


@pytest.fixture(scope="module")
def server(entra):
    with DefenderEmulator(authority=entra) as emulator:
        yield emulator


@pytest.fixture
def mde(server):
    server.reset()
    return server


@pytest.fixture
def client(mde, tokens):
    return DefenderClient(build_session(retries=2, max_retry_after=1, backoff=0), tokens, mde.url + "/")


def test_literals_are_escaped_and_checked():
    assert odata_literal("ws-1.corp.contoso.com") == "'ws-1.corp.contoso.com'"
    for crafted in ("x' or 1 eq 1 or computerDnsName eq 'y", "a b", "", "ws/../machines", "é.contoso.com"):
        with pytest.raises(BadRequest):
            odata_literal(crafted)


def test_machines_by_id_exact_name_and_host_label(client, mde):
    mde.add_machine("a" * 40, "ws-fin-00420.corp.contoso.com")
    assert client.get_machine(WS).computer_dns_name == "ws-fin-0042.corp.contoso.com"
    assert client.get_machine("f" * 40) is None
    assert [m.id for m in client.machines_named("WS-FIN-0042.corp.contoso.com")] == [WS]
    assert [m.id for m in client.machines_with_host_label("ws-fin-0042")] == [WS]
    assert client.machines_named("ws-fin-004.corp.contoso.com") == []
    with pytest.raises(BadRequest):
        client.get_machine("../indicators")  # a crafted device id never becomes a path


def test_isolate_then_duplicate_is_action_in_progress(client, mde):
    action = client.isolate(WS, "incident 4711", "Selective")
    assert (action.type, action.status, action.scope, action.active) == ("Isolate", "Pending", "Selective", True)
    with pytest.raises(ActionInProgress):
        client.isolate(WS, "incident 4711", "Selective")
    state = isolation_state(client.machine_actions(WS, ("Isolate", "Unisolate")))
    assert state is not None and state.id == action.id
    assert client.get_action(action.id).status == "InProgress"


def test_isolation_state_ignores_actions_that_changed_nothing(client, mde):
    mde.set_outcome(WS, "Failed")
    failed = client.isolate(WS, "x", "Full")
    mde.complete(failed.id, "Failed")
    assert isolation_state(client.machine_actions(WS, ("Isolate", "Unisolate"))) is None
    mde.set_isolated(WS)
    state = isolation_state(client.machine_actions(WS, ("Isolate", "Unisolate")))
    assert (state.type, state.status) == ("Isolate", "Succeeded")


def test_errors_become_pack_errors(client, mde):
    with pytest.raises(DefenderRejected, match="InvalidInput"):
        client.isolate(WS, "x", "Partial")
    mde.fail(403, body={"error": {"code": "Forbidden", "message": "Missing role Machine.Isolate"}})
    with pytest.raises(Forbidden, match=r"Missing role Machine\.Isolate"):
        client.isolate(WS, "x", "Full")
    mde.fail(401)
    with pytest.raises(DownstreamError, match="access token"):
        client.get_machine(WS)
    mde.fail(429, retry_after=60)
    with pytest.raises(Throttled) as throttled:
        client.get_machine(WS)
    assert throttled.value.retry_after == 60
    mde.fail(500, times=5)
    with pytest.raises(DownstreamError):
        client.get_machine(WS)


def test_indicators(client, mde):
    indicator = client.submit_indicator({"indicatorValue": "203.0.113.45", "indicatorType": "IpAddress",
                                         "action": "AlertAndBlock", "title": "t", "description": "d"})
    assert [i["id"] for i in client.indicators_for("203.0.113.45", "IpAddress")] == [indicator["id"]]
    assert client.delete_indicator(indicator["id"]) is True
    assert client.delete_indicator(indicator["id"]) is False
