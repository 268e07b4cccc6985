"""schemathesis fuzzes the local host from docs/openapi.json: no 5xx, no crash, answers as documented.

Every operation of the committed document is called with generated requests -- valid ones
(``positive``) and ones that break the documented schema (``negative``) -- through the real local
host against healthy emulators, so any 5xx is a product bug: 500 is an unexpected exception, and
502/503 would mean a healthy downstream was reported as failing. Each answer must also use a
documented status code and content type and match the documented schema.

Bounded and reproducible: ``MAX_EXAMPLES`` generated cases per operation plus the document's
examples and schemathesis' coverage cases, derandomized, no deadline. The counts (operations,
cases, status codes, 5xx, time) are printed in pytest's terminal summary and kept in the pytest
cache under ``fuzz/stats`` (``.pytest_cache/v/fuzz/stats``) for quoting.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from localdev.openapi import EXAMPLE_TRIGGER, OUTPUT

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 25
REQUEST_TIMEOUT = 30  # a hang fails the case instead of the whole run
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _shared_trigger_body_operations() -> list[str]:
    """Operations whose body is the plain TriggerBody, in document order."""
    document = json.loads(OUTPUT.read_text())
    return [operation["operationId"] for methods in document["paths"].values() for operation in methods.values()
            if any(p.get("schema") == {"$ref": "#/definitions/TriggerBody"} for p in operation.get("parameters", ()))]


# The coverage phase sends boundary values and, in negative mode, every documented field with a wrong
# type or missing: ~500 cases per trigger-body operation. Those operations share one normalisation
# (core/case.py), so the negative sweep of TriggerBody runs on the first of them and the others get
# its positive sweep: the file stays near a minute on two cores.
SHARED = _shared_trigger_body_operations()
CONFIG = SchemathesisConfig.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
    # Coverage also probes methods a route does not take; the local host serves the methods a Logic
    # App can send (TRACE would get http.server's 501, which says nothing about the pack).
    "phases": {"stateful": {"enabled": False},
               "coverage": {"unexpected-methods": ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]}},
    "operations": [{"include-operation-id": SHARED[1:],
                    "phases": {"coverage": {"generation": {"mode": "positive"}}}}],
})
schema = schemathesis.openapi.from_path(OUTPUT, config=CONFIG)


@dataclass
class FuzzStats:
    """What the run did, for the terminal summary and the README's counts."""

    started: float = field(default_factory=time.monotonic)
    cases: Counter = field(default_factory=Counter)           # operation -> cases sent
    statuses: Counter = field(default_factory=Counter)        # status code -> answers
    server_errors: list[str] = field(default_factory=list)    # "POST /route -> 500"
    crashes: list[str] = field(default_factory=list)          # no answer at all

    def record(self, label: str, status: int) -> None:
        self.cases[label] += 1
        self.statuses[status] += 1
        if status >= 500:
            self.server_errors.append(f"{label} -> {status}")

    def summary(self) -> dict[str, Any]:
        return {"operations": len(self.cases), "cases": sum(self.cases.values()),
                "serverErrors": len(self.server_errors), "crashes": len(self.crashes),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "seconds": round(time.monotonic() - self.started, 1), "maxExamplesPerOperation": MAX_EXAMPLES,
                "perOperation": dict(sorted(self.cases.items()))}


class _SummaryPlugin:
    def __init__(self, stats: FuzzStats) -> None:
        self.stats = stats
        self.final: dict[str, Any] | None = None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        result = self.final or self.stats.summary()
        terminalreporter.section("schemathesis fuzz of the local host")
        terminalreporter.write_line(
            f"{result['operations']} operations, {result['cases']} cases, {result['serverErrors']} responses >= 500, "
            f"{result['crashes']} crashes, "
            f"{result['seconds']} s; statuses {result['statuses']}")
        for line in self.stats.server_errors[:20]:
            terminalreporter.write_line(f"  5xx: {line}")


@pytest.fixture(scope="module")
def fuzz_stats(request: pytest.FixtureRequest):
    stats = FuzzStats()
    plugin = _SummaryPlugin(stats)
    request.config.pluginmanager.register(plugin, "fuzz-stats")
    yield stats
    plugin.final = stats.summary()
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        cache.set("fuzz/stats", plugin.final)


@pytest.fixture(scope="module")
def target(stack, host):
    """The host, with the document's example incident (and its host and user) known downstream,
    so the examples reach the real work: lookups, tickets, isolation, comments."""
    stack.reset()
    stack.arm.seed_from_trigger(EXAMPLE_TRIGGER)
    stack.mde.add_machine("0f0e0d0c0b0a09080706050403020100f0e0d0c0", "ws-fin-0042.corp.contoso.com")
    stack.graph.add_user("b1a2c3d4-e5f6-4789-8abc-def012345678", "adele.vance@contoso.com", "Adele Vance")
    yield host
    stack.reset()  # leave the emulators as clean as the fuzzing found them


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_fuzz_local_host(case, target, fuzz_stats: FuzzStats) -> None:
    # The function key goes in the header, as the Logic App sends it; anonymous routes ignore it.
    try:
        response = case.call(base_url=f"{target.host.url}/api",
                             headers={"x-functions-key": target.host.function_key}, timeout=REQUEST_TIMEOUT)
    except requests.RequestException as exc:  # a dropped connection or a hang: the host crashed or stuck
        fuzz_stats.crashes.append(f"{case.operation.label}: {type(exc).__name__}")
        raise
    fuzz_stats.record(case.operation.label, response.status_code)
    case.validate_response(response, checks=CHECKS)


def test_the_host_survived_the_fuzzing(target, fuzz_stats: FuzzStats) -> None:
    assert target.host.returncode is None, target.host.output
    assert target.get("health", key=None).status_code == 200
    assert fuzz_stats.crashes == []
