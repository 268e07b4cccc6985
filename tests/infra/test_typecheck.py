"""The offline type check of infra/ (tools/bicep_check.py) and the playbook check (tools/playbook_check.py).

Both must pass on the templates as they are, and each must fail on a typo injected anywhere it claims to check:
every property path of every resource and module call, every action type and action key, runAfter, expression
functions and parameters. The Bicep types live beside the project (../shared/contracts/bicep-types); without
them these tests are skipped, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest

from tools import bicep_check, playbook_check
from tools.bicep_parse import parse

TYPES = bicep_check.types_dir()
if TYPES is None and os.environ.get("CI", "").lower() == "true":  # pragma: no cover - CI only
    raise RuntimeError("CI=true but ../shared/contracts/bicep-types is missing: the type check must not be skipped")
needs_types = pytest.mark.skipif(TYPES is None, reason="shared/contracts/bicep-types not beside the project")
BICEP = bicep_check.bicep_files()
PLAYBOOKS = sorted(playbook_check.PLAYBOOKS.glob("*.json"))
# The alert- and entity-trigger variants the registry generates (infra/app/playbook.bicep), built as it builds them.
VARIANTS = [playbook for playbook in playbook_check.deployed_playbooks() if playbook.trigger != "incident"]


@pytest.fixture(scope="module")
def index():
    return bicep_check.TypeIndex(TYPES)


def check_text(index, path: Path, text: str):
    return bicep_check.check_file(parse(text, path), index)


def with_typo(text: str, line: int, key: str) -> str:
    lines = text.splitlines(keepends=True)
    pattern = re.compile(rf"(?<![\w.$']){re.escape(key)}(?=\s*:)|(?<=')" + re.escape(key) + r"(?='\s*:)")
    new, count = pattern.subn(key + "x", lines[line - 1], count=1)
    assert count == 1, f"cannot find key {key!r} on line {line}: {lines[line - 1]!r}"
    lines[line - 1] = new
    return "".join(lines)


# --- Bicep -------------------------------------------------------------------------------------------

@needs_types
def test_infra_passes_the_type_check(index):
    findings = [str(f) for ctx in bicep_check.check_all(index) for f in ctx.findings]
    assert not findings, "\n".join(findings)


@needs_types
@pytest.mark.parametrize("path", BICEP, ids=lambda p: str(p.relative_to(bicep_check.INFRA)))
def test_a_typo_in_any_checked_property_is_caught(index, path):
    text = path.read_text()
    ctx = check_text(index, path, text)
    keys = sorted(set(ctx.checked))
    assert keys or not parse(text, path).of("resource"), f"{path.name}: nothing was checked"
    missed = []
    for line, key in keys:
        mutated = check_text(index, path, with_typo(text, line, key))
        if not any(f.line == line and f.code in ("BCP037", "BCP035") for f in mutated.findings):
            missed.append(f"{line}:{key}")
    assert not missed, f"{path.name}: typos not caught at {missed}"


@needs_types
def test_enum_read_only_required_scope_and_version_mistakes_are_caught(index):
    api = bicep_check.INFRA / "app" / "api.bicep"
    text = api.read_text()
    cases = {
        "enum value": (text.replace("type: 'UserAssigned'", "type: 'UserAssinged'"), "BCP088"),
        "read-only property": (text.replace("httpsOnly: true", "httpsOnly: true\n    defaultHostName: 'x'"), "BCP073"),
        "api version": (text.replace("Microsoft.Web/serverfarms@2024-04-01", "Microsoft.Web/serverfarms@2024-13-01"),
                        "BCP081"),
        "type of a value": (text.replace("httpsOnly: true", "httpsOnly: 'yes'"), "BCP036"),
    }
    for what, (mutated, code) in cases.items():
        assert mutated != text, what
        codes = {f.code for f in check_text(index, api, mutated).findings}
        assert code in codes, f"{what}: {codes}"
    rbac = bicep_check.INFRA / "app" / "rbac.bicep"
    text = rbac.read_text()
    mutated = text.replace("    principalType: 'ServicePrincipal'\n", "", 1).replace(
        "    principalId: functionPrincipalId\n", "", 1)
    assert "BCP035" in {f.code for f in check_text(index, rbac, mutated).findings}


@needs_types
def test_a_pragma_does_not_hide_an_unexpected_unknown_property(index):
    path = bicep_check.INFRA / "app" / "sentinel-connection.bicep"
    text = path.read_text().replace("displayName: name", "#disable-next-line BCP037\n    displayNam: name")
    assert any(f.code == "BCP037" for f in check_text(index, path, text).findings)
    text = path.read_text().replace("#disable-next-line BCP037\n", "")
    assert sum(f.code == "BCP037" for f in check_text(index, path, text).findings) == 2


def test_missing_types_fail_in_ci_and_are_skipped_otherwise(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("BICEP_TYPES_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    assert bicep_check.main([]) == 1
    monkeypatch.setenv("CI", "false")
    assert bicep_check.main([]) == 0
    assert "skipped" in capsys.readouterr().out


# --- playbooks ---------------------------------------------------------------------------------------

def load(path: Path) -> dict:
    return json.loads(path.read_text())


def problems(name: str, definition: dict) -> list[str]:
    """The check's findings; ``name`` is the file, or a deployed variant's name (checked as its file is)."""
    variants = {playbook.name: playbook.file for playbook in VARIANTS}
    if name in variants:
        return playbook_check.check_definition(name, definition, playbook_check.supplied_parameters(variants[name]))
    return playbook_check.check_definition(name, definition)


def actions_of(definition: dict, scope: str = "actions") -> list[tuple[list, str, dict]]:
    """(path to the action's parent dict, name, action) for every action, nested ones too."""
    found = []

    def walk(container_path: list, actions: dict) -> None:
        for name, action in actions.items():
            found.append((container_path, name, action))
            if isinstance(action.get("actions"), dict):
                walk([*container_path, name, "actions"], action["actions"])
            if isinstance(action.get("else"), dict):
                walk([*container_path, name, "else", "actions"], action["else"].get("actions") or {})

    walk([scope], definition[scope])
    return found


def at(definition: dict, path: list) -> dict:
    for part in path:
        definition = definition[part]
    return definition


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_passes_the_structural_check(path):
    assert problems(path.name, load(path)) == []


@pytest.mark.parametrize("playbook", VARIANTS, ids=lambda p: p.name)
def test_generated_variant_passes_the_structural_check_and_its_typos_are_caught(playbook):
    definition = playbook.definition()
    assert problems(playbook.name, definition) == []
    assert missed_typos(playbook.name, definition) == []
    (name,) = definition["triggers"]
    for key in ("type", "inputs"):
        mutated = copy.deepcopy(definition)
        mutated["triggers"][name][key + "x"] = mutated["triggers"][name].pop(key)
        assert problems(playbook.name, mutated), f"trigger {key}x not caught"


@pytest.mark.parametrize("trigger", ["alert", "entity"])
def test_a_typo_in_a_trigger_shape_is_caught_in_every_variant_built_from_it(trigger):
    shapes = copy.deepcopy(playbook_check.trigger_shapes())
    (shape,) = shapes[trigger]["triggers"].values()
    shape["inputs"]["pathx"] = shape["inputs"].pop("path")
    if trigger == "alert":
        get = shapes["alert"]["actions"]["Alert_-_Get_incident"]
        get["inputs"]["methodx"] = get["inputs"].pop("method")
        shapes["alert"]["scopeRunAfter"] = {"Alert_-_Get_incidentx": ["Succeeded"]}
    for playbook in (p for p in VARIANTS if p.trigger == trigger):
        definition = playbook_check.variant_definition(playbook_check.load_definition(playbook.file), trigger,
                                                       playbook.entity_type, shapes)
        found = " ".join(problems(playbook.name, definition))
        assert "inputs.path is required" in found, playbook.name
        if trigger == "alert":
            assert "inputs.method is required" in found and "'Alert_-_Get_incidentx'" in found, playbook.name


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_a_typo_in_any_action_or_its_keys_is_caught(path):
    assert missed_typos(path.name, load(path)) == []


def missed_typos(name: str, original: dict) -> list[str]:
    """Typos injected into every action (type, keys, input keys, runAfter names) that the check misses."""
    missed = []
    for container, action_name, action in actions_of(original):
        mutations = {"type": lambda a: a.update(type=a["type"] + "x")}
        for key in action:
            mutations[f"key {key}"] = lambda a, k=key: a.__setitem__(k + "x", a.pop(k))
        for key in action.get("inputs") or {} if isinstance(action.get("inputs"), dict) else {}:
            mutations[f"inputs.{key}"] = lambda a, k=key: a["inputs"].__setitem__(k + "x", a["inputs"].pop(k))
        for before in action.get("runAfter") or {}:
            mutations[f"runAfter {before}"] = lambda a, b=before: a["runAfter"].__setitem__(b + "x",
                                                                                          a["runAfter"].pop(b))
        for what, mutate in mutations.items():
            definition = copy.deepcopy(original)
            mutate(at(definition, container)[action_name])
            if not problems(name, definition):
                missed.append(f"{action_name}: {what}")
    return missed


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_expression_functions_parameters_and_secure_inputs_are_checked(path):
    text = path.read_text()
    for function in sorted(set(re.findall(r"(\w+)\(", text)) - {"if"}):
        mutated = json.loads(re.sub(rf"\b{function}\(", f"{function}x(", text))
        assert problems(path.name, mutated), f"{function}x() not caught"
    mutated = json.loads(text.replace("parameters('functionBaseUrl')", "parameters('functionBaseURL')"))
    assert any("not declared" in p for p in problems(path.name, mutated))
    definition = load(path)
    for container, name, action in actions_of(definition):
        if "functionKey" in json.dumps(action) and "runtimeConfiguration" in action:
            stripped = copy.deepcopy(definition)
            del at(stripped, container)[name]["runtimeConfiguration"]
            assert any("secureData" in p for p in problems(path.name, stripped)), name


def test_parameters_without_default_must_be_supplied():
    definition = load(PLAYBOOKS[0])
    definition["parameters"]["newSetting"] = {"type": "String"}
    assert any("newSetting" in p for p in problems("x.json", definition))
