"""Every route needs the function key, except health and the signed approval links; nothing runs without it.

The routes come from the real FunctionApp (``app.get_functions()``), so a route added later is covered
without touching this file, and a new anonymous route fails the test until it is listed here with a reason.
Each refused call must leave no trace downstream: no emulator receives anything.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from typing import Any
from urllib.parse import quote

import pytest
import requests

from localdev.stack import SNOW_WEBHOOK_SECRET
from tests.fixtures import sample
from tests.infra.test_wiring import app_functions

pytestmark = pytest.mark.e2e

# Routes a caller without a function key must reach, each with the credential it checks instead.
ANONYMOUS = {
    "health": "liveness for probes; answers no secret (tests/core/test_health.py)",
    "orchestration/approvals/{id}/{decision}": "approvers hold no function key: the HMAC-signed link and the "
                                               "approver's Entra ID sign-in are the credentials (403 without a "
                                               "valid signature)",
    "response/entra/ask-user/{id}": "the user holds no function key: the HMAC-signed link and that user's Entra ID "
                                    "sign-in are the credentials (403 without a valid signature)",
    "response/mde/actions/{id}": "Logic Apps poll a 202 Location without the action's headers: the URL's HMAC "
                                 "signature, bound to the operation and its expiry, is the credential (403 without "
                                 "it; tests/reliability/test_attacks_response.py)",
    "auth/login": "whoever is not signed in yet starts the in-app sign-in here; it only redirects to Entra ID and "
                  "back to one of the app's own /api/ paths (tests/core/test_signin.py)",
    "auth/callback": "Entra ID sends the browser back here: the state must match the signed flow cookie of the "
                     "browser that started, once; the code is redeemed with PKCE and the ID token verified",
    "auth/logout": "only clears the caller's own session cookie",
}
WRONG_KEY = "fk-" + "0" * 16


@cache
def http_functions() -> list[tuple[str, str, str]]:
    """(route, method, auth level) of every HTTP function of the app."""
    found = []
    for fn in app_functions():
        trigger = fn.get_trigger()
        if trigger.type != "httpTrigger":
            continue
        methods = [str(getattr(m, "value", m)).upper() for m in trigger.methods or ()] or ["GET", "POST", "PUT",
                                                                                          "PATCH", "DELETE"]
        level = str(getattr(trigger.auth_level, "value", trigger.auth_level) or "function").lower()
        found += [(trigger.route or fn.get_function_name(), method, level) for method in methods]
    return sorted(found)


def protected() -> list[tuple[str, str]]:
    return [(route, method) for route, method, level in http_functions() if level != "anonymous"]


def concrete(route: str) -> str:
    """The route with every ``{parameter}`` filled in (a 32-hex id matches any parameter here)."""
    return re.sub(r"\{[^}]+\}", "0" * 32, route)


def attempts(key: str) -> dict[str, dict[str, Any]]:
    """How a caller can get the key wrong: absent, wrong (in both accepted places), or the right key misplaced."""
    return {
        "no key": {},
        "wrong key in x-functions-key": {"headers": {"x-functions-key": WRONG_KEY}},
        "wrong key as ?code=": {"params": {"code": WRONG_KEY}},
        "empty key": {"headers": {"x-functions-key": ""}, "params": {"code": ""}},
        "key as a bearer token": {"headers": {"Authorization": f"Bearer {key}"}},
        "key as basic auth": {"headers": {"Authorization": "Basic " + base64.b64encode(f"x:{key}".encode()).decode()}},
        "key in header 'code'": {"headers": {"code": key}},
        "key in header 'x-api-key'": {"headers": {"x-api-key": key}},
        "key as ?x-functions-key=": {"params": {"x-functions-key": key}},
        "key as ?Code= (other case)": {"params": {"Code": key}},
        "key as a cookie": {"headers": {"Cookie": f"code={key}"}},
        "key in the body": {"body": {"code": key, "x-functions-key": key}},
    }


def received(stack) -> dict[str, int]:
    return {emulator.name: len(emulator.received) for emulator in stack.emulators if emulator.received}


def send(host, method: str, route: str, *, headers: dict | None = None, params: dict | None = None,
         body: Any = None, data: bytes | None = None) -> requests.Response:
    """One raw call: no key unless the attempt puts one somewhere (never through the client's defaults)."""
    payload = data if data is not None else json.dumps(body if body is not None else sample("incident-trigger.json"))
    return requests.request(method, f"{host.host.url}/api/{route}", params=params, timeout=30,
                            headers={"Content-Type": "application/json", **(headers or {})},
                            data=payload if method in ("POST", "PUT", "PATCH", "DELETE") else None)


def test_only_the_listed_routes_are_anonymous():
    anonymous = {route for route, _, level in http_functions() if level == "anonymous"}
    assert anonymous == set(ANONYMOUS), f"anonymous routes changed: {sorted(anonymous ^ set(ANONYMOUS))}"
    assert len(protected()) >= 15  # the README's table: 13 POST routes, 2 GET, approvals POST and DELETE


def test_every_protected_route_refuses_missing_wrong_and_misplaced_keys(clean_stack, host):
    clean_stack.arm.seed_from_trigger(sample("incident-trigger.json"))  # a call that got through would act on it
    refused = []
    for route, method in protected():
        for what, attempt in attempts(host.host.function_key).items():
            response = send(host, method, concrete(route), **attempt)
            if response.status_code != 401 or response.content:
                refused.append(f"{method} {route} with {what}: {response.status_code} {response.text[:80]}")
    assert not refused, "\n".join(refused)
    assert received(clean_stack) == {}, "a refused call reached a downstream API"
    # The same calls with the key where it belongs do get through (the 401s above are about the key).
    assert send(host, "GET", "response/blocklist", headers={"x-functions-key": host.host.function_key}).ok
    assert send(host, "GET", "response/blocklist", params={"code": host.host.function_key}).ok


def test_timer_and_queue_functions_cannot_be_fired_with_the_function_key(clean_stack, host):
    """``POST /admin/functions/<name>`` runs any non-HTTP function: it takes the master key only."""
    names = [fn.get_function_name() for fn in app_functions() if fn.get_trigger().type != "httpTrigger"]
    assert names, "the app has timer and queue functions"
    for name in names:
        for key in (None, WRONG_KEY, host.host.function_key):
            headers = {"x-functions-key": key} if key is not None else {}
            response = requests.post(f"{host.host.url}/admin/functions/{name}", json={"input": ""}, headers=headers,
                                     timeout=30)
            assert response.status_code == 401, (name, key and key[:3], response.status_code)
    assert received(clean_stack) == {}


def test_approval_links_without_a_valid_signature_are_refused(clean_stack, host):
    link = "orchestration/approvals/" + "0" * 32 + "/Block"
    queries = [
        {},
        {"approver": "alice@contoso.com", "expires": "9999999999"},
        {"approver": "alice@contoso.com", "expires": "9999999999", "sig": ""},
        {"approver": "alice@contoso.com", "expires": "9999999999", "sig": "A" * 43},
        {"approver": "alice@contoso.com", "expires": "9999999999", "sig": "A" * 43, "code": host.host.function_key},
    ]
    for query in queries:
        for method in ("GET", "POST"):
            response = send(host, method, link, params=query, data=b"confirm=Block",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert response.status_code == 403, (method, query, response.status_code)
            assert "Recorded" not in response.text
    assert received(clean_stack) == {}


# -- the ServiceNow push: function key AND signature (tests/sync/test_functions.py covers a bad or missing
# signature with the key, and a valid signature without any key) ------------------------------------------
def signed(body: bytes, secret: str = SNOW_WEBHOOK_SECRET) -> str:
    from sync.webhook import sign

    return sign(body, secret)


def test_servicenow_push_needs_the_key_even_when_signed(clean_stack, host):
    from sync.webhook import SIGNATURE_HEADER

    body = json.dumps({"sys_id": "a" * 32, "sys_mod_count": "3"}).encode()
    for what, attempt in attempts(host.host.function_key).items():
        headers = {**attempt.get("headers", {}), SIGNATURE_HEADER: signed(body)}
        response = send(host, "POST", "sync/servicenow/inbound", headers=headers, params=attempt.get("params"),
                        data=body)
        assert response.status_code == 401 and response.content == b"", what
    assert received(clean_stack) == {}


def test_servicenow_push_needs_a_signature_of_this_body_in_its_header(clean_stack, host):
    from sync.webhook import SIGNATURE_HEADER

    key = {"x-functions-key": host.host.function_key}
    body = json.dumps({"sys_id": "a" * 32, "sys_mod_count": "3"}).encode()
    other = json.dumps({"sys_id": "b" * 32, "sys_mod_count": "3"}).encode()
    cases = {
        "signature of another body (replayed)": {"headers": {**key, SIGNATURE_HEADER: signed(other)}},
        "signature as a query parameter": {"headers": key, "params": {"signature": signed(body)}},
        "signature in another header": {"headers": {**key, "X-Signature": signed(body)}},
        "signature under the function key as secret": {"headers": {**key, SIGNATURE_HEADER: signed(
            body, host.host.function_key)}},
        "signature url-quoted": {"headers": {**key, SIGNATURE_HEADER: quote(signed(body), safe="")}},
    }
    for what, attempt in cases.items():
        response = send(host, "POST", "sync/servicenow/inbound", data=body, **attempt)
        assert response.status_code == 401, (what, response.status_code, response.text)
        assert response.json()["error"]["code"] in ("SignatureMismatch", "SignatureMissing"), what
        assert SNOW_WEBHOOK_SECRET not in response.text
    assert received(clean_stack) == {}
