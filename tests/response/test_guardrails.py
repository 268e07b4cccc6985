"""The guardrail rules, the run's answer rules and the address rule, on their own."""

from __future__ import annotations

import pytest

from core.audit import AuditEntry
from core.errors import BadRequest, ConfigurationError
from core.settings import Settings
from response.guardrails import BlastRadiusExceeded, Guardrails, refusal_message
from response.ipblock import not_blockable
from response.run import parse_flag


def guard(**env: str) -> Guardrails:
    return Guardrails.from_settings(Settings.from_env(env))


def test_protected_machines_match_names_patterns_short_names_ids_and_tags():
    rules = guard(PROTECTED_MACHINES="DC01.corp.contoso.com, srv-*, 0123abcd, tag:Tier0")
    assert rules.machine_rule("dc01.CORP.contoso.com") == "dc01.corp.contoso.com"
    assert rules.machine_rule("srv-app-07.corp.contoso.com") == "srv-*"  # the short name matches the pattern
    assert rules.machine_rule("ws-1", "0123ABCD") == "0123abcd"
    assert rules.machine_rule("pki-01.corp.contoso.com", tags=["tier0"]) == "tag:tier0"
    assert rules.machine_rule("dc01") is None  # a bare name is checked again once Defender names the machine
    assert rules.machine_rule("ws-dc01.corp.contoso.com", tags=["Tier1"]) is None  # never a substring match
    assert rules.machine_rule(None, "") is None


def test_protected_accounts():
    rules = guard(PROTECTED_ACCOUNTS="breakglass@contoso.com;*-admin@contoso.com,b1a2c3d4-e5f6-4789-8abc-def012345678")
    assert rules.account_rule("BreakGlass@Contoso.com") == "breakglass@contoso.com"
    assert rules.account_rule("ops-admin@contoso.com") == "*-admin@contoso.com"
    assert rules.account_rule(None, "B1A2C3D4-E5F6-4789-8ABC-DEF012345678") is not None
    assert rules.account_rule("admin@contoso.com", "breakglass") is None


def test_blast_radius_and_dry_run():
    rules = guard(RESPONSE_MAX_TARGETS="2")
    rules.check_radius(2, "machines")
    with pytest.raises(BlastRadiusExceeded, match="3 machines in one call exceed RESPONSE_MAX_TARGETS=2"):
        rules.check_radius(3, "machines")
    assert guard().dry_run is False and guard(DRY_RUN="true").dry_run is True
    assert Guardrails.from_settings(Settings.from_env({}), dry_run_requested=True).dry_run is True
    with pytest.raises(ConfigurationError, match="RESPONSE_MAX_TARGETS"):
        guard(RESPONSE_MAX_TARGETS="0")


def test_refusal_message_only_when_everything_was_refused():
    refused = [AuditEntry("a", "refused", "protected"), AuditEntry("b", "refused", "unknown")]
    assert refusal_message(refused) == "nothing was done: a: protected; b: unknown"
    assert refusal_message([*refused, AuditEntry("c", "done")]) is None
    assert refusal_message([]) is None


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("true", True), ("1", True),
                                                  ("False", False), ("no", False)])
def test_parse_flag(value, expected):
    assert parse_flag(value, "dryRun") is expected


def test_parse_flag_names_the_parameter():
    with pytest.raises(BadRequest, match="dryRun"):
        parse_flag("perhaps", "dryRun")


@pytest.mark.parametrize(("address", "blockable"), [
    ("203.0.113.45", True), ("2001:db8::1", True), ("8.8.8.8", True), ("2606:4700::1111", True),
    ("10.0.0.5", False), ("192.168.1.1", False), ("127.0.0.1", False), ("169.254.1.1", False),
    ("100.64.0.1", False), ("224.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("0.0.0.0", False), ("::ffff:10.0.0.5", False), ("::ffff:203.0.113.9", True),
])
def test_only_public_addresses_are_blockable(address, blockable):
    assert (not_blockable(address) is None) is blockable
