"""The azd hooks, run as azd runs them (sh), against stand-ins of the az, azd and curl command lines.

There is no Azure here; the stand-ins below are small shell scripts that answer the few commands the hooks
use, keep their state in files and log every call, so the tests assert on what the hooks did: Key Vault
recovery after `azd down` (17.1), the Sentinel principal looked up or a clear stop (17.3), no nested
`azd provision` (17.5), the function-level keys created once and kept in Key Vault without the value on a
command line (14.3), DEPLOY_PLAYBOOKS reset before `azd down`.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parents[2] / "infra" / "hooks"

AZ = r'''#!/bin/sh
state="$FAKE_STATE"
printf '%s\n' "az $*" >> "$state/calls"
case "$*" in
  "account show --only-show-errors") exit 0 ;;
  "account show --query id -o tsv --only-show-errors") echo 00000000-0000-0000-0000-000000000001 ;;
  keyvault\ list-deleted*) cat "$state/deleted_vault" 2>/dev/null ;;
  ad\ sp\ show\ --id\ 98785600*) [ -f "$state/sentinel_sp" ] && cat "$state/sentinel_sp" || exit 1 ;;
  functionapp\ keys\ list*) exit 0 ;;
  functionapp\ function\ keys\ list*)
    fn=$(printf '%s\n' "$*" | sed -n 's/.*--function-name \([^ ]*\).*/\1/p')
    key=$(printf '%s\n' "$*" | sed -n 's/.*--query \([^ ]*\).*/\1/p')
    cat "$state/key_${fn}_${key}" 2>/dev/null ;;
  functionapp\ function\ keys\ set*)
    fn=$(printf '%s\n' "$*" | sed -n 's/.*--function-name \([^ ]*\).*/\1/p')
    key=$(printf '%s\n' "$*" | sed -n 's/.*--key-name \([^ ]*\).*/\1/p')
    echo "generated-$key-value" > "$state/key_${fn}_${key}"
    echo "generated-$key-value" ;;
  rest\ --method\ PUT*)
    uri=$(printf '%s\n' "$*" | sed -n 's/.*--uri \([^ ]*\).*/\1/p')
    file=$(printf '%s\n' "$*" | sed -n 's/.*--body @\([^ ]*\).*/\1/p')
    cp "$file" "$state/kv_$(basename "${uri%%\?*}")" ;;
  *) exit 0 ;;
esac
'''
AZD = r'''#!/bin/sh
printf '%s\n' "azd $*" >> "$FAKE_STATE/calls"
if [ "$1 $2" = "env set" ]; then printf '%s=%s\n' "$3" "$4" >> "$FAKE_STATE/azd_env"; exit 0; fi
echo "azd $1 must not be called from a hook" >&2
exit 1
'''
CURL = r'''#!/bin/sh
printf '%s\n' "curl $*" >> "$FAKE_STATE/calls"
for arg in "$@"; do url="$arg"; done
case "$url" in
  */.auth/me) printf '%s' "${FAKE_AUTH_STATUS:-404}" ;;
  */api/auth/login*) printf '%s' "${FAKE_LOGIN:-302 https://login.microsoftonline.com/t/oauth2/v2.0/authorize?x}" ;;
  */api/health) printf '%s' 200 ;;
  *) printf '%s' 404 ;;
esac
'''


@pytest.fixture
def fake(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("az", AZ), ("azd", AZD), ("curl", CURL)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    def run(hook: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_STATE": str(state), "AZURE_ENV_NAME": "soc-prod",
                "AZURE_LOCATION": "swedencentral", **env}
        return subprocess.run(["sh", str(HOOKS / hook)], env=full, capture_output=True, text=True, timeout=60)

    run.state = state  # type: ignore[attr-defined]
    return run


def azd_env(state: Path) -> dict[str, str]:
    lines = (state / "azd_env").read_text().splitlines() if (state / "azd_env").exists() else []
    return dict(line.split("=", 1) for line in lines)


def calls(state: Path) -> str:
    return (state / "calls").read_text()


def test_preprovision_recovers_the_soft_deleted_vault_of_this_environment(fake):
    assert fake("preprovision.sh").returncode == 0
    assert azd_env(fake.state)["KEY_VAULT_CREATE_MODE"] == "default"
    (fake.state / "deleted_vault").write_text("kv-abc123\n")
    result = fake("preprovision.sh")
    assert result.returncode == 0 and "recovers it" in result.stdout
    assert azd_env(fake.state)["KEY_VAULT_CREATE_MODE"] == "recover"
    assert "azd-env-name" in calls(fake.state) and "soc-prod" in calls(fake.state)


def test_preprovision_looks_the_sentinel_principal_up_or_stops_with_the_reason(fake):
    result = fake("preprovision.sh", CREATE_AUTOMATION_RULES="true")
    assert result.returncode == 1
    assert "SENTINEL_AUTOMATION_PRINCIPAL_ID" in result.stdout and "CREATE_AUTOMATION_RULES false" in result.stdout
    (fake.state / "sentinel_sp").write_text("11111111-2222-3333-4444-555555555555\n")
    assert fake("preprovision.sh", CREATE_AUTOMATION_RULES="true").returncode == 0
    assert azd_env(fake.state)["SENTINEL_AUTOMATION_PRINCIPAL_ID"] == "11111111-2222-3333-4444-555555555555"


POSTDEPLOY_ENV = {"AZURE_FUNCTION_URL": "https://func-x.azurewebsites.net", "AZURE_RESOURCE_GROUP": "rg-soc-prod",
                  "AZURE_FUNCTION_NAME": "func-x", "AZURE_KEYVAULT_NAME": "kv-x", "SIGN_IN_CLIENT_ID": "app-id",
                  "POSTDEPLOY_ATTEMPTS": "2"}


def test_postdeploy_creates_the_function_keys_once_and_keeps_them_in_key_vault(fake):
    result = fake("postdeploy.sh", **POSTDEPLOY_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    log = calls(fake.state)
    assert "--function-name servicenow_inbound --key-name servicenow" in log
    assert "--function-name ip_blocklist --key-name firewall" in log
    for key in ("servicenow", "firewall"):
        stored = (fake.state / f"kv_function-key-{key}").read_text()
        assert f'"value":"generated-{key}-value"' in stored
        assert f"generated-{key}-value" not in log, "a key value appeared on a command line"
    assert azd_env(fake.state)["DEPLOY_PLAYBOOKS"] == "true"
    assert "azd provision" not in log, "postdeploy must not start a nested azd provision"
    assert "the app's own sign-in sends browsers to Entra ID" in result.stdout and "WARNING" not in result.stdout
    # A second run reuses the keys (no rotation by accident) and still syncs Key Vault.
    fake("postdeploy.sh", **{**POSTDEPLOY_ENV, "DEPLOY_PLAYBOOKS": "true"})
    assert calls(fake.state).count("keys set") == 2


def test_postdeploy_warns_when_sign_in_is_not_in_front_of_the_app(fake):
    easy = {**POSTDEPLOY_ENV, "SIGN_IN_MODE": "easyauth"}
    result = fake("postdeploy.sh", FAKE_AUTH_STATUS="404", **easy)
    assert result.returncode == 0 and "WARNING" in result.stdout and "not in front of" in result.stdout
    assert "App Service Authentication answers" in fake("postdeploy.sh", FAKE_AUTH_STATUS="401", **easy).stdout


def test_postdeploy_checks_the_apps_own_sign_in(fake):
    broken = fake("postdeploy.sh", FAKE_LOGIN="500 ", **POSTDEPLOY_ENV)
    assert broken.returncode == 0 and "WARNING" in broken.stdout and "answered '500'" in broken.stdout
    both = fake("postdeploy.sh", FAKE_AUTH_STATUS="401", **POSTDEPLOY_ENV)
    assert "App Service Authentication answers too" in both.stdout and "--enabled false" in both.stdout


def test_predown_resets_deploy_playbooks(fake):
    assert fake("predown.sh").returncode == 0
    assert azd_env(fake.state)["DEPLOY_PLAYBOOKS"] == "false"
