"""requirements.txt pins every runtime distribution (issue 17.10), and the tests run against exactly those pins."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pinned() -> dict[str, str]:
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"requirements.txt holds an option: {line}"
        requirement = Requirement(line)
        versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert len(versions) == 1, f"{requirement.name} is not pinned with =="
        found[canonicalize_name(requirement.name)] = versions[0]
    return found


def test_every_runtime_distribution_is_pinned_and_the_direct_ones_come_from_requirements_in():
    pins = pinned()
    direct = {canonicalize_name(Requirement(line).name) for line in (ROOT / "requirements.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert direct and direct <= set(pins), f"requirements.in names not compiled in: {direct - set(pins)}"
    assert len(pins) > 2 * len(direct), "only the direct dependencies are pinned: compile with make requirements"


def test_the_closure_of_the_pins_is_pinned_too():
    pins = pinned()
    missing = []
    for name in pins:
        for spec in metadata.distribution(name).requires or ():
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in pins:
                missing.append(f"{name} -> {requirement.name}")
    assert not missing, f"dependencies resolved at deploy time, not pinned: {missing}"


def test_the_tests_run_against_the_pinned_versions():
    mismatched = {name: (version, metadata.version(name)) for name, version in pinned().items()
                  if metadata.version(name) != version}
    assert not mismatched, f"installed versions differ from requirements.txt (run make install): {mismatched}"


def test_make_refreshes_the_pins():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^requirements:", makefile, re.M) and "pip-compile" in makefile
