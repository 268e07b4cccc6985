import pytest

from core.errors import ConfigurationError
from core.settings import SPECS, Secret, Settings


def test_defaults_are_the_public_clouds():
    settings = Settings.from_env({})
    assert settings["ARM_ENDPOINT"] == "https://management.azure.com"
    assert settings["VIRUSTOTAL_ENDPOINT"] == "https://www.virustotal.com"
    assert settings["DRY_RUN"] is False
    assert settings["VIRUSTOTAL_CACHE_TTL_SECONDS"] == 86400


def test_missing_setting_is_reported_by_name():
    with pytest.raises(ConfigurationError, match="VIRUSTOTAL_API_KEY"):
        Settings.from_env({}).require("VIRUSTOTAL_API_KEY", "ARM_ENDPOINT")


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("HTTP_TIMEOUT_SECONDS", "ten", "whole number"),
    ("DRY_RUN", "maybe", "true or false"),
    ("ARM_ENDPOINT", "management.azure.com", "https URL"),
    ("VIRUSTOTAL_ENDPOINT", "http://vt.example.com", "http only for loopback"),
    ("VIRUSTOTAL_CACHE_TTL_SECONDS", "-1", "negative"),
])
def test_malformed_settings_are_named(name, value, fragment):
    settings = Settings.from_env({name: value})
    assert fragment in settings.problems[name]
    assert settings.report()[name].startswith("invalid")
    with pytest.raises(ConfigurationError, match=name):
        settings[name]


def test_unresolved_key_vault_reference_is_a_named_problem():
    settings = Settings.from_env({"VIRUSTOTAL_API_KEY": "@Microsoft.KeyVault(SecretUri=https://kv/secrets/vt/)"})
    assert "Key Vault" in settings.problems["VIRUSTOTAL_API_KEY"]
    with pytest.raises(ConfigurationError, match="VIRUSTOTAL_API_KEY"):
        settings.require("VIRUSTOTAL_API_KEY")


def test_loopback_http_is_allowed_for_emulators():
    settings = Settings.from_env({"ARM_ENDPOINT": "http://127.0.0.1:5000/", "GRAPH_ENDPOINT": "http://localhost:1"})
    assert settings["ARM_ENDPOINT"] == "http://127.0.0.1:5000"


def test_lists_and_secrets():
    settings = Settings.from_env({"PROTECTED_ACCOUNTS": "BreakGlass@contoso.com; admin@contoso.com,",
                                  "VIRUSTOTAL_API_KEY": "k3y-value"})
    assert settings["PROTECTED_ACCOUNTS"] == frozenset({"breakglass@contoso.com", "admin@contoso.com"})
    key = settings["VIRUSTOTAL_API_KEY"]
    assert isinstance(key, Secret) and key == "k3y-value"
    assert "k3y-value" not in repr(key) and "k3y-value" not in repr(settings.values)


def test_report_never_contains_values():
    env = {spec.name: "https://127.0.0.1/x" if spec.kind == "url" else "1" if spec.kind in ("int", "bool")
           else f"value-of-{spec.name}" for spec in SPECS}
    report = Settings.from_env(env).report()
    assert set(report) == {spec.name for spec in SPECS}
    assert not any("value-of" in state for state in report.values())
