"""core/telemetry.py: log records name their action and incident; traces reach Application Insights only when
configured, and a cold start without it imports no OpenTelemetry.

The export test runs the app in a child process (OpenTelemetry's providers are process-wide and set once)
against a loopback stand-in for the ingestion endpoint, and reads the envelopes the exporter posts to
``/v2.1/track``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import telemetry
from localdev.emulators.base import Emulator, Request, Response

ROOT = Path(__file__).resolve().parents[2]
INCIDENT = ("/subscriptions/0000/resourceGroups/soc/providers/Microsoft.OperationalInsights/workspaces/sentinel"
            "/providers/Microsoft.SecurityInsights/Incidents/6a1f0c2e-telemetry")
SLACK_SECRET = "slack-secret-path-9f2b71"


class Ingestion(Emulator):
    """Application Insights ingestion (``POST /v2.1/track``), and any other path as a plain 200 (webhook stand-in)."""

    name = "appinsights-ingestion"

    def __init__(self) -> None:
        super().__init__()
        self.route("POST", r"/v2\.1/track", self._track)
        self.route("POST", r"/.*", lambda req: Response(200, "ok"))
        self.route("GET", r"/.*", lambda req: Response(200, "ok"))

    @staticmethod
    def _track(req: Request) -> Response:
        items = len(json.loads(Ingestion.decode(req)))
        return Response(200, {"itemsReceived": items, "itemsAccepted": items, "errors": []})

    @staticmethod
    def decode(req: Request) -> bytes:
        return gzip.decompress(req.body) if req.headers.get("Content-Encoding") == "gzip" else req.body

    def envelopes(self) -> list[dict]:
        return [item for req in self.requests_to("POST", r"^/v2\.1/track$") for item in json.loads(self.decode(req))]


def run_app(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter at the project root (a cold start), without the caller's telemetry."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_cold_start_without_connection_string_imports_no_opentelemetry():
    result = run_app("""
        import json, sys
        import function_app
        from core import telemetry
        print(json.dumps({"loaded": sorted(m for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor"))),
                          "configured": telemetry.configure()}))
    """)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"loaded": [], "configured": False}


def test_action_span_and_log_lines_are_exported_to_application_insights():
    with Ingestion() as ingestion:
        slack = f"{ingestion.url}/services/T0001/B0001/{SLACK_SECRET}"
        result = run_app(f"""
            import json
            import azure.functions as func
            import requests
            import function_app
            from core import telemetry
            from opentelemetry import trace
            from opentelemetry._logs import get_logger_provider

            assert telemetry.configure() is True  # configured once at import; a second call changes nothing
            functions = {{f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}}
            body = json.dumps({{"incidentArmId": "{INCIDENT}"}}).encode()
            # No VirusTotal key is set: the action answers 500 ConfigurationError after naming its incident.
            answer = functions["ip_reputation"](func.HttpRequest("POST", "http://localhost/api/enrichment/ip-reputation",
                                                                  body=body, headers={{}}))
            assert answer.status_code == 500, answer.get_body()
            with telemetry.action_scope("orchestration_notify", "{INCIDENT}"):
                requests.post("{slack}", json={{"text": "hi"}}, timeout=10)  # a secret URL: no dependency record
                requests.get("{ingestion.url}/visible-dependency", timeout=10)
            trace.get_tracer_provider().force_flush()
            get_logger_provider().force_flush()
        """, APPLICATIONINSIGHTS_CONNECTION_STRING=(
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={ingestion.url}/;"
            f"LiveEndpoint={ingestion.url}/"),
            SLACK_WEBHOOK_URL=slack, OTEL_TRACES_SAMPLER="always_on",  # the default samples by rate
            SENTINEL_WORKSPACES=INCIDENT.split("/providers/Microsoft.SecurityInsights")[0],  # pinned to its workspace
            APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true", OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel")
        assert result.returncode == 0, result.stderr
        envelopes = ingestion.envelopes()
        exported = json.dumps([ingestion.decode(r).decode("utf-8", "replace") + r.path for r in ingestion.received
                               if not r.path.startswith(("/services/", "/visible-dependency"))])

    data = [e["data"]["baseData"] for e in envelopes]
    [span] = [d for d in data if d.get("name") == "ip_reputation"]
    assert span["properties"]["sentinel.incident.id"] == INCIDENT
    assert span["properties"]["sentinel.action"] == "ip_reputation" and span["success"] is False
    [line] = [d for d in data if "ConfigurationError" in d.get("message", "")]
    assert line["properties"]["action"] == "ip_reputation" and line["properties"]["incident_id"] == INCIDENT
    # The HTTP instrumentation works (a dependency inside the action's trace), but never shows a webhook URL.
    assert any("/visible-dependency" in json.dumps(d) for d in data)
    assert SLACK_SECRET not in exported


def test_every_log_record_in_an_action_names_it_and_its_incident(caplog):
    telemetry.configure()  # no connection string here: only the log context
    caplog.set_level(logging.INFO)
    other = logging.getLogger("urllib3.somewhere")  # any module's records, not only ours
    other.info("before")
    with telemetry.action_scope("block_ip") as scope:
        other.info("no incident yet")
        telemetry.bind_incident(INCIDENT)
        other.info("inside")
        with telemetry.action_scope("servicenow_poll_ticket", "other-incident"):
            other.info("nested")
        other.info("after nested")
        assert scope.action == "block_ip" and telemetry.current() == {"action": "block_ip", "incident_id": INCIDENT}
    other.info("after")
    seen = {r.getMessage(): (getattr(r, "action", None), getattr(r, "incident_id", None)) for r in caplog.records}
    assert seen == {
        "before": (None, None),
        "no incident yet": ("block_ip", None),
        "inside": ("block_ip", INCIDENT),
        "nested": ("servicenow_poll_ticket", "other-incident"),
        "after nested": ("block_ip", INCIDENT),
        "after": (None, None),
    }
    assert telemetry.current() == {}


@pytest.mark.parametrize("configured", [False, True])
def test_webhook_urls_are_excluded_from_http_instrumentation(configured):
    from core.settings import Settings

    env: dict[str, str] = {"OTEL_PYTHON_EXCLUDED_URLS": "healthz"} if configured else {}
    settings = Settings.from_env({"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B2/s3cr3t",
                                  "TEAMS_WEBHOOK_URL": "https://x.logic.azure.com/workflows/w/invoke?sig=abc"})
    telemetry._exclude_secret_urls(settings, env)
    for variable in ("OTEL_PYTHON_REQUESTS_EXCLUDED_URLS", "OTEL_PYTHON_URLLIB3_EXCLUDED_URLS"):
        patterns = env[variable].split(",")
        assert patterns[:-2] == (["healthz"] if configured else [])
        assert patterns[-2:] == [r"^https://hooks\.slack\.com/services/T1/B2/s3cr3t",
                                 r"^https://x\.logic\.azure\.com/workflows/w/invoke"]


def test_nothing_is_sampled_away_without_any_sampler_setting():
    """sampling_ratio=1.0: every action's span and audit line is exported (host.json sampling does not apply)."""
    with Ingestion() as ingestion:
        result = run_app("""
            import logging
            from core import telemetry
            from opentelemetry import trace
            from opentelemetry._logs import get_logger_provider

            assert telemetry.configure() is True
            log = logging.getLogger("orchestration.approvals")
            for n in range(20):
                with telemetry.action_scope(f"audit_{n}"):
                    log.warning("audit line %d", n)
            trace.get_tracer_provider().force_flush()
            get_logger_provider().force_flush()
        """, APPLICATIONINSIGHTS_CONNECTION_STRING=(
            f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={ingestion.url}/;"
            f"LiveEndpoint={ingestion.url}/"),
            APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true", OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="otel")
        assert result.returncode == 0, result.stderr
        data = [e["data"]["baseData"] for e in ingestion.envelopes()]
    assert len({d["name"] for d in data if str(d.get("name", "")).startswith("audit_")}) == 20
    assert len({d["message"] for d in data if str(d.get("message", "")).startswith("audit line")}) == 20


def test_library_chatter_is_kept_to_warning_and_the_host_exports_opentelemetry():
    result = run_app("""
        import json, logging
        import function_app
        names = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "enrichment.service")
        print(json.dumps({name: logging.getLogger(name).getEffectiveLevel() for name in names}))
    """)
    assert result.returncode == 0, result.stderr
    levels = json.loads(result.stdout)
    assert levels["azure.core.pipeline.policies.http_logging_policy"] == levels["azure.identity"] == logging.WARNING
    assert levels["enrichment.service"] == logging.WARNING  # the root default: the pack's own loggers are not raised
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    assert "samplingSettings" not in json.dumps(host), "host.json sampling does not apply under OpenTelemetry"


def test_the_success_line_digest_names_the_outcome_and_never_a_url_or_secret():
    from core.telemetry import outcome

    summary = {"incident": "/subscriptions/x/Incidents/5c1e", "worstVerdict": "malicious", "maliciousCount": 2,
               "ips": [{"ip": "203.0.113.45"}, {"ip": "198.51.100.23"}], "complete": True,
               "link": "https://www.virustotal.com/gui/ip-address/203.0.113.45", "callbackUrl": "https://x/y?sig=1",
               "skipped": [], "label": None}
    digest = outcome(summary)
    assert "worstVerdict=malicious" in digest and "maliciousCount=2" in digest and "ips=[2]" in digest
    assert "https://" not in digest and "sig=" not in digest and "skipped" not in digest
    assert outcome(["not", "a", "summary"]) == ""
