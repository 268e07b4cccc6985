"""Health: anonymous status only (issue 14.9), per-feature readiness with a key (issue 17.12): settings, the
rules between them (workspace pinning, sign-in), and each feature's probe (the ServiceNow sync's ACLs, the
tenant's domains through Graph)."""

import pytest
import requests

from core.errors import StateUnavailable
from core.health import FEATURES, evaluate
from localdev.stack import SNOW_USER, VT_KEY

KV_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/slack-webhook-url)"
WORKSPACE = ("/subscriptions/6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f/resourceGroups/rg-sentinel-prod/providers/"
             "Microsoft.OperationalInsights/workspaces/law-sentinel-prod")
BASE = {"STATE_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "VIRUSTOTAL_API_KEY": "k",
        "APPROVAL_SIGNING_KEY": "s" * 32, "APPROVERS": "alice@contoso.com", "APPROVAL_MAILBOX": "soc@contoso.com",
        "SENTINEL_WORKSPACES": WORKSPACE, "SIGN_IN_CLIENT_ID": "e45a0000-0000-4000-8000-00000000a991",
        "SIGN_IN_AUTHORITY": "https://login.microsoftonline.com/c0ffee00-1234-4abc-8def-0123456789ab",
        "SIGN_IN_MFA_AUTH_CONTEXT": "c1"}


# --- readiness, from settings alone -------------------------------------------------------------------

def test_features_are_ready_or_say_what_they_miss():
    status, body = evaluate(BASE)
    assert status == 200 and body["status"] == "ok"
    features = body["features"]
    assert set(features) == set(FEATURES)
    assert features["enrichment"]["ready"] and features["approvals"]["ready"]
    assert not features["sync"]["ready"]
    assert features["sync"]["missing"] == ["SERVICENOW_INSTANCE_URL", "SERVICENOW_USERNAME", "SERVICENOW_PASSWORD"]
    assert not features["notify"]["ready"]
    assert features["notify"]["missing"] == ["TEAMS_WEBHOOK_URL or SLACK_WEBHOOK_URL"]


def test_an_unresolved_key_vault_reference_of_an_unused_integration_only_unreadies_its_feature():
    # Main answered 503 for as long as such a reference stayed unresolved, with every feature working.
    status, body = evaluate({**BASE, "SLACK_WEBHOOK_URL": KV_REFERENCE})
    assert status == 200 and body["status"] == "ok"
    assert not body["features"]["notify"]["ready"]
    assert body["settings"]["SLACK_WEBHOOK_URL"].startswith("invalid: ")
    assert body["features"]["enrichment"]["ready"]
    assert KV_REFERENCE not in str(body)


def test_a_broken_shared_setting_or_state_store_is_degraded():
    status, body = evaluate({**BASE, "HTTP_TIMEOUT_SECONDS": "soon"})
    assert status == 503 and body["problems"] == ["HTTP_TIMEOUT_SECONDS"]

    def down():
        raise StateUnavailable("the state store is unreachable")

    status, body = evaluate(BASE, state_check=down)
    assert status == 503 and "unreachable" in body["stateStore"]


def test_defaults_are_not_reported_as_set_and_dry_run_is_shown():
    _, body = evaluate(BASE)
    assert body["settings"]["HTTP_TIMEOUT_SECONDS"] == "default"
    assert body["settings"]["VIRUSTOTAL_API_KEY"] == "set"
    assert body["settings"]["SERVICENOW_INSTANCE_URL"] == "missing"
    assert body["flags"]["DRY_RUN"] == "false"
    _, body = evaluate({**BASE, "DRY_RUN": "true"})
    assert body["flags"]["DRY_RUN"] == "true" and body["settings"]["DRY_RUN"] == "set"


def test_no_value_of_a_setting_is_shown():
    env = {**BASE, "SERVICENOW_PASSWORD": "pw-very-secret", "SERVICENOW_INSTANCE_URL": "https://x.service-now.com"}
    _, body = evaluate(env)
    assert "pw-very-secret" not in str(body) and "x.service-now.com" not in str(body)


# --- the rules between settings: workspace pinning, sign-in ----------------------------------------------

def test_no_workspace_outside_local_mode_unreadies_every_feature_and_says_why():
    # Main reported every feature ready while the app refused every action with 403 (core/workspace.py).
    env = {k: v for k, v in BASE.items() if k != "SENTINEL_WORKSPACES"}
    status, body = evaluate(env)
    assert status == 200  # nothing is broken: the deployment has not named its workspace yet
    for name, feature in body["features"].items():
        assert not feature["ready"], name
        assert any(m.startswith("SENTINEL_WORKSPACES") and "every action is refused" in m
                   for m in feature["missing"]), name
    assert body["warnings"][0].startswith("SENTINEL_WORKSPACES")
    _, body = evaluate({**env, "LOCAL_MODE": "true"})  # the local stack: not pinned, nothing refused
    assert body["features"]["enrichment"]["ready"] and not body["warnings"]


def test_approvals_and_ask_user_list_what_the_app_sign_in_needs():
    _, body = evaluate(BASE)
    for name in ("approvals", "ask-user"):
        assert body["features"][name]["ready"], body["features"][name]
        assert body["features"][name]["signIn"]["mode"] == "app"
    assert body["features"]["approvals"]["signIn"]["needs"] == ["SIGN_IN_CLIENT_ID", "SIGN_IN_AUTHORITY"]
    assert body["features"]["ask-user"]["signIn"]["needs"] == ["SIGN_IN_CLIENT_ID", "SIGN_IN_AUTHORITY",
                                                               "SIGN_IN_MFA_AUTH_CONTEXT"]
    assert "signIn" not in body["features"]["enrichment"]

    _, body = evaluate({**BASE, "SIGN_IN_CLIENT_ID": "", "APPROVAL_SIGNING_KEY": "short",
                        "SIGN_IN_MFA_AUTH_CONTEXT": ""})
    for name in ("approvals", "ask-user"):
        feature = body["features"][name]
        assert not feature["ready"] and "SIGN_IN_CLIENT_ID" in feature["missing"]
        assert any("32 characters" in i for i in feature["invalid"])
    assert any("Yes, it was me" in w for w in body["features"]["ask-user"]["warnings"])

    # Sign-in off (local tries): approvals do not need it, the user's own answer always does.
    _, body = evaluate({**BASE, "SIGN_IN_CLIENT_ID": "", "APPROVAL_REQUIRE_SIGN_IN": "false"})
    assert body["features"]["approvals"]["ready"] and "signIn" not in body["features"]["approvals"]
    assert not body["features"]["ask-user"]["ready"]
    assert any(w.startswith("APPROVAL_REQUIRE_SIGN_IN") for w in body["warnings"])


def test_easy_auth_needs_app_service_authentication_in_front():
    env = {**BASE, "SIGN_IN_MODE": "easyauth", "SIGN_IN_CLIENT_ID": ""}
    _, body = evaluate(env)
    feature = body["features"]["approvals"]
    assert feature["signIn"] == {"mode": "easyauth", "needs": ["WEBSITE_AUTH_ENABLED"]}
    assert not feature["ready"] and any("WEBSITE_AUTH_ENABLED=True" in m for m in feature["missing"])
    _, body = evaluate({**env, "WEBSITE_AUTH_ENABLED": "True"})
    assert body["features"]["approvals"]["ready"] and body["features"]["ask-user"]["ready"]
    status, body = evaluate({**BASE, "SIGN_IN_MODE": "sometimes"})
    assert status == 200 and "SIGN_IN_MODE" in body["features"]["approvals"]["invalid"]
    assert body["features"]["enrichment"]["ready"]  # a sign-in setting stays inside the features that sign in


# --- probes ---------------------------------------------------------------------------------------------

def test_probes_run_for_ready_features_and_a_failing_probe_is_reported_not_raised():
    called = []

    def broken():
        called.append("enrichment")
        raise RuntimeError("secret-in-a-message")

    def sync_probe():
        called.append("sync")
        return {"ready": False, "checks": {}, "problems": []}

    status, body = evaluate(BASE, probes={"enrichment": broken, "sync": sync_probe})
    assert called == ["enrichment"]  # sync's settings are missing: its probe is not asked
    assert status == 200
    enrichment = body["features"]["enrichment"]
    assert not enrichment["ready"] and "RuntimeError" in enrichment["problems"][0]
    assert "secret-in-a-message" not in str(body)
    warned = evaluate(BASE, probes={"enrichment": lambda: {"ready": True, "warnings": ["w"], "checks": {"x": 1}}})
    assert warned[1]["features"]["enrichment"]["ready"] and warned[1]["features"]["enrichment"]["warnings"] == ["w"]


# --- over HTTP ----------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_anonymous_health_answers_only_its_status(stack, host):
    response = requests.get(f"{host.host.url}/api/health", timeout=10)  # anonymous: no key needed
    assert response.status_code == 200, response.text
    # Main answered every setting's state here, telling anyone which integrations exist (issue 14.9).
    assert response.json() == {"status": "ok"}


@pytest.mark.e2e
def test_details_need_the_function_key_and_show_readiness_without_values(stack, host):
    assert requests.get(f"{host.host.url}/api/health/details", timeout=10).status_code == 401
    response = host.get("health/details")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stateStore"] == "ok"
    assert body["features"]["enrichment"]["ready"] and body["features"]["notify"]["ready"]
    assert body["settings"]["VIRUSTOTAL_API_KEY"] == "set"
    assert VT_KEY not in response.text
    assert stack.azurite.connection_string.split("AccountKey=")[1][:20] not in response.text


@pytest.mark.e2e
def test_health_names_a_malformed_setting(stack):
    process = stack.host(HTTP_TIMEOUT_SECONDS="soon")
    try:
        assert requests.get(f"{process.url}/api/health", timeout=10).json() == {"status": "degraded"}
        response = requests.get(f"{process.url}/api/health/details", headers={"x-functions-key": process.function_key},
                                timeout=10)
        assert response.status_code == 503
        assert "HTTP_TIMEOUT_SECONDS" in response.json()["settings"]["HTTP_TIMEOUT_SECONDS"]
    finally:
        process.stop()


@pytest.mark.e2e
def test_details_run_the_sync_probe_and_name_hidden_work_notes(clean_stack, host_with):
    # Main's health said "sync ready" from settings alone while ServiceNow hid every work note (issue 15.3).
    from tests.sync.conftest import sync_settings

    clean_stack.snow.seed_incident(work_notes="a note")
    body = host_with(**sync_settings()).get("health/details").json()
    sync = body["features"]["sync"]
    assert sync["ready"] is True and sync["checks"]["journal"] == "readable", sync
    clean_stack.snow.hide_journal_from(SNOW_USER)
    response = host_with(**sync_settings()).get("health/details")  # a new process: no cached answer
    assert response.status_code == 200  # one feature not ready; the app is not degraded
    sync = response.json()["features"]["sync"]
    assert sync["ready"] is False and sync["checks"]["journal"] == "hidden"
    assert any("sys_journal_field" in p for p in sync["problems"])
    assert response.json()["features"]["enrichment"]["ready"]


@pytest.mark.e2e
def test_details_say_whether_the_tenant_domains_are_readable(clean_stack, host_with):
    enrichment = host_with().get("health/details").json()["features"]["enrichment"]
    assert enrichment["ready"] and enrichment["checks"]["tenantDomains"] == "readable"
    graph_calls = len(clean_stack.graph.requests_to("GET", r"/v1\.0/domains"))

    clean_stack.graph.directory.readable = False  # the identity lacks Domain.Read.All
    client = host_with()
    enrichment = client.get("health/details").json()["features"]["enrichment"]
    assert enrichment["ready"]  # IPs and hashes are still looked up
    assert enrichment["checks"]["tenantDomains"].startswith("refused")
    assert any("Domain.Read.All" in w for w in enrichment["warnings"])
    client.get("health/details")  # cached: one Graph call per ten minutes, not one per health check
    assert len(clean_stack.graph.requests_to("GET", r"/v1\.0/domains")) == graph_calls + 1

    off = host_with(INTERNAL_DOMAINS_FROM_GRAPH="false").get("health/details").json()["features"]["enrichment"]
    assert off["checks"]["tenantDomains"].startswith("not read")
