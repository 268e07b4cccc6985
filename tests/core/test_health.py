"""Health: anonymous status only (issue 14.9), per-feature readiness with a key (issue 17.12)."""

import pytest
import requests

from core.errors import StateUnavailable
from core.health import FEATURES, evaluate
from localdev.stack import VT_KEY

KV_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/slack-webhook-url)"
BASE = {"STATE_STORAGE_CONNECTION": "UseDevelopmentStorage=true", "VIRUSTOTAL_API_KEY": "k",
        "APPROVAL_SIGNING_KEY": "s", "APPROVERS": "alice@contoso.com", "APPROVAL_MAILBOX": "soc@contoso.com"}


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
