"""Observability of actions: which incident and action a log line is about, and traces to Application Insights.

- Every log record written while an action runs, by any module (ours, azure-identity, urllib3...), carries
  ``action`` and ``incident_id`` attributes: one log-record factory stamps them from a context variable that
  ``action_scope`` sets. The OpenTelemetry log handler exports such attributes as custom dimensions; the
  local host prints them.
- With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, ``configure()`` calls
  ``azure.monitor.opentelemetry.configure_azure_monitor()`` once and every action runs in a span named after
  it, with the incident's ids as attributes. The distro (OpenTelemetry and its instrumentations, about a
  second of imports) is imported only then: a cold start without the setting pays nothing for it.
- Outbound calls to URLs that are themselves secrets (the Slack and Teams webhooks) are excluded from the
  HTTP instrumentations, so a dependency record never carries such a URL to Application Insights.
- Logs say what the pack did, not what its libraries did: azure-core's per-request HTTP logging and
  azure-identity's token chatter (about 95% of the INFO lines of a run) are kept to WARNING (:data:`QUIET`).
- Nothing is sampled (``sampling_ratio=1.0``): an audit line must never be dropped. host.json's
  ``samplingSettings`` do not apply once the host runs with ``telemetryMode: OpenTelemetry`` (host.json), which
  is what lets the host's request telemetry and these spans and logs share one trace.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import urlsplit

from core.settings import Settings

log = logging.getLogger(__name__)

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
TRACER_NAME = "sentinel-playbooks"
# Library loggers kept to WARNING: per-request HTTP logging (azure-core, httpx under msgraph-sdk), token
# acquisition, the exporter's own transmissions.
QUIET = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "azure.monitor.opentelemetry.exporter",
         "msal", "httpx")
SAMPLING_RATIO = 1.0
# Settings whose value is a URL that is itself the credential (core/settings.py marks them secret).
SECRET_URL_SETTINGS = ("SLACK_WEBHOOK_URL", "TEAMS_WEBHOOK_URL")
# The OpenTelemetry HTTP client instrumentations the distro enables, by their excluded-URLs variable.
_EXCLUDED_URL_VARIABLES = ("OTEL_PYTHON_REQUESTS_EXCLUDED_URLS", "OTEL_PYTHON_URLLIB3_EXCLUDED_URLS",
                           "OTEL_PYTHON_URLLIB_EXCLUDED_URLS")

F = TypeVar("F", bound=Callable[..., Any])
_scope: ContextVar[ActionScope | None] = ContextVar("sentinel_playbooks_action", default=None)
_lock = threading.Lock()
_factory_installed = False
_tracer: Any = None  # an OpenTelemetry Tracer once Application Insights is configured


def quiet_libraries() -> None:
    """Keep the libraries' INFO chatter out of the logs (their warnings and errors still show)."""
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def _install_record_factory() -> None:
    """Stamp the current action's fields on every log record, whichever logger makes it."""
    global _factory_installed
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scope = _scope.get()
        if scope is not None:  # outside an action nothing is added: a None attribute would be exported as noise
            record.__dict__.update(scope.fields)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def _exclude_secret_urls(settings: Settings, env: MutableMapping[str, str]) -> None:
    """Keep webhook URLs (the URL is the credential) out of the HTTP dependency spans."""
    patterns = []
    for name in SECRET_URL_SETTINGS:
        url = str(settings.values.get(name) or "")
        if url:
            parts = urlsplit(url)
            patterns.append("^" + re.escape(f"{parts.scheme}://{parts.netloc}{parts.path}"))
    if not patterns:
        return
    for variable in _EXCLUDED_URL_VARIABLES:
        current = env.get(variable) or env.get("OTEL_PYTHON_EXCLUDED_URLS", "")
        env[variable] = ",".join(p for p in (current, *patterns) if p)


def configure() -> bool:
    """Install the log context and, when the connection string is set, Application Insights. Idempotent.

    Returns whether traces are exported. A failure to configure the exporter is logged, never raised:
    telemetry must not take the actions down.
    """
    global _tracer
    with _lock:
        if not _factory_installed:
            _install_record_factory()
            quiet_libraries()
        settings = Settings.from_env()  # not the cached settings: configure() runs at import
        if _tracer is not None or not settings.values.get(CONNECTION_STRING):
            return _tracer is not None
        try:
            _exclude_secret_urls(settings, os.environ)  # read by the instrumentations when imported below
            from azure.monitor.opentelemetry import configure_azure_monitor
            from opentelemetry import trace

            # Connection string (and Entra auth string) from the environment; every span and log kept.
            configure_azure_monitor(sampling_ratio=SAMPLING_RATIO)
            _tracer = trace.get_tracer(TRACER_NAME)
        except Exception:  # any failure here must leave the actions running
            log.exception("Application Insights could not be configured; continuing without traces")
            return False
        return True


class ActionScope:
    """The running action: ``incident(...)`` adds the incident to its log records and span once known."""

    def __init__(self, action: str, span: Any = None) -> None:
        self.fields = {"action": action}
        self.span = span
        self.number: str | None = None  # the incident number analysts know it by, once a service names it

    @property
    def action(self) -> str:
        return self.fields["action"]

    def incident(self, incident_id: str | None, number: int | str | None = None) -> None:
        if not incident_id:
            return
        self.fields["incident_id"] = incident_id
        if number is not None:
            self.number = str(number)
        if self.span is not None:
            self.span.set_attribute("sentinel.incident.id", incident_id)
            self.span.set_attribute("sentinel.incident.name", incident_id.rsplit("/", 1)[-1])
            if number is not None:
                self.span.set_attribute("sentinel.incident.number", str(number))

    def status(self, status: int) -> None:
        """The HTTP status the action answers with; a 5xx marks the span as failed."""
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))


@contextmanager
def action_scope(action: str, incident_id: str | None = None) -> Iterator[ActionScope]:
    """Run an action with its name (and, once known, its incident) on every log record and in a span.

    Scopes nest: a run over several incidents (the poll timer) opens one per incident inside its own.
    """
    scope = ActionScope(action)
    token = _scope.set(scope)
    try:
        if _tracer is None:
            scope.incident(incident_id)
            yield scope
        else:
            with _tracer.start_as_current_span(action, attributes={"sentinel.action": action}) as span:
                scope.span = span
                scope.incident(incident_id)
                yield scope
    finally:
        _scope.reset(token)


def traced(action: str) -> Callable[[F], F]:
    """Decorate a function that is not a ``core.api`` action (timer, queue, a page) to run in ``action_scope``."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with action_scope(action) as scope:
                result = function(*args, **kwargs)
                if isinstance(getattr(result, "status_code", None), int):
                    scope.status(result.status_code)
                return result

        return run  # type: ignore[return-value]

    return decorate


_NOT_IN_OUTCOME = re.compile(r"url|link|uri|key|token|secret|password|signature|callback", re.I)


def outcome(summary: Any, limit: int = 8) -> str:
    """A short ``key=value`` digest of an action's JSON summary for its success log line: scalar fields and the
    length of lists (verdict counts, ticket, targets, decision), never a field named like a URL or a secret."""
    if not isinstance(summary, dict):
        return ""
    parts = []
    for key, value in summary.items():
        if _NOT_IN_OUTCOME.search(str(key)) or value is None or value == [] or value == {}:
            continue
        if isinstance(value, bool | int | float):
            parts.append(f"{key}={value}")
        elif isinstance(value, str) and len(value) <= 60:
            parts.append(f"{key}={value}")
        elif isinstance(value, list | tuple):
            parts.append(f"{key}=[{len(value)}]")
        if len(parts) == limit:
            break
    return " ".join(parts)


def bind_incident(incident_id: str | None, number: int | str | None = None) -> None:
    """Name the incident of the running action once a service finds it (no-op outside an action)."""
    scope = _scope.get()
    if scope is not None:
        scope.incident(incident_id, number)


def current() -> dict[str, str]:
    """The fields of the running action (empty outside one)."""
    scope = _scope.get()
    return dict(scope.fields) if scope else {}


__all__ = ["ActionScope", "action_scope", "bind_incident", "configure", "current", "outcome", "traced"]
