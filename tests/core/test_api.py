"""The HTTP door of every action (core/api.py) over the real local host: limits and malformed JSON.

Oversized bodies and too many entities are a 413 naming the limit; JSON that Python's parser
cannot hold (deep nesting), that no action could encode (lone surrogates) or whose numbers do not
convert (Infinity) is a 400, never a 500: a 4xx tells the Logic App not to retry.
"""

from __future__ import annotations

import json

import pytest

from core.api import MAX_BODY_BYTES
from sync.webhook import SIGNATURE_HEADER
from tests.fixtures import INCIDENT_4711, incident_with, sample

pytestmark = pytest.mark.e2e
TRIGGER_ROUTES = ("enrichment/ip-reputation", "response/block-ip", "sync/servicenow/outbound")
MAX_ENTITIES = 500  # the setting's default, which the test host keeps


def assert_error(response, status: int, code: str, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and fragment in error["message"], error


@pytest.mark.parametrize("route", [*TRIGGER_ROUTES, "orchestration/approvals", "sync/servicenow/inbound"])
def test_a_body_over_the_limit_is_413_before_anything_is_read(clean_stack, host, route):
    padding = "x" * (MAX_BODY_BYTES + 1 - len('{"incidentArmId": "", "pad": ""}') - len(INCIDENT_4711))
    raw = json.dumps({"incidentArmId": INCIDENT_4711, "pad": padding}).encode()
    assert len(raw) == MAX_BODY_BYTES + 1
    response = host.http.post(f"{host.host.url}/api/{route}", data=raw, timeout=60,
                              headers={"x-functions-key": host.host.function_key, SIGNATURE_HEADER: "x"})
    assert_error(response, 413, "PayloadTooLarge", "")
    assert not any(emulator.received for emulator in clean_stack.emulators if emulator is not clean_stack.entra)


def test_a_body_at_the_limit_is_read(host):
    raw = json.dumps({"pad": "x" * (MAX_BODY_BYTES - len('{"pad": ""}'))}).encode()
    assert len(raw) == MAX_BODY_BYTES
    assert_error(host.post(TRIGGER_ROUTES[0], raw=raw), 400, "BadRequest", "unrecognised payload")


@pytest.mark.parametrize("route", TRIGGER_ROUTES)
def test_more_entities_than_the_limit_is_413_naming_it(clean_stack, host, route):
    body = incident_with(4711, [f"198.51.100.{i % 250}" if i < 250 else f"2001:db8::{i:x}"
                                for i in range(MAX_ENTITIES + 1)])
    assert_error(host.post(route, body), 413, "PayloadTooLarge", f"more than {MAX_ENTITIES} entities")
    alert = sample("alert-trigger.json")
    alert["Entities"] = json.dumps([{"Type": "ip", "Address": f"2001:db8::{i:x}"} for i in range(MAX_ENTITIES + 1)])
    assert_error(host.post(route, alert), 413, "PayloadTooLarge", f"more than {MAX_ENTITIES} entities")
    assert not clean_stack.vt.received and not clean_stack.mde.received and not clean_stack.snow.received


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"Entities": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested too deeply"),
    (json.dumps({"Entities": "[" * 5_000 + "]" * 5_000}).encode(), "nested too deeply"),
    (json.dumps({"incidentArmId": INCIDENT_4711 + "\ud800"}).encode(), "surrogate"),
    (b'{"SystemAlertId": "a", "Entities": [{"Type": "ip", "Address": "\\udfff"}]}', "surrogate"),
    (b'{"incidentArmId": ', "not valid JSON"),
])
def test_json_python_cannot_hold_is_a_400(host, raw, fragment):
    for route in TRIGGER_ROUTES:
        response = host.post(route, raw=raw)
        assert response.status_code == 400, (route, response.text)
        assert fragment in response.json()["error"]["message"], (route, response.text)


def test_infinity_as_the_incident_number_is_no_crash(clean_stack, host):
    body = sample("incident-trigger.json")
    clean_stack.arm.seed_from_trigger(body)
    raw = json.dumps(body).replace('"incidentNumber": 4711', '"incidentNumber": Infinity').encode()
    response = host.post("sync/servicenow/outbound", raw=raw)
    assert response.status_code == 200, response.text
