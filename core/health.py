"""Health: ``GET /api/health`` (anonymous, status only) and ``GET /api/health/details`` (function key).

Why two routes: an anonymous route cannot tell a valid key from none, so whatever it answers, it answers
to everyone. It says only ``ok`` / ``degraded``, enough for a probe or the postdeploy hook; which
integrations exist and which of them are ready is for key holders (issue 14, item 9).

Readiness is per feature (:data:`FEATURES`): an integration nobody configured, or whose Key Vault reference
does not resolve, makes *its* feature not ready and nothing else. The status is ``degraded`` (503) only when
something every feature needs is broken: the state store, or a malformed shared setting. Values are never
shown, except the flags an operator must see at a glance (``DRY_RUN`` and the like, :data:`SHOWN_VALUES`).

Beyond settings (``/api/health/details`` only, never the anonymous route):
- **probes**: an area registers a readiness check of its own (``register_probe``; the ServiceNow sync registers
  ``sync.probe.readiness``, which finds the ACLs ServiceNow hides behind a 200) and the details call it with
  the process's Context, side by side, once the feature's settings are ready. A probe caches its own answer; a
  probe that raises is reported as such, never as a 500. Core imports no area: the registry is how health
  reaches one.
- **workspace pinning**: ``SENTINEL_WORKSPACES`` empty outside ``LOCAL_MODE`` refuses every action (core/
  workspace.py), so every feature says so and is not ready.
- **sign-in**: approvals (with ``APPROVAL_REQUIRE_SIGN_IN``) and the user's "Was this you?" need a person to
  sign in; they list the settings the configured ``SIGN_IN_MODE`` needs (:data:`SIGN_IN_NEEDS`).
- **the tenant's domains**: with ``INTERNAL_DOMAINS_FROM_GRAPH`` the enrichment reads the tenant's verified
  domains through Graph ``GET /v1.0/domains`` (Domain.Read.All). Health makes that call too (at most every ten
  minutes) and says whether it is readable; refused, every domain and URL is skipped (never sent), so it is a
  warning, not "not ready": IPs and hashes are still looked up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from core.api import json_response
from core.settings import SPECS, Settings

log = logging.getLogger(__name__)
bp = func.Blueprint()

Probe = Callable[[Any], Mapping[str, Any]]  # Context -> {"ready", "checks", "problems", "warnings"}
_PROBES: dict[str, Probe] = {}


@dataclass(frozen=True)
class Feature:
    """What a feature needs: every one of ``required``, and at least one of each group in ``any_of``."""

    required: tuple[str, ...] = ()
    any_of: tuple[tuple[str, ...], ...] = ()
    optional: tuple[str, ...] = ()  # reported with the feature; a problem there is a warning, not "not ready"
    sign_in: str = ""  # "always" | "if-required" (APPROVAL_REQUIRE_SIGN_IN): a person signs in to decide


# The features a SOC turns on one by one. A setting named here and absent from core/settings.py (another
# version of the app) is ignored, so this table never breaks health.
FEATURES: dict[str, Feature] = {
    "enrichment": Feature(required=("VIRUSTOTAL_API_KEY",)),
    "sync": Feature(required=("SERVICENOW_INSTANCE_URL", "SERVICENOW_USERNAME", "SERVICENOW_PASSWORD"),
                    optional=("SERVICENOW_WEBHOOK_SECRET",)),
    "notify": Feature(any_of=(("TEAMS_WEBHOOK_URL", "SLACK_WEBHOOK_URL"),)),
    "approvals": Feature(required=("APPROVAL_SIGNING_KEY", "APPROVERS"),
                         any_of=(("APPROVAL_MAILBOX", "TEAMS_WEBHOOK_URL", "SLACK_WEBHOOK_URL"),),
                         optional=("PUBLIC_BASE_URL",), sign_in="if-required"),
    "ask-user": Feature(required=("APPROVAL_SIGNING_KEY", "APPROVAL_MAILBOX"), optional=("PUBLIC_BASE_URL",),
                        sign_in="always"),
    "response": Feature(optional=("PROTECTED_ACCOUNTS", "PROTECTED_MACHINES", "SENTINEL_WORKSPACES")),
}
# What each SIGN_IN_MODE needs (core/principal.py, core/signin.py): settings, and for easyauth the platform's
# own WEBSITE_AUTH_ENABLED (App Service sets it when App Service Authentication runs in front of the app).
SIGN_IN_NEEDS: dict[str, tuple[str, ...]] = {"app": ("SIGN_IN_CLIENT_ID", "SIGN_IN_AUTHORITY"), "easyauth": ()}
SIGN_IN_SETTINGS = ("SIGN_IN_MODE", "SIGN_IN_CLIENT_ID", "SIGN_IN_AUTHORITY", "SIGN_IN_MFA_AUTH_CONTEXT")
WORKSPACES = "SENTINEL_WORKSPACES"
# Settings of one feature only: their problems stay inside that feature.
FEATURE_SETTINGS = frozenset(name for feature in FEATURES.values() for name in (
    *feature.required, *feature.optional, *(n for group in feature.any_of for n in group))) | set(SIGN_IN_SETTINGS)
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


def feature_readiness(states: Mapping[str, str], env: Mapping[str, str] | None = None,
                      settings: Settings | None = None) -> dict[str, dict[str, object]]:
    """``{feature: {"ready": bool, "missing": [...], "invalid": [...], "warnings": [...]}}`` (with ``signIn`` for
    the features where a person signs in). ``env``/``settings`` add the rules between settings: workspace
    pinning and sign-in."""
    env = {} if env is None else env
    usable = {name for name, state in states.items() if state in ("set", "default")}
    unpinned = _unpinned(states, settings) if settings is not None else ""
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
        entry: dict[str, object] = {}
        if unpinned:
            missing.append(f"{WORKSPACES} ({unpinned})")
        if settings is not None and (feature.sign_in == "always" or (
                feature.sign_in == "if-required" and settings.values.get("APPROVAL_REQUIRE_SIGN_IN") is not False)):
            sign_in = _sign_in(states, env, settings, ask_user=name == "ask-user")
            missing += sign_in.pop("missing")
            invalid += sign_in.pop("invalid")
            warnings += sign_in.pop("warnings")
            entry["signIn"] = sign_in
        report[name] = {"ready": not missing and not invalid, "missing": missing, "invalid": invalid,
                        "warnings": warnings, **entry}
    return report


def _unpinned(states: Mapping[str, str], settings: Settings) -> str:
    """Why no action can run for want of ``SENTINEL_WORKSPACES`` (empty outside LOCAL_MODE), or ""."""
    if WORKSPACES not in states or settings.values.get("LOCAL_MODE") or settings.values.get(WORKSPACES):
        return ""
    return "empty outside LOCAL_MODE: every action is refused with 403 until it names the Sentinel workspace(s)"


def _sign_in(states: Mapping[str, str], env: Mapping[str, str], settings: Settings, *, ask_user: bool
             ) -> dict[str, Any]:
    """What the configured sign-in needs, and what of it is missing: ``{"mode", "needs", "missing", "invalid",
    "warnings"}`` (the last three are merged into the feature)."""
    mode = str(settings.values.get("SIGN_IN_MODE") or "").strip().lower()
    if mode not in SIGN_IN_NEEDS:
        return {"mode": None, "needs": ["SIGN_IN_MODE"], "missing": [], "invalid": ["SIGN_IN_MODE"], "warnings": []}
    needs = [n for n in SIGN_IN_NEEDS[mode] if n in states]
    missing = [n for n in needs if states[n] == "missing"]
    invalid = [n for n in needs if states[n].startswith("invalid")]
    warnings: list[str] = []
    if mode == "app":
        key = settings.values.get("APPROVAL_SIGNING_KEY")
        if key is not None and len(str(key)) < 32:
            invalid.append("APPROVAL_SIGNING_KEY (the in-app sign-in needs at least 32 characters)")
        if ask_user:
            needs.append("SIGN_IN_MFA_AUTH_CONTEXT")
            if not settings.values.get("SIGN_IN_MFA_AUTH_CONTEXT"):
                warnings.append("SIGN_IN_MFA_AUTH_CONTEXT: not set, so \"Yes, it was me\" cannot count in app mode "
                                "(docs/deploy.md, sign-in)")
    else:
        needs.append("WEBSITE_AUTH_ENABLED")
        if str(env.get("WEBSITE_AUTH_ENABLED", "")).strip().lower() != "true":
            missing.append("WEBSITE_AUTH_ENABLED=True (App Service Authentication in front of the app)")
    return {"mode": mode, "needs": needs, "missing": missing, "invalid": invalid, "warnings": warnings}


def register_probe(feature: str, probe: Probe) -> None:
    """An area's readiness check beyond its settings, called with the process's Context by the details route
    once the feature's settings are ready (the area caches its own answer; see the module doc)."""
    _PROBES[feature] = probe


def run_probes(report: dict[str, dict[str, object]], probes: Mapping[str, Callable[[], Mapping[str, Any]]]) -> None:
    """Run the probes of ready features side by side and fold their answers into ``report``; never raises."""
    from core.concurrency import run_all

    wanted = [(name, probe) for name, probe in probes.items() if name in report and report[name]["ready"]]
    answers = run_all(*(lambda probe=probe: _safely(probe) for _, probe in wanted))
    for (name, _), answer in zip(wanted, answers, strict=True):
        entry = report[name]
        warnings = [str(w) for w in entry.get("warnings") or ()]  # type: ignore[attr-defined]
        entry["checks"] = dict(answer.get("checks") or {})
        entry["warnings"] = warnings + [str(w) for w in answer.get("warnings") or ()]
        if answer.get("problems"):
            entry["problems"] = [str(p) for p in answer["problems"]]
        entry["ready"] = bool(entry["ready"]) and bool(answer.get("ready", True))


def _safely(probe: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
    try:
        return probe()
    except Exception as error:  # a probe's bug must not make health answer 500; its message may name a secret
        log.exception("health: a readiness probe failed")
        return {"ready": False, "problems": [f"the readiness check failed ({type(error).__name__}); see the logs"]}


def evaluate(env: Mapping[str, str] | None = None, state_check=None,
             probes: Mapping[str, Callable[[], Mapping[str, Any]]] | None = None) -> tuple[int, dict[str, object]]:
    """The details body and its status. ``state_check`` raises ``PackError`` when the state store is unreachable;
    ``probes`` (feature -> callable) add checks beyond settings to the features they name."""
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
    features = feature_readiness(states, env, settings)
    if probes:
        run_probes(features, probes)
    warnings = [f"{name}: {text}" for name, text in sorted(settings.warnings.items())]
    if unpinned := _unpinned(states, settings):
        warnings.insert(0, f"{WORKSPACES}: {unpinned}")
    body: dict[str, object] = {
        "status": "ok" if healthy else "degraded",
        "stateStore": state,
        "features": features,
        "flags": {name: str(value).lower() for name, value in values.items()},
        "problems": sorted(shared_problems),
        "warnings": warnings,
        "settings": states,
    }
    return (200 if healthy else 503), body


# -- the tenant's verified domains (enrichment, INTERNAL_DOMAINS_FROM_GRAPH) ---------------------------------
DOMAINS_CACHE_SECONDS = 600.0
_domains_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_domains_lock = threading.Lock()


def tenant_domains_probe(ctx: Any) -> dict[str, Any]:
    """Can the function read the tenant's domains (Graph ``GET /v1.0/domains``, Domain.Read.All)? One call at most
    every ten minutes; a refusal is a warning (domains and URLs are then skipped, never sent to VirusTotal)."""
    from core.credentials import GRAPH_SCOPE
    from core.errors import PackError
    from core.http import call, error_code_of

    if not ctx.settings.values.get("INTERNAL_DOMAINS_FROM_GRAPH"):
        return {"ready": True, "checks": {"tenantDomains": "not read (INTERNAL_DOMAINS_FROM_GRAPH=false)"}}
    endpoint = str(ctx.settings["GRAPH_ENDPOINT"]).rstrip("/")
    with _domains_lock:
        cached = _domains_cache.get(endpoint)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    try:
        response = call(ctx.session, "GET", f"{endpoint}/v1.0/domains?$select=id,isVerified",
                        service="Microsoft Graph", headers={"Authorization": ctx.tokens.bearer(GRAPH_SCOPE)})
    except PackError as error:
        return {"ready": True, "checks": {"tenantDomains": f"unknown: {error.message}"}}  # not kept: asked again
    if response.status_code == 200:
        result: dict[str, Any] = {"ready": True, "checks": {"tenantDomains": "readable"}}
    elif response.status_code in (401, 403):
        code = error_code_of(response) or f"HTTP {response.status_code}"
        result = {"ready": True, "checks": {"tenantDomains": f"refused ({code})"}, "warnings": [
            f"the tenant's verified domains cannot be read through Microsoft Graph ({code}): grant the function "
            "identity Domain.Read.All (docs/permissions.md), or set INTERNAL_DOMAINS and "
            "INTERNAL_DOMAINS_FROM_GRAPH=false; until then every domain and URL is skipped, never sent to VirusTotal"]}
    else:
        return {"ready": True, "checks": {"tenantDomains": f"unknown: HTTP {response.status_code}"}}
    with _domains_lock:
        _domains_cache[endpoint] = (time.monotonic() + DOMAINS_CACHE_SECONDS, result)
    return result


register_probe("enrichment", tenant_domains_probe)


def _state_check() -> None:
    from core.state import get_state_store

    get_state_store().ping()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Anonymous: the status only. Probes and the postdeploy hook need no more."""
    status, body = evaluate(state_check=_state_check)
    return json_response({"status": body["status"]}, status)


def _bound_probes() -> dict[str, Callable[[], Mapping[str, Any]]]:
    """The registered probes, each bound to the process's Context."""
    from core.context import get_context

    return {name: (lambda probe=probe: probe(get_context())) for name, probe in _PROBES.items()}


@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    """With a function key: readiness per feature (settings, then each feature's probe), flags, warnings and the
    state of every setting (no value)."""
    status, body = evaluate(state_check=_state_check, probes=_bound_probes())
    return json_response(body, status)
