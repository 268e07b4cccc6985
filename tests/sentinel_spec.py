"""Conformance checks against the official Sentinel incidents spec (Swagger 2.0, api-version 2025-09-01).

The spec lives beside the project in ``../shared/contracts/sentinel/specification/`` and may be absent
from a clone: ``SPEC_AVAILABLE`` says whether it is there, and ``requires_spec`` skips a test when not.
Where the contracts are: ``$CONTRACTS_DIR`` when set, else the first ``shared/contracts`` beside the project
or beside one of its parent folders (a git worktree under ``wt/`` finds the same copy as the main clone).
In CI (``CI=true``) a missing spec is a failure, never a skip: ``requires_spec`` then lets the test run and
the first spec look-up fails naming the folder, and ``stack_validator()`` fails the session's stack.

Request bodies are validated with jsonschema Draft 4 (Swagger 2.0's schema dialect) and the
``referencing`` library, which loads the referenced spec files by their relative paths. How the
Swagger-only parts are read:
- ``x-ms-enum`` with ``modelAsString: true`` is an extensible enum to Azure SDKs; here, as plain
  JSON Schema, it is a closed list: an unknown severity is an error (what the service rejects).
- ``readOnly`` (id, name, type, systemData, createdTimeUtc, ...) is an annotation in Draft 4, so a
  PUT body copied from a GET, read-only fields and all, passes, as it does in Azure.
- ``null`` on an optional property is treated as absent: Azure's deserialiser does so, and trigger
  bodies and GET answers carry nulls (``owner.objectId: null``). A required one set to null is missing.
- ``discriminator`` (Entity kinds) is ignored, as plain JSON Schema cannot express it.
- formats checked: ``uuid`` and ``date-time``; the rest (int32, arm-id) are annotations.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import pytest
from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

PROJECT = Path(__file__).resolve().parents[1]
_INCIDENTS = Path("sentinel", "specification", "securityinsights", "resource-manager", "Microsoft.SecurityInsights",
                  "stable", "2025-09-01", "Incidents.json")


def contracts_dir(env: dict[str, str] | None = None) -> Path:
    """``$CONTRACTS_DIR``, else the first ``shared/contracts`` holding the spec beside the project or one of
    its parents; else the documented place (``../shared/contracts``), which then does not exist."""
    env = os.environ if env is None else env
    if env.get("CONTRACTS_DIR"):
        return Path(env["CONTRACTS_DIR"]).resolve()
    for parent in PROJECT.parents:
        if (parent / "shared" / "contracts" / _INCIDENTS).is_file():
            return parent / "shared" / "contracts"
    return PROJECT.parent / "shared" / "contracts"


def in_ci(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("CI", "").strip().lower() in ("1", "true", "yes")


CONTRACT_DIR = contracts_dir() / "sentinel"
SPEC_DIR = CONTRACT_DIR / "specification"
INCIDENTS_JSON = contracts_dir() / _INCIDENTS
EXAMPLES_DIR = INCIDENTS_JSON.parent / "examples" / "incidents"
SPEC_AVAILABLE = INCIDENTS_JSON.is_file()
MISSING = (f"Sentinel spec not found under {CONTRACT_DIR} (set CONTRACTS_DIR to the folder holding "
           "sentinel/specification/...)")
# Outside CI a clone without ../shared skips the conformance tests; in CI they run and fail on the missing spec.
requires_spec = pytest.mark.skipif(not SPEC_AVAILABLE and not in_ci(), reason=MISSING)

FORMATS = FormatChecker(())


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(uuid.UUID(value))


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(datetime.fromisoformat(value))


# Keys of a Swagger non-body parameter that are JSON Schema validation keywords.
_PARAMETER_SCHEMA_KEYS = ("type", "format", "pattern", "minLength", "maxLength", "minimum", "maximum", "enum")


@dataclass(frozen=True)
class Operation:
    """One operation of the spec, with its parameters resolved."""

    operation_id: str
    method: str
    template: str
    pattern: re.Pattern
    parameters: tuple[dict, ...]
    body_schema_uri: str | None  # absolute $ref of the body parameter's schema
    body_name: str | None
    body_required: bool
    uri: str  # absolute URI of the operation object, for its response schemas


@cache
def _retrieve(uri: str) -> Resource:
    """Load a referenced spec file; only files under the spec directory are served."""
    path = Path(url2pathname(urlsplit(uri).path)).resolve()
    if not path.is_relative_to(SPEC_DIR.resolve()):
        raise LookupError(f"{uri} is outside the Sentinel spec")
    return Resource.from_contents(json.loads(path.read_text(encoding="utf-8")), default_specification=DRAFT4)


def _token(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")


@cache
def _spec() -> tuple[Registry, tuple[Operation, ...]]:
    if not SPEC_AVAILABLE:
        raise RuntimeError(MISSING + (": CI=true, so conformance checks fail instead of skipping" if in_ci() else ""))
    base = INCIDENTS_JSON.as_uri()
    registry: Registry = Registry(retrieve=_retrieve).with_resource(base, _retrieve(base))
    resolver = registry.resolver(base_uri=base)
    document = registry.contents(base)
    operations = []
    for template, item in document["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$",
                             re.IGNORECASE)
        for method, op in item.items():
            if method == "parameters":
                continue
            op_uri = f"{base}#/paths/{_token(template)}/{method}"
            parameters, body_uri, body_name, body_required = [], None, None, False
            for index, parameter in enumerate(op.get("parameters", ())):
                uri = urljoin(base, parameter["$ref"]) if "$ref" in parameter else f"{op_uri}/parameters/{index}"
                parameter = resolver.lookup(uri).contents
                if parameter["in"] == "body":
                    body_uri, body_name, body_required = uri + "/schema", parameter["name"], parameter["required"]
                else:
                    parameters.append(parameter)
            operations.append(Operation(op["operationId"], method.upper(), template, pattern, tuple(parameters),
                                        body_uri, body_name, body_required, op_uri))
    return registry, tuple(operations)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _schema_problems(schema_uri: str, instance: Any, label: str) -> list[str]:
    registry, _ = _spec()
    validator = Draft4Validator({"$ref": schema_uri}, registry=registry, format_checker=FORMATS)
    problems = []
    for error in sorted(validator.iter_errors(_without_nulls(instance)), key=lambda e: list(map(str, e.path))):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"{label}{where}: {error.message}")
    return problems


def _parameter_problems(parameter: dict, raw: str) -> list[str]:
    schema = {key: parameter[key] for key in _PARAMETER_SCHEMA_KEYS if key in parameter}
    value: Any = raw
    if schema.get("type") in ("integer", "number", "boolean"):
        try:
            value = json.loads(raw)
        except ValueError:
            return [f"{parameter['in']} parameter '{parameter['name']}': '{raw}' is not of type {schema['type']}"]
    validator = Draft4Validator(schema, format_checker=FORMATS)
    return [f"{parameter['in']} parameter '{parameter['name']}': {error.message}"
            for error in validator.iter_errors(value)]


def operations() -> tuple[Operation, ...]:
    return _spec()[1]


def match_operation(method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """The spec operation serving ``method path`` (case-insensitive), with its path parameters."""
    for operation in operations():
        match = operation.pattern.match(path.rstrip("/"))
        if match and operation.method == method.upper():
            return operation, match.groupdict()
    return None


def validate_request(method: str, path: str, query: dict[str, str], body: Any) -> list[str]:
    """Problems the spec finds with a request ([] when it conforms): path, parameters and body."""
    found = match_operation(method, path)
    if found is None:
        return [f"the spec has no operation for {method.upper()} {path}"]
    operation, path_values = found
    problems = []
    for parameter in operation.parameters:
        name, where = parameter["name"], parameter["in"]
        raw = path_values.get(name) if where == "path" else query.get(name) if where == "query" else None
        if where not in ("path", "query"):
            continue  # header parameters: Incidents.json declares none
        if raw is None:
            if parameter.get("required"):
                problems.append(f"{where} parameter '{name}' is required")
            continue
        problems += _parameter_problems(parameter, raw)
    if operation.body_schema_uri:
        if body is None:
            if operation.body_required:
                problems.append(f"body parameter '{operation.body_name}' is required")
        else:
            problems += _schema_problems(operation.body_schema_uri, body, operation.body_name or "body")
    return problems


def validate_response(operation_id: str, status: int, body: Any) -> list[str]:
    """Problems the spec finds with a response body for ``operation_id`` and ``status``."""
    registry, ops = _spec()
    operation = next((op for op in ops if op.operation_id == operation_id), None)
    if operation is None:
        return [f"the spec has no operation '{operation_id}'"]
    responses = registry.resolver().lookup(operation.uri).contents["responses"]
    key = str(status) if str(status) in responses else "default" if status >= 400 else None
    if key is None or key not in responses:
        return [f"{operation_id} does not document status {status}"]
    if "schema" not in responses[key]:
        return [] if body in (None, b"", "") else [f"{operation_id} {status} has no body in the spec"]
    return _schema_problems(f"{operation.uri}/responses/{key}/schema", body, "response")


def example(name: str) -> dict:
    """An x-ms-examples file under examples/incidents/, e.g. ``example("comments/CreateIncidentComment.json")``."""
    return json.loads((EXAMPLES_DIR / name).read_text(encoding="utf-8"))


def operation_examples() -> list[tuple[Operation, str, dict]]:
    """Every (operation, example title, example) the spec's x-ms-examples name; [] without the spec outside CI
    (in CI the look-up fails, naming the missing folder)."""
    if not SPEC_AVAILABLE and not in_ci():
        return []
    registry, ops = _spec()
    found = []
    for operation in ops:
        examples = registry.resolver().lookup(operation.uri).contents.get("x-ms-examples", {})
        for title, ref in examples.items():
            found.append((operation, title, json.loads((INCIDENTS_JSON.parent / ref["$ref"]).read_text("utf-8"))))
    return found


def example_request(operation: Operation, example_: dict) -> tuple[str, dict[str, str], Any]:
    """The (path, query, body) an x-ms-example describes for ``operation``."""
    parameters = example_["parameters"]
    path = re.sub(r"\{(\w+)\}", lambda m: str(parameters[m[1]]), operation.template)
    query = {p["name"]: str(parameters[p["name"]]) for p in operation.parameters
             if p["in"] == "query" and p["name"] in parameters}
    return path, query, parameters.get(operation.body_name) if operation.body_name else None


def stack_validator():
    """The request validator for an emulator: None without the spec (the emulator still runs), except in CI,
    where a missing spec fails whoever asks."""
    if SPEC_AVAILABLE:
        return validate_request
    if in_ci():
        pytest.fail(MISSING + ": CI=true, so conformance checks fail instead of skipping", pytrace=False)
    return None


# What the emulator takes as ``validator=``: None when the spec is absent, so the emulator still runs.
REQUEST_VALIDATOR = validate_request if SPEC_AVAILABLE else None
