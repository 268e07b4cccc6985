"""Property tests of trigger normalisation: any payload gives a valid Case or the pack's 400 / 413.

Payloads start from the real sample trigger bodies (tests/fixtures) and are broken the ways a
Logic App, a hand-written manual run or an attacker can break them: keys dropped or re-cased,
values swapped for other JSON types, huge or unicode strings, deep nesting, thousands of entities,
and JSON text truncated or sprinkled with escapes before parsing. Whatever comes in,
``normalise`` (and, for raw bytes, ``core.api.read_json`` first) either returns a Case whose fields
are what the actions rely on, or raises ``BadRequest`` / ``PayloadTooLarge``: any other exception
would be a 500 in the Logic App's run history.

Hypothesis runs under the registered ``case-properties`` profile: derandomized (the same examples
on every run and in CI), no deadline, a bounded number of examples.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from core.api import read_json
from core.case import INCIDENT_ID_RE, SEVERITIES, Case, normalise
from core.errors import BadRequest
from tests.fixtures import TRIGGER_SAMPLES, sample

MAX_ENTITIES = 50  # small, so "many entities" crosses the limit without megabytes of payload
settings.register_profile("case-properties", max_examples=300, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.large_base_example])
PROFILE = settings.get_profile("case-properties")

# -- payload strategies ----------------------------------------------------------------------------
TRICKY_TEXT = ["", " ", "\x00", "\u202e", "\ufeff", "\x85", "\u2028", "\ud83d\ude00", "İ", "ß", "Ⅸ", "٣",
               "<script>alert(1)</script>", "${jndi:x}", "../..", "?a=b#c", "%2F", "\\", "null", "NaN", "1e999",
               "Ip", "Host", "Account", "High", "high", "HIGH "]
KEYS = ["object", "properties", "id", "name", "etag", "kind", "type", "Type", "address", "Address", "hostName",
        "accountName", "relatedEntities", "Entities", "Entity", "SystemAlertId", "incidentArmId", "IncidentArmID",
        "severity", "Severity", "incidentNumber", "title", "objectSchemaType", "additionalData", "MdatpDeviceId"]

text = st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=30),
                 st.text(st.characters(codec="utf-8"), min_size=1000, max_size=5000))  # long strings
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.one_of(st.sampled_from(KEYS), text), inner, max_size=4),
                           max_leaves=12)


def deep(value: Any, depth: int) -> Any:
    for level in range(depth):
        value = [value] if level % 2 else {"object": value}
    return value


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value that a mutation can touch."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def _parent(body: Any, path: tuple) -> tuple[Any, Any]:
    for step in path[:-1]:
        body = body[step]
    return body, path[-1]


def _set(body: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent, last = _parent(body, path)
    parent[last] = value
    return body


def _drop(body: Any, path: tuple) -> Any:
    if not path:
        return body
    parent, last = _parent(body, path)
    del parent[last]
    return body


def _recase(body: Any, path: tuple) -> Any:
    if not path or not isinstance(path[-1], str):
        return body
    parent, last = _parent(body, path)
    parent[last.swapcase()] = parent.pop(last)
    return body


def _replacement(how: str, current: Any, draw: st.DrawFn) -> Any:
    if how == "value":
        return draw(json_values)
    if how == "wrap":
        return [current]
    if how == "stringify":
        return json.dumps(current)
    if how == "nest":
        return deep(current, draw(st.integers(1, 200)))
    return draw(text)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A sample trigger body with a few of its places changed, dropped, re-cased, wrapped or blown up."""
    body = sample(draw(st.sampled_from(TRIGGER_SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(body)))
        how = draw(st.sampled_from(("drop", "recase", "value", "wrap", "stringify", "nest", "text")))
        if how == "drop":
            body = _drop(body, path)
        elif how == "recase":
            body = _recase(body, path)
        else:
            current = body
            for step in path:
                current = current[step]
            body = _set(body, path, _replacement(how, current, draw))
    return body


def many_entities(count: int) -> dict:
    """An incident trigger with ``count`` distinct IP entities (mixed in with junk that is not an entity)."""
    body = sample("incident-trigger.json")
    body["object"]["properties"]["relatedEntities"] = [
        item for i in range(count)
        for item in ({"kind": "Ip", "properties": {"address": str(ipaddress.IPv4Address(0x0B000000 + i))}}, i)]
    return body


# -- what a valid Case is ----------------------------------------------------------------------------
def assert_valid(case: Any, max_entities: int = MAX_ENTITIES) -> None:
    """The fields the actions rely on, whatever the payload was."""
    assert isinstance(case, Case)
    assert case.source in ("incident", "alert", "entity", "manual")
    if case.incident_id is not None:
        match = INCIDENT_ID_RE.match(case.incident_id)
        assert match and case.incident_name and case.workspace.subscription_id == match["sub"]
    if case.source in ("incident", "manual"):
        assert case.incident_id and case.incident_name
    assert case.severity is None or case.severity in SEVERITIES
    assert case.number is None or (isinstance(case.number, int) and not isinstance(case.number, bool))
    for value in (case.title, case.status, case.url, case.etag, case.provider_name, case.event_type, case.alert_id,
                  case.incident_name, *vars(case.workspace).values()):
        assert value is None or (isinstance(value, str) and value and value == value.strip()), value
    entities = (*case.ips, *case.hosts, *case.accounts, *case.others)
    assert len(entities) <= max_entities
    assert len({ip.address for ip in case.ips}) == len(case.ips)
    for ip in case.ips:
        assert ipaddress.ip_address(ip.address).compressed == ip.address
    assert all(isinstance(h.host_name, str) and h.host_name and h.fqdn for h in case.hosts)
    assert all(a.key for a in case.accounts)
    assert all(isinstance(raw, str) and 0 < len(raw) <= 100 for raw in case.invalid_ips)
    assert all(isinstance(o.kind, str) and o.kind and isinstance(o.label, str) for o in case.others)
    assert case.label


def note(outcome: str) -> None:
    """Count outcomes (pytest --hypothesis-show-statistics shows the mix); plain tests have no counter."""
    if currently_in_test_context():
        event(outcome)


def normalised_or_refused(body: Any, max_entities: int = MAX_ENTITIES) -> Case | BadRequest:
    """``normalise``'s answer: a valid Case, or the pack's 400/413 (PayloadTooLarge is a BadRequest)."""
    try:
        case = normalise(body, max_entities=max_entities)
    except BadRequest as refused:
        assert refused.status in (400, 413) and refused.message
        note(f"refused {refused.status}")
        return refused
    assert_valid(case, max_entities)
    note(f"Case from {case.source}")
    return case


def request(raw: bytes) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/enrichment/ip-reputation", body=raw,
                            headers={"Content-Type": "application/json"})


def through_http(raw: bytes) -> Case | BadRequest:
    """What run_action does with a body: read_json, then normalise. Strings of a Case must be
    encodable as UTF-8, since every action hashes, logs or sends them."""
    try:
        body = read_json(request(raw))
    except BadRequest as refused:
        note(f"read_json refused {refused.status}")
        return refused
    answer = normalised_or_refused(body)
    if isinstance(answer, Case):
        for value in (answer.incident_id, answer.title, *(ip.address for ip in answer.ips), *answer.invalid_ips,
                      *(h.host_name for h in answer.hosts), *(a.key for a in answer.accounts)):
            (value or "").encode("utf-8")
    return answer


# -- properties ----------------------------------------------------------------------------------------
@PROFILE
@given(mutated())
def test_mutated_samples_normalise_or_are_refused(body):
    normalised_or_refused(body)


@PROFILE
@given(json_values)
def test_any_json_value_normalises_or_is_refused(body):
    normalised_or_refused(body)


@PROFILE
@given(st.sampled_from(TRIGGER_SAMPLES), st.data())
def test_truncated_json_text_is_a_clear_400_or_a_valid_case(name, data):
    raw = json.dumps(sample(name)).encode()
    cut = data.draw(st.integers(0, len(raw)))
    answer = through_http(raw[:cut])
    if cut < len(raw.rstrip()):
        assert isinstance(answer, BadRequest)  # a JSON object cut short never parses


@PROFILE
@given(st.sampled_from(TRIGGER_SAMPLES), st.data())
def test_escapes_and_raw_bytes_in_the_json_text_never_escape_as_other_errors(name, data):
    raw = json.dumps(sample(name)).encode()
    # Somewhere inside a string (or anywhere): a unicode escape -- lone surrogates included -- or raw bytes.
    at = data.draw(st.integers(0, len(raw)))
    insert = data.draw(st.one_of(
        st.integers(0, 0xFFFF).map(lambda c: f"\\u{c:04x}".encode()),
        st.binary(min_size=1, max_size=4),
        st.sampled_from([b"\\ud800", b"\\udfff\\ud800", b"\xff", b"\xc3", b"\x00", b"Infinity", b"NaN", b"-0"])))
    through_http(raw[:at] + insert + raw[at:])


@PROFILE
@given(st.sampled_from(["incident-trigger.json", "alert-trigger.json", "entity-trigger-ip.json"]),
       st.sampled_from(["incidentNumber", "Severity", "severity", "Address", "address", "IncidentArmID"]),
       st.sampled_from([b"Infinity", b"-Infinity", b"NaN", b"1e999", b"-1e999", b"1" * 5000, b"1e-999",
                        b"123456789012345678901234567890", b"true", b"[]", b"{}", b'"\\ud800"']))
def test_numbers_json_accepts_but_python_cannot_convert_are_no_crash(name, field, literal):
    body = sample(name)
    target = body
    if "object" in body:
        target = body["object"]["properties"]
    elif "Entity" in body:
        target = body["Entity"]["properties"]
    target[field] = "__VALUE__"
    through_http(json.dumps(body).replace('"__VALUE__"', literal.decode()).encode())


@PROFILE
@given(st.integers(1, 3 * MAX_ENTITIES))
def test_entity_count_over_the_limit_is_413_and_under_it_a_case(count):
    answer = normalised_or_refused(many_entities(count))
    if count > MAX_ENTITIES:
        assert isinstance(answer, BadRequest) and answer.status == 413
        assert f"more than {MAX_ENTITIES} entities" in answer.message
    else:
        assert isinstance(answer, Case) and len(answer.ips) == count


@pytest.mark.parametrize("depth", [10, 900, 5_000, 100_000])
def test_deep_nesting_is_a_400_not_a_crash(depth):
    raw = b'{"Entities": ' + b"[" * depth + b"]" * depth + b"}"
    through_http(raw)
    through_http(b"[" * depth + b"]" * depth)
    nested_string = json.dumps({"Entities": "[" * depth + "]" * depth}).encode()
    through_http(nested_string)


def test_lone_surrogates_are_refused_at_the_door():
    raw = json.dumps({"incidentArmId": sample("entity-trigger-ip.json")["IncidentArmID"] + "\ud800"}).encode()
    answer = through_http(raw)
    assert isinstance(answer, BadRequest) and answer.status == 400
