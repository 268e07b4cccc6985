"""Every playbook Bicep deploys loads into the local runner and is run by some test: each definition file, and each
alert- and entity-trigger variant the registry generates from one (tools.playbook_check.deployed_playbooks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook
from tools.playbook_check import deployed_playbooks

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((ROOT / "infra" / "playbooks").glob("*.json"))
DEPLOYED = deployed_playbooks()
VARIANTS = [playbook for playbook in DEPLOYED if playbook.trigger != "incident"]


def runs(name: str) -> list[Path]:
    """Tests (outside tests/infra) that run ``name``: a definition file through PlaybookRunner, or a deployed
    playbook by its quoted name through tests.playbook_variants (which builds what Bicep deploys)."""
    found = []
    for test in (ROOT / "tests").rglob("test_*.py"):
        text = test.read_text()
        if test.parent.name == "infra":
            continue
        if (name.endswith(".json") and name in text and "PlaybookRunner" in text) or (
                f'"{name}"' in text and "tests.playbook_variants import" in text):
            found.append(test)
    return found


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_loads_into_the_runner(path):
    # Building the runner checks parameters, action types, runAfter references and every expression.
    with PlaybookRunner(load_playbook(path), bicep_parameters("http://127.0.0.1:1", "key")):
        pass


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_is_run_end_to_end_by_a_test(path):
    incident = [playbook.name for playbook in DEPLOYED if playbook.file == path.name and playbook.trigger == "incident"]
    assert runs(path.name) or any(runs(name) for name in incident), \
        f"no test runs {path.name} through localdev.playbooks.PlaybookRunner"


@pytest.mark.parametrize("playbook", VARIANTS, ids=lambda p: p.name)
def test_generated_variant_loads_into_the_runner(playbook):
    with PlaybookRunner(playbook.definition(), bicep_parameters("http://127.0.0.1:1", "key")):
        pass


@pytest.mark.parametrize("playbook", VARIANTS, ids=lambda p: p.name)
def test_generated_variant_is_run_end_to_end_by_a_test(playbook):
    assert runs(playbook.name), f"no test runs {playbook.name} through tests.playbook_variants"
