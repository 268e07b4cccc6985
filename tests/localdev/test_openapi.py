"""docs/openapi.json: up to date, valid OpenAPI 2.0, importable as a custom connector, and exactly the app's routes.

The route check walks the FunctionApp's own bindings (not the generator's reading of them), so a
route, method or auth level changed in a decorator without regenerating the file fails here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import schemathesis
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.definitions import SWAGGER_20

from core.case import normalise
from localdev.openapi import EXAMPLE_TRIGGER, OUTPUT, render
from tests.fixtures import INCIDENT_4711, TRIGGER_SAMPLES, sample
from tests.infra.test_wiring import app_functions

CONNECTOR_MAX_BYTES = 1024 * 1024  # custom connector definitions must be smaller than 1 MB


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(OUTPUT.read_text())


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, route without the leading slash) -> operation."""
    return {(method.upper(), path.lstrip("/")): operation
            for path, methods in document["paths"].items() for method, operation in methods.items()}


def as_json_schema(schema: Any) -> Any:
    """Swagger 2.0's ``x-nullable`` as plain JSON Schema (a null is allowed besides the type)."""
    if isinstance(schema, list):
        return [as_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: as_json_schema(value) for key, value in schema.items()}
    if converted.pop("x-nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    return converted


def definition(document: dict[str, Any], name: str) -> jsonschema.Draft4Validator:
    """A validator for one definition, its $refs resolved within the document."""
    return jsonschema.Draft4Validator({"$ref": f"#/definitions/{name}",
                                       "definitions": as_json_schema(document["definitions"])})


def test_the_committed_file_is_what_the_generator_writes():
    assert OUTPUT.read_text() == render(), "docs/openapi.json is stale: run python -m localdev.openapi"


def test_it_is_a_valid_openapi_2_document(document):
    # The official Swagger 2.0 JSON Schema (as schemathesis ships it) and schemathesis' own loader.
    jsonschema.Draft4Validator(SWAGGER_20).validate(document)
    loaded = schemathesis.openapi.from_dict(json.loads(json.dumps(document)))
    results = list(loaded.get_all_operations())
    assert results and all(isinstance(result, Ok) for result in results), [r for r in results if not isinstance(r, Ok)]
    for schema in document["definitions"].values():
        jsonschema.Draft4Validator.check_schema(schema)


def test_a_custom_connector_can_import_it(document):
    assert document["swagger"] == "2.0"  # custom connectors import OpenAPI 2.0 only
    assert len(OUTPUT.read_bytes()) < CONNECTOR_MAX_BYTES
    ids = [operation["operationId"] for operation in operations(document).values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    # A connector uses the first security definition: the header the playbooks send.
    first = next(iter(document["securityDefinitions"].values()))
    assert (first["type"], first["in"], first["name"]) == ("apiKey", "header", "x-functions-key")
    assert {"type": "apiKey", "in": "query", "name": "code"}.items() <= \
        document["securityDefinitions"]["functionKeyQuery"].items()


def test_every_http_function_is_documented_with_its_methods_and_auth_level_and_nothing_else(document):
    app: set[tuple[str, str, bool]] = set()
    for function in app_functions():
        for binding in function.get_bindings():
            spec = binding.get_dict_repr()
            if spec.get("type") != "httpTrigger":
                continue
            level = str(getattr(spec.get("authLevel"), "value", spec.get("authLevel") or "function")).lower()
            for method in spec.get("methods") or ():
                app.add((str(getattr(method, "value", method)).upper(), spec.get("route"), level == "anonymous"))
    documented = {(method, route, operation.get("security") == [])
                  for (method, route), operation in operations(document).items()}
    assert documented == app
    assert {route for _, route, anonymous in app if anonymous} == {"health", "orchestration/approvals/{id}/{decision}",
                                                                   "response/entra/ask-user/{id}",
                                                                   "response/mde/actions/{id}", "auth/login",
                                                                   "auth/callback", "auth/logout"}


def test_every_operation_documents_its_errors_and_every_json_error_uses_the_error_model(document):
    for (method, route), operation in operations(document).items():
        statuses = {int(status) for status in operation["responses"]}
        # A success: 2xx, or, for the browser-only sign-in steps (never a connector action), the 302 onwards.
        redirect_step = route.startswith("auth/") and operation.get("x-ms-visibility") == "internal"
        assert any(200 <= s < 300 for s in statuses) or (redirect_step and 302 in statuses), (method, route)
        if operation.get("security") != []:
            assert 401 in statuses, (method, route)
        if any(p["in"] == "body" for p in operation.get("parameters", ())):
            assert {400, 413} <= statuses, (method, route)
        if route not in ("health", "health/details") and "text/html" not in operation.get("produces", ()):
            for status in statuses - {200, 201, 202}:
                assert operation["responses"][str(status)]["schema"] == {"$ref": "#/definitions/Error"}, \
                    (method, route, status)
            for status in statuses & {429, 502, 503}:
                assert "Retry-After" in operation["responses"][str(status)]["headers"], (method, route, status)


def test_every_trigger_sample_fits_the_documented_body(document):
    body = definition(document, "TriggerBody")
    for name in TRIGGER_SAMPLES:
        body.validate(sample(name))
    body.validate({"incidentArmId": INCIDENT_4711})


def test_the_examples_are_valid_and_the_pack_accepts_them(document):
    for name, schema in document["definitions"].items():
        if "example" in schema:
            definition(document, name).validate(schema["example"])
            if name != "CloseIncidentRequest":
                assert normalise(schema["example"]).incident_id == EXAMPLE_TRIGGER["object"]["id"]


def test_the_documented_incident_id_pattern_is_the_one_the_pack_applies(document):
    pattern = re.compile(document["definitions"]["IncidentArmId"]["pattern"])
    assert pattern.match(INCIDENT_4711)
    name = INCIDENT_4711.rsplit("/", 1)[0]
    for rejected in (f"{name}/x?y", f"{name}/x#y", f"{name}/..", f"{name}/a%2Fb", f"{name}/a\x85b",
                     f"{name}/" + "a" * 257):
        assert not pattern.match(rejected), rejected
        with pytest.raises(Exception, match="not a Sentinel incident ARM id"):
            normalise({"incidentArmId": rejected})
