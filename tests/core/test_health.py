"""GET /api/health: configuration state and state-store reachability, never a secret value."""

import pytest
import requests

from localdev.stack import VT_KEY

pytestmark = pytest.mark.e2e


def test_health_reports_settings_without_values(stack, host):
    response = requests.get(f"{host.host.url}/api/health", timeout=10)  # anonymous: no key needed
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and body["stateStore"] == "ok"
    assert body["settings"]["VIRUSTOTAL_API_KEY"] == "set"
    assert body["settings"]["SERVICENOW_PASSWORD"] in ("missing", "set")
    assert VT_KEY not in response.text
    assert stack.azurite.connection_string.split("AccountKey=")[1][:20] not in response.text


def test_health_names_a_malformed_setting(stack):
    process = stack.host(HTTP_TIMEOUT_SECONDS="soon")
    try:
        response = requests.get(f"{process.url}/api/health", timeout=10)
        assert response.status_code == 503
        assert "HTTP_TIMEOUT_SECONDS" in response.json()["settings"]["HTTP_TIMEOUT_SECONDS"]
    finally:
        process.stop()
