"""Health: ``GET /api/health`` (anonymous, status only) and ``GET /api/health/details`` (function key).

Why two routes: an anonymous route cannot tell a valid key from none, so whatever it answers, it answers
to everyone. It says only ``ok`` / ``degraded``, enough for a probe or the postdeploy hook; which
integrations exist and which of them are ready is for key holders (issue 14, item 9).

Readiness is per feature (:data:`FEATURES`): an integration nobody configured, or whose Key Vault reference
does not resolve, makes *its* feature not ready and nothing else. The status is ``degraded`` (503) only when
something every feature needs is broken: the state store, or a malformed shared setting. Values are never
shown, except the flags an operator must see at a glance (``DRY_RUN`` and the like, :data:`SHOWN_VALUES`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import azure.functions as func

from core.api import json_response
from core.settings import SPECS, Settings

bp = func.Blueprint()


@dataclass(frozen=True)
class Feature:
    """What a feature needs: every one of ``required``, and at least one of each group in ``any_of``."""

    required: tuple[str, ...] = ()
    any_of: tuple[tuple[str, ...], ...] = ()
    optional: tuple[str, ...] = ()  # reported with the feature; a problem there is a warning, not "not ready"


# The features a SOC turns on one by one. A setting named here and absent from core/settings.py (another
# version of the app) is ignored, so this table never breaks health.
FEATURES: dict[str, Feature] = {
    "enrichment": Feature(required=("VIRUSTOTAL_API_KEY",)),
    "sync": Feature(required=("SERVICENOW_INSTANCE_URL", "SERVICENOW_USERNAME", "SERVICENOW_PASSWORD"),
                    optional=("SERVICENOW_WEBHOOK_SECRET",)),
    "notify": Feature(any_of=(("TEAMS_WEBHOOK_URL", "SLACK_WEBHOOK_URL"),)),
    "approvals": Feature(required=("APPROVAL_SIGNING_KEY", "APPROVERS"),
                         any_of=(("APPROVAL_MAILBOX", "TEAMS_WEBHOOK_URL", "SLACK_WEBHOOK_URL"),),
                         optional=("PUBLIC_BASE_URL",)),
    "response": Feature(optional=("PROTECTED_ACCOUNTS", "PROTECTED_MACHINES", "SENTINEL_WORKSPACES")),
}
# Settings of one feature only: their problems stay inside that feature.
FEATURE_SETTINGS = frozenset(name for feature in FEATURES.values() for name in (
    *feature.required, *feature.optional, *(n for group in feature.any_of for n in group)))
# Flags whose value an operator must see (never secrets).
SHOWN_VALUES = ("DRY_RUN", "LOCAL_MODE", "APPROVAL_REQUIRE_SIGN_IN", "DISABLED_ACTIONS")
STATE_SETTINGS = ("STATE_STORAGE_CONNECTION", "STATE_TABLE_SERVICE_URI")


def setting_states(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """Each setting as ``set``, ``default``, ``missing`` or ``invalid: ...``: never its value."""
    out: dict[str, str] = {}
    for spec in SPECS:
        raw = env.get(spec.name)
        if spec.name in settings.problems:
            out[spec.name] = "invalid: " + settings.problems[spec.name]
        elif settings.values.get(spec.name) is None:
            out[spec.name] = "missing"
        elif raw is None or (raw == "" and spec.default is not None):
            out[spec.name] = "default"
        else:
            out[spec.name] = "set"
    return out


def feature_readiness(states: Mapping[str, str]) -> dict[str, dict[str, object]]:
    """``{feature: {"ready": bool, "missing": [...], "invalid": [...], "warnings": [...]}}``."""
    usable = {name for name, state in states.items() if state in ("set", "default")}
    report: dict[str, dict[str, object]] = {}
    for name, feature in FEATURES.items():
        known = [n for n in feature.required if n in states]
        missing = [n for n in known if states[n] == "missing"]
        invalid = [n for n in known if states[n].startswith("invalid")]
        for group in feature.any_of:
            group = tuple(n for n in group if n in states)
            if group and not usable & set(group):
                missing.append(" or ".join(group))
        warnings = [f"{n}: {states[n]}" for n in feature.optional if n in states and states[n].startswith("invalid")]
        report[name] = {"ready": not missing and not invalid, "missing": missing, "invalid": invalid,
                        "warnings": warnings}
    return report


def evaluate(env: Mapping[str, str] | None = None, state_check=None) -> tuple[int, dict[str, object]]:
    """The details body and its status. ``state_check`` raises ``PackError`` when the state store is unreachable."""
    from core.errors import PackError

    env = os.environ if env is None else env
    settings = Settings.from_env(env)
    states = setting_states(settings, env)
    state = "ok"
    if state_check is not None:
        try:
            state_check()
        except PackError as error:
            state = error.message
    shared_problems = {name: problem for name, problem in settings.problems.items() if name not in FEATURE_SETTINGS}
    healthy = state == "ok" and not shared_problems
    values = {name: env.get(name, "") or settings.values.get(name) for name in SHOWN_VALUES if name in states}
    body: dict[str, object] = {
        "status": "ok" if healthy else "degraded",
        "stateStore": state,
        "features": feature_readiness(states),
        "flags": {name: str(value).lower() for name, value in values.items()},
        "problems": sorted(shared_problems),
        "settings": states,
    }
    return (200 if healthy else 503), body


def _state_check() -> None:
    from core.state import get_state_store

    get_state_store().ping()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Anonymous: the status only. Probes and the postdeploy hook need no more."""
    status, body = evaluate(state_check=_state_check)
    return json_response({"status": body["status"]}, status)


@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    """With a function key: readiness per feature, flags and the state of every setting (no value)."""
    status, body = evaluate(state_check=_state_check)
    return json_response(body, status)
