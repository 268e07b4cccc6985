"""Docs a newcomer can follow (issue 17.13): the README settings table is generated and in step with
core/settings.py, and docs/deploy.md covers every step a deployment needs."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import SPECS
from tools import settings_table

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = (ROOT / "docs" / "deploy.md").read_text()


def test_readme_settings_table_is_generated_from_core_settings():
    text = settings_table.README.read_text()
    assert settings_table.updated(text) == text, "README settings table is stale: run python -m tools.settings_table"
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", text.split(settings_table.BEGIN)[1].split(settings_table.END)[0],
                        re.M)
    assert listed == [spec.name for spec in SPECS]


# Each step a deployment needs, and a phrase its section must contain.
STEPS = {
    "azd up order without nested azd": "workflows.up",
    "Key Vault after azd down": "createMode: 'recover'",
    "no workspace": "ResourceGroupNotFound",
    "automation rules principal": "SENTINEL_AUTOMATION_PRINCIPAL_ID",
    "sync update rule": "IncidentUpdatedBySource",
    "playbook least privilege": "Microsoft Sentinel Reader",
    "function-level keys": "function-key-servicenow",
    "sign-in": "authsettingsV2",
    "Flex Consumption sign-in finding": "EasyAuth isn't currently supported",
    "Teams Workflows webhook": "Who can trigger the flow",
    "Slack incoming webhook": "Interactivity & Shortcuts",
    "approval mail": "New-ManagementRoleAssignment",
    "Mail.Send switch": "GRANT_MAIL_SEND",
    "Defender portal": "Custom network indicators",
    "alerts": "ALERT_EMAIL",
    "health details": "/api/health/details",
    "pinned requirements": "make requirements",
    "local stack": "make up",
}


def test_deploy_guide_has_a_section_for_each_step():
    missing = [step for step, phrase in STEPS.items() if phrase not in DEPLOY]
    assert not missing, f"docs/deploy.md says nothing about: {missing}"


def test_the_separate_keys_are_described_where_admins_look():
    servicenow = (ROOT / "docs" / "servicenow.md").read_text()
    assert "functionKeys.default" not in servicenow, "docs/servicenow.md still hands out the host key"
    assert "--function-name servicenow_inbound" in servicenow
    assert "--function-name ip_blocklist" in DEPLOY
