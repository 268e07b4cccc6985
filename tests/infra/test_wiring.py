"""Wiring between the Bicep templates, the playbook definitions and the function app.

What Azure would only reveal after a deployment is checked here from the files: every playbook is a
valid, registered workflow definition that calls routes the app really serves, every setting the code
reads is configured (or knowingly left to its default), secrets only travel as Key Vault references,
and no template outputs a secret. checkov (make checkov) covers the resources' security settings.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

from core.settings import SPECS

INFRA = Path(__file__).resolve().parents[2] / "infra"
PLAYBOOKS = sorted((INFRA / "playbooks").glob("*.json"))
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
BICEP_TEXT = "\n".join(path.read_text() for path in BICEP_FILES)
MAIN_BICEP = (INFRA / "main.bicep").read_text()
API_BICEP = (INFRA / "app" / "api.bicep").read_text()
PLAYBOOK_BICEP = (INFRA / "app" / "playbook.bicep").read_text()

# Settings deliberately not set by the templates, each with the reason. Everything else in
# core.settings.SPECS must be an app setting in infra/app/api.bicep.
NOT_SET_IN_AZURE = {
    "ARM_ENDPOINT": "public-cloud default; overridden only to point at the local emulators",
    "GRAPH_ENDPOINT": "public-cloud default; overridden only to point at the local emulators",
    "MDE_ENDPOINT": "public-cloud default (regional hosts are an opt-in override)",
    "VIRUSTOTAL_ENDPOINT": "public default; overridden only to point at the local emulator",
    "STATE_STORAGE_CONNECTION": "local only (Azurite connection string); Azure uses STATE_TABLE_SERVICE_URI and the "
                                "identity-based STATE_STORAGE_CONNECTION__* settings of the queue trigger",
    "STATE_TABLE_PREFIX": "one environment per storage account in Azure; the prefix isolates tests and local runs",
    "HTTP_TIMEOUT_SECONDS": "tuned default in core/settings.py",
    "HTTP_MAX_RETRIES": "tuned default in core/settings.py",
    "HTTP_MAX_RETRY_AFTER_SECONDS": "tuned default in core/settings.py",
    "VIRUSTOTAL_CACHE_TTL_SECONDS": "tuned default in core/settings.py",
    "VIRUSTOTAL_MALICIOUS_THRESHOLD": "verdict threshold default, documented in core/settings.py",
    "VIRUSTOTAL_SUSPICIOUS_THRESHOLD": "verdict threshold default, documented in core/settings.py",
    "VIRUSTOTAL_QUOTA_RETRY_SECONDS": "default matches the public API's per-minute quota",
    "VIRUSTOTAL_LABEL": "on by default",
    "MAX_ENTITIES": "tuned default in core/settings.py",
    # issue 13 (identity): secure or tuned defaults, documented in core/settings.py
    "BLOCK_IP_VERDICTS": "default malicious,suspicious",
    "DISPLAY_TIME_ZONE": "default UTC; a SOC sets its own zone if it wants",
    "CALLBACK_MAX_ATTEMPTS": "tuned default in core/settings.py",
    "CALLBACK_MAX_AGE_HOURS": "tuned default in core/settings.py",
    "ASK_USER_TIMEOUT_MINUTES": "tuned default in core/settings.py",
    "ASK_USER_MFA_MAX_AGE_MINUTES": "tuned default in core/settings.py",
    "ASK_USER_REVOKE_ON_NO": "off by default (confirming compromise always happens)",
    "ASK_USER_DISMISS_RISK_ON_YES": "off by default, as issue 13 asks",
    "RESPONSE_RADIUS_WINDOW_HOURS": "tuned default in core/settings.py (blast radius per incident within a day)",
    "DISABLED_ACTIONS": "empty by default: an operator's kill switch, set by hand when an action must stop",
    "RESPONSE_STATUS_LINK_HOURS": "tuned default in core/settings.py",
    "RESPONSE_POOL_SIZE": "tuned default in core/settings.py",
    "HTTP_POOL_SIZE": "tuned default in core/settings.py",
    "STATE_POOL_SIZE": "tuned default in core/settings.py",
    "SIGN_IN_SESSION_MINUTES": "default 8 h, App Service Authentication's own session length",
    # Tuning like HTTP_POOL_SIZE and VIRUSTOTAL_POOL_SIZE above (no parameter of their own): a deployer who must
    # change one sets it through EXTRA_APP_SETTINGS (main.bicep extraAppSettings), which every provision keeps.
    "SERVICENOW_SYNC_CONCURRENCY": "tuned default in core/settings.py (ServiceNow sync); EXTRA_APP_SETTINGS to change",
    "SERVICENOW_POLL_MAX_PAGES": "tuned default in core/settings.py (ServiceNow sync); EXTRA_APP_SETTINGS to change",
    "SERVICENOW_POLL_OVERLAP_SECONDS": "tuned default in core/settings.py (ServiceNow sync); EXTRA_APP_SETTINGS to "
                                       "change",
    # Enrichment and Sentinel settings (helper H4): defaults documented in core/settings.py.
    "SENTINEL_COMMENT_RESERVE": "tuned default in core/settings.py",
    "VIRUSTOTAL_POOL_SIZE": "tuned default in core/settings.py (size it to the VirusTotal key's per-minute quota)",
    "INTERNAL_DOMAINS": "optional additions; the tenant's verified domains are read through Graph",
    "INTERNAL_DOMAINS_FROM_GRAPH": "on by default (needs Domain.Read.All)",
    "VIRUSTOTAL_URL_LOOKUP": "default url (without userinfo, query and fragment)",
    "VIRUSTOTAL_DOMAINS_FROM_URLS": "off by default",
    "VIRUSTOTAL_RAISE_SEVERITY": "off by default (a SOC's choice)",
    "INCIDENT_TASKS": "the built-in task templates by default",
    # Blocking files, URLs and domains (issue 18.6): safe defaults documented in core/settings.py.
    "BLOCK_INDICATOR_VERDICTS": "default malicious (a block without a person deciding needs more than one engine)",
    "BLOCK_INDICATOR_EXPIRY_HOURS": "default 90 days, as Microsoft's Restrict-MDE* playbook templates block",
    "PROTECTED_INDICATORS": "default protects Microsoft's sign-in and update domains; a SOC adds its own",
}

HTTP_ACTION_TYPES = {"http", "httpwebhook"}
RUN_AFTER_STATUSES = {"Succeeded", "Failed", "Skipped", "TimedOut"}
SECRET_NAME = re.compile(r"secret|password|passwd|credential|token|connectionstring|sasuri|sasurl|key(?!vault)", re.I)


# --- helpers ---------------------------------------------------------------------------------------

def load(path: Path) -> dict:
    return json.loads(path.read_text())


def action_scopes(actions: dict) -> list[dict]:
    """Every dict of sibling actions: the top level and those nested in scopes, conditions and switches."""
    scopes = [actions]
    for action in actions.values():
        nested = [action.get("actions"), (action.get("else") or {}).get("actions"),
                  (action.get("default") or {}).get("actions")]
        nested += [case.get("actions") for case in (action.get("cases") or {}).values()]
        for inner in nested:
            if inner:
                scopes += action_scopes(inner)
    return scopes


def all_actions(definition: dict) -> dict[str, dict]:
    return {name: action for scope in action_scopes(definition["actions"]) for name, action in scope.items()}


def http_actions(definition: dict) -> dict[str, dict]:
    return {name: action for name, action in all_actions(definition).items()
            if action.get("type", "").lower() in HTTP_ACTION_TYPES}


def request_of(action: dict) -> dict:
    """The request an HTTP action sends: inputs for Http, inputs.subscribe for HttpWebhook."""
    inputs = action.get("inputs", {})
    return inputs["subscribe"] if action["type"].lower() == "httpwebhook" else inputs


def strip_expressions(text: str) -> str:
    """Replace each @{...} expression (balanced braces) with '*', so it matches one route segment."""
    out, depth = [], 0
    i = 0
    while i < len(text):
        if depth == 0 and text.startswith("@{", i):
            depth, i = 1, i + 2
            out.append("*")
            continue
        if depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
        else:
            out.append(text[i])
        i += 1
    return "".join(out)


def called_route(uri: str) -> str | None:
    match = re.search(r"/api/([^?#]*)", strip_expressions(uri))
    return match.group(1).strip("/") if match else None


@cache
def app_functions() -> list:
    """The real FunctionApp's functions.

    azure-functions refuses a second get_functions() call on the same app object (it remembers the
    names it has seen and reports them as duplicates), so forget them first: other tests may call it too.
    """
    import function_app

    function_app.app.functions_bindings = {}
    return function_app.app.get_functions()


def app_routes() -> dict[str, set[str]]:
    """Route template -> HTTP methods, from the real FunctionApp."""
    routes: dict[str, set[str]] = {}
    for fn in app_functions():
        for binding in fn.get_bindings():
            spec = binding.get_dict_repr()
            if spec.get("type") != "httpTrigger":
                continue
            methods = {str(getattr(m, "value", m)).upper() for m in (spec.get("methods") or [])}
            route = spec.get("route") or fn.get_function_name()
            routes.setdefault(route, set()).update(methods or {"GET", "POST", "PUT", "PATCH", "DELETE"})
    return routes


def route_matches(template: str, called: str) -> bool:
    want, got = template.split("/"), called.split("/")
    return len(want) == len(got) and all(
        w == g or g == "*" or (w.startswith("{") and w.endswith("}")) for w, g in zip(want, got, strict=True))


def app_setting_names() -> set[str]:
    """Keys of the `appSettings` object in api.bicep."""
    block = re.search(r"^var appSettings = \{(.*?)^\}", API_BICEP, re.S | re.M)
    assert block, "infra/app/api.bicep has no `var appSettings = { ... }` block"
    return set(re.findall(r"^\s*'?([A-Za-z_][A-Za-z0-9_]*)'?\s*:", block.group(1), re.M))


def bicep_outputs() -> list[tuple[Path, str, str]]:
    return [(path, name, value) for path in BICEP_FILES
            for name, value in re.findall(r"^output\s+(\S+)\s+\S+\s*=\s*(.+)$", path.read_text(), re.M)]


# --- playbook definitions --------------------------------------------------------------------------

def test_there_are_playbooks():
    assert PLAYBOOKS, "infra/playbooks/ holds no workflow definition"


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_is_a_workflow_definition(path):
    definition = load(path)
    assert "workflowdefinition.json" in definition.get("$schema", ""), "missing or wrong $schema"
    assert definition.get("contentVersion"), "missing contentVersion"
    assert isinstance(definition.get("triggers"), dict) and len(definition["triggers"]) == 1, \
        "a playbook has exactly one trigger"
    assert isinstance(definition.get("actions"), dict) and definition["actions"], "no actions"
    for scope in action_scopes(definition["actions"]):
        for name, action in scope.items():
            assert "type" in action, f"action {name} has no type"
            run_after = action.get("runAfter", {})
            for previous, statuses in run_after.items():
                assert previous in scope, f"{name}.runAfter names {previous!r}, not a sibling action"
                assert set(statuses) <= RUN_AFTER_STATUSES, f"{name}.runAfter statuses {statuses}"
        roots = [name for name, action in scope.items() if not action.get("runAfter")]
        assert roots, "every action waits for another: nothing would run"


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_triggers_on_sentinel_through_the_managed_identity_connection(path):
    definition = load(path)
    (trigger,) = definition["triggers"].values()
    assert trigger["type"] == "ApiConnectionWebhook"
    assert "['azuresentinel']" in trigger["inputs"]["host"]["connection"]["name"]
    path_ = trigger["inputs"]["path"]  # incident, alert or entity trigger
    assert path_ in {"/incident-creation", "/subscribe"} or path_.startswith("/entity/"), path_
    supplied = set(re.findall(r"(\w+):\s*\{\s*connectionId:", PLAYBOOK_BICEP))
    used = set(re.findall(r"\$connections'\)\['(\w+)'\]", json.dumps(definition)))
    assert used <= supplied, f"connections {used - supplied} are not supplied by infra/app/playbook.bicep"


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_http_actions_retry_and_send_the_key_secretly(path):
    definition = load(path)
    for name, action in http_actions(definition).items():
        retry = request_of(action).get("retryPolicy")
        assert retry, f"{name} has no retryPolicy"
        assert retry.get("type", "").lower() in {"exponential", "fixed"} and retry.get("count", 0) >= 1, \
            f"{name}: retryPolicy must retry (exponential or fixed, count >= 1): {retry}"
        if "functionKey" in json.dumps(action):
            assert "inputs" in action.get("runtimeConfiguration", {}).get("secureData", {}).get("properties", []), \
                f"{name} sends the function key: its inputs must be secureData (hidden from run history)"


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_parameters_are_declared_and_supplied(path):
    definition = load(path)
    declared = definition.get("parameters", {})
    used = set(re.findall(r"parameters\('([^']+)'\)", json.dumps(definition)))
    assert used <= set(declared), f"undeclared parameters {used - set(declared)}"
    for name, spec in declared.items():
        if name != "$connections" and "defaultValue" not in spec:
            assert re.search(rf"^\s*{re.escape(name)}:\s*\{{", PLAYBOOK_BICEP, re.M), \
                f"parameter {name} has no default and infra/app/playbook.bicep does not supply it"
    if "functionKey" in declared:
        assert declared["functionKey"]["type"].lower() == "securestring", "functionKey must be a SecureString"


def test_every_playbook_file_is_registered_in_main_bicep():
    registered = set(re.findall(r"loadJsonContent\('playbooks/([^']+)'\)", MAIN_BICEP))
    assert registered == {path.name for path in PLAYBOOKS}


# --- playbook -> function routes -------------------------------------------------------------------

def test_every_called_route_exists_with_its_method():
    routes = app_routes()
    calls = 0
    for path in PLAYBOOKS:
        for name, action in http_actions(load(path)).items():
            request = request_of(action)
            route = called_route(request.get("uri", ""))
            if route is None:
                continue  # not a call to our function app
            calls += 1
            method = request.get("method", "GET").upper()
            matches = [template for template in routes if route_matches(template, route)]
            assert matches, f"{path.name}:{name} calls /api/{route}, which function_app does not serve"
            assert any(method in routes[template] for template in matches), \
                f"{path.name}:{name} calls {method} /api/{route}; the app accepts {routes[matches[0]]}"
    assert calls, "no playbook calls the function app"


def test_route_matching_helpers():
    assert called_route("@{parameters('functionBaseUrl')}/api/enrichment/ip-reputation") == "enrichment/ip-reputation"
    assert called_route("@{parameters('b')}/api/response/mde/actions/@{body('Isolate')?['id']}?x=1") == \
        "response/mde/actions/*"
    assert route_matches("response/mde/actions/{id}", "response/mde/actions/*")
    assert not route_matches("enrichment/ip-reputation", "enrichment/ip")


# --- app settings ----------------------------------------------------------------------------------

def test_every_setting_is_configured_or_knowingly_left_to_its_default():
    configured = app_setting_names()
    names = {spec.name for spec in SPECS}
    missing = sorted(names - configured - set(NOT_SET_IN_AZURE))
    assert not missing, f"settings neither set in infra/app/api.bicep nor listed in NOT_SET_IN_AZURE: {missing}"
    stale = sorted(set(NOT_SET_IN_AZURE) - names)
    assert not stale, f"NOT_SET_IN_AZURE lists settings core/settings.py no longer has: {stale}"
    both = sorted(set(NOT_SET_IN_AZURE) & configured)
    assert not both, f"listed as not set, yet set in api.bicep: {both}"


def test_secrets_are_key_vault_references_to_secrets_the_vault_receives():
    secret_names = {spec.name for spec in SPECS if spec.secret} - set(NOT_SET_IN_AZURE)
    secret_names.add("SERVICENOW_USERNAME")  # not masked in logs, but a credential: kept in Key Vault too
    provided = set(re.findall(r"^\s*'([a-z0-9-]+)':\s*\w+", MAIN_BICEP, re.M))
    for name in sorted(secret_names):
        line = re.search(rf"^\s*{name}\s*:\s*(.+)$", API_BICEP, re.M)
        assert line, f"{name} is not an app setting"
        value = line.group(1).strip()
        reference = re.fullmatch(r"'@Microsoft\.KeyVault\(SecretUri=\$\{secretsUri\}([a-z0-9-]+)\)'", value)
        assert reference, f"{name} must be a Key Vault reference, got {value}"
        assert reference.group(1) in provided, f"{name} references secret {reference.group(1)!r}, " \
                                               "which main.bicep does not pass to keyvault.bicep"


def test_queue_triggers_have_their_queue_and_identity_connection():
    queues = set(re.findall(r"'([a-z0-9-]+)'", re.search(r"var stateQueueNames = \[(.*?)\]", MAIN_BICEP).group(1)))
    settings = app_setting_names()
    for fn in app_functions():
        for binding in fn.get_bindings():
            spec = binding.get_dict_repr()
            if spec.get("type") != "queueTrigger":
                continue
            assert spec["queueName"] in queues, f"queue {spec['queueName']} is not in main.bicep stateQueueNames"
            connection = spec.get("connection") or "AzureWebJobsStorage"
            for suffix in ("queueServiceUri", "credential", "clientId"):
                assert f"{connection}__{suffix}" in settings, f"{fn.get_function_name()}: {connection}__{suffix} unset"


def test_parameters_file_maps_only_declared_parameters():
    mapped = set(load(INFRA / "main.parameters.json")["parameters"])
    declared = set(re.findall(r"^param\s+(\w+)", MAIN_BICEP, re.M))
    assert mapped <= declared, f"main.parameters.json maps unknown parameters {mapped - declared}"


# --- outputs ---------------------------------------------------------------------------------------

def test_no_template_outputs_a_secret():
    secure_params = set(re.findall(r"@secure\(\)\s*\n\s*param\s+(\w+)", BICEP_TEXT))
    for path, name, value in bicep_outputs():
        where = f"{path.relative_to(INFRA)}: output {name}"
        assert not SECRET_NAME.search(name.replace("_", "")), f"{where} is named like a secret"
        assert not re.search(r"list\w*\(|connectionstring|\.secrets?\b", value, re.I), f"{where} = {value}"
        assert not (set(re.findall(r"\w+", value)) & secure_params), f"{where} outputs a @secure() parameter"


def test_secret_name_pattern():
    for bad in ("FUNCTION_KEY", "functionKey", "APPINSIGHTS_CONNECTION_STRING", "adminPassword", "sasToken"):
        assert SECRET_NAME.search(bad.replace("_", "")), bad
    for fine in ("AZURE_KEYVAULT_NAME", "AZURE_FUNCTION_URL", "AZURE_FUNCTION_PRINCIPAL_ID"):
        assert not SECRET_NAME.search(fine.replace("_", "")), fine


# --- every parameter a user may set is reachable (issue 17, item 8) -----------------------------------

MAIN_PARAMETERS = load(INFRA / "main.parameters.json")["parameters"]


def bicep_params(text: str) -> dict[str, bool]:
    """param name -> has a default."""
    return {name: bool(default) for name, default in re.findall(r"^param\s+(\w+)\s+[^=\n]+?(=\s*\S.*)?$", text, re.M)}


def module_params_given(module: str) -> set[str]:
    block = re.search(rf"^module \w+ 'app/{re.escape(module)}' = [^\n]*\n(.*?)^\}}", MAIN_BICEP, re.S | re.M)
    assert block, f"main.bicep has no module app/{module}"
    params = re.search(r"^  params: \{\n(.*?)^  \}", block.group(1), re.S | re.M)
    return set(re.findall(r"^    (\w+):", params.group(1), re.M)) if params else set()


def test_every_main_parameter_is_mapped_to_an_azd_environment_value():
    declared = set(bicep_params(MAIN_BICEP))
    unreachable = sorted(declared - set(MAIN_PARAMETERS))
    assert not unreachable, f"parameters azd env set cannot reach (add them to main.parameters.json): {unreachable}"
    for name, spec in MAIN_PARAMETERS.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", str(spec["value"])), f"{name}: {spec['value']}"


def test_every_app_setting_parameter_of_the_function_is_given_by_main():
    api_params = bicep_params(API_BICEP)
    given = module_params_given("api.bicep")
    settable = {name for name in api_params if re.search(rf"\b{name}\b", API_BICEP.split("var appSettings")[1])}
    missing = sorted(settable - given)
    assert not missing, f"api.bicep settings whose parameter main.bicep does not pass (stuck at the default): {missing}"


def test_the_approval_timeout_reaches_the_playbook():
    assert "value: 'PT${approvalTimeoutMinutes}M'" in MAIN_BICEP
    from tools.playbook_check import supplied_parameters
    assert "approvalTimeout" in supplied_parameters("orchestration-compromised-user.json")


# --- deployment order and scopes (issue 17, items 2, 3, 7) ---------------------------------------------

def test_no_module_targets_a_resource_group_that_does_not_exist():
    assert "resourceGroups/-/" not in MAIN_BICEP
    assert "resourceGroups/${resourceGroupNameResolved}/providers/Microsoft.OperationalInsights/workspaces/none" \
        in MAIN_BICEP


def test_the_function_app_waits_for_its_role_assignments():
    block = re.search(r"^module api 'app/api.bicep'.*?^\}", MAIN_BICEP, re.S | re.M).group(0)
    assert re.search(r"dependsOn: \[\s*rbacPack\s*\]", block)


def test_automation_rules_wait_for_the_role_that_lets_sentinel_run_playbooks():
    block = re.search(r"^module automationRules .*?^\}\]", MAIN_BICEP, re.S | re.M).group(0)
    assert "rbacPack" in block and "rbacSentinel" in block


def test_playbook_identities_hold_reader_not_responder():
    rbac = (INFRA / "app" / "rbac.bicep").read_text()
    block = re.search(r"^resource playbookSentinel\w+ .*?^\}\]", rbac, re.S | re.M).group(0)
    assert "sentinelReader" in block and "sentinelResponder" not in block
    assert "var sentinelReader = '8d289c81-5878-46d4-8554-54e1e3d8b5cb'" in rbac


# --- alerts key on log lines the code really writes (issue 17, item 11) -------------------------------

def test_alert_queries_match_log_lines_of_the_code():
    alerts = (INFRA / "app" / "alerts.bicep").read_text()
    code = "\n".join(path.read_text() for area in ("core", "enrichment", "orchestration", "sync")
                     for path in (INFRA.parent / area).glob("*.py"))
    phrases = re.findall(r'message (?:has|startswith) "([^"]+)"', alerts.replace("\\", ""))
    assert phrases
    for phrase in phrases:
        if phrase == "vt-deferred-poison":
            assert phrase in (INFRA.parent / "infra" / "main.bicep").read_text() or "vt-deferred" in code
            continue
        stem = phrase.split("{")[0]
        assert stem in code, f"alerts.bicep waits for {phrase!r}, which no log line in the code writes"
