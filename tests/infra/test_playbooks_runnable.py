"""Every playbook Bicep deploys loads into the local runner and is run by some test."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.playbooks import PlaybookRunner, bicep_parameters, load_playbook

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((ROOT / "infra" / "playbooks").glob("*.json"))


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_loads_into_the_runner(path):
    # Building the runner checks parameters, action types, runAfter references and every expression.
    with PlaybookRunner(load_playbook(path), bicep_parameters("http://127.0.0.1:1", "key")):
        pass


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_is_run_end_to_end_by_a_test(path):
    runners = [test for test in (ROOT / "tests").rglob("test_*.py")
               if path.name in test.read_text() and "PlaybookRunner" in test.read_text()
               and test.parent.name != "infra"]
    assert runners, f"no test runs {path.name} through localdev.playbooks.PlaybookRunner"
