"""``make typecheck``: infra/*.bicep against the official Bicep type definitions, offline (issue 17, item 9).

The Bicep CLI checks a template against the type definitions of Azure/bicep-types-az (and, for the Microsoft
Graph extension, microsoftgraph/msgraph-bicep-types). There is no Bicep CLI on the build machines, so this reads
the same ``types.json`` files (``../shared/contracts/bicep-types/``, see its README) and checks what the CLI
would report for every resource declared in infra/:

- the resource type and API version exist (BCP081), and the deployment scope is one the type allows (BCP135);
- every property set exists (BCP037), is not read-only (BCP073), has the right kind of value and, for a literal
  of a closed enum, an allowed value (BCP036/BCP088); required properties are present (BCP035);
- discriminated objects (``kind``, ``conditionType``, the ``name`` of ``sites/config``) are checked against the
  element their discriminator selects;
- modules: every ``params`` key is a declared parameter, every parameter without a default is given, every
  ``<module>.outputs.<name>`` read exists.

Warnings Microsoft's own templates produce are listed in :data:`EXPECTED_WARNINGS` with their reason and must
carry a ``#disable-next-line BCP037`` in the template; no other pragma silences anything here.
When the type definitions are missing, the check fails under ``CI=true`` and is skipped (with a message) otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tools.bicep_parse import ArrayLit, BicepFile, Declaration, Expr, If, Loop, ObjectLit, StrLit, parse_file

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

READ_ONLY, REQUIRED = 2, 1
SCOPES = {"tenant": 1, "managementGroup": 2, "subscription": 4, "resourceGroup": 8, "extension": 16}
# Keys of a resource body that belong to the Bicep language, not to the resource type.
LANGUAGE_KEYS = frozenset({"scope", "parent", "dependsOn"})

# (resource type @ api version, property path) -> why the template sets a property its type does not list.
EXPECTED_WARNINGS: dict[tuple[str, str], str] = {
    ("microsoft.web/connections@2016-06-01", "kind"):
        "Microsoft's own Sentinel playbook templates set kind 'V1' on the azuresentinel connection; the 2016-06-01 "
        "type (generated from a spec that predates it) does not list it, and ARM accepts it.",
    ("microsoft.web/connections@2016-06-01", "properties.parameterValueType"):
        "'Alternative' makes the azuresentinel connection a managed-identity connection, as Microsoft's Sentinel "
        "playbook templates do; the 2016-06-01 type does not list it, and ARM accepts it.",
}


def types_dir() -> Path | None:
    """``BICEP_TYPES_DIR``, else the first ``shared/contracts/bicep-types`` beside the project or an ancestor."""
    if os.environ.get("BICEP_TYPES_DIR"):
        return Path(os.environ["BICEP_TYPES_DIR"])
    for parent in ROOT.parents:
        candidate = parent / "shared" / "contracts" / "bicep-types"
        if candidate.is_dir():
            return candidate
    return None


# ====================================================================================================
# Type definitions
# ====================================================================================================

class TypeIndex:
    """Every ResourceType of every ``types.json`` under a directory, by lower-case ``Namespace/type@version``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resources: dict[str, tuple[list, dict]] = {}
        files = sorted(root.rglob("types.json"))
        if not files:
            raise FileNotFoundError(f"no types.json under {root}")
        for path in files:
            types = json.loads(path.read_text(encoding="utf-8"))
            for entry in types:
                if entry.get("$type") == "ResourceType":
                    self.resources[entry["name"].lower()] = (types, entry)

    def resource(self, name: str) -> tuple[list, dict] | None:
        return self.resources.get(name.lower())


def deref(types: list, ref: dict) -> dict:
    return types[int(ref["$ref"].rsplit("/", 1)[1])]


# ====================================================================================================
# Findings
# ====================================================================================================

@dataclass(frozen=True)
class Finding:
    file: Path
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        try:
            where = self.file.relative_to(ROOT)
        except ValueError:
            where = self.file
        return f"{where}:{self.line}: {self.code} {self.message}"


@dataclass
class Context:
    file: BicepFile
    index: TypeIndex
    resource: str = ""
    findings: list[Finding] = field(default_factory=list)
    checked: list[tuple[int, str]] = field(default_factory=list)  # (line, key) of every key checked against a type

    def report(self, line: int, code: str, message: str) -> None:
        self.findings.append(Finding(self.file.path, line, code, message))


# ====================================================================================================
# Values against types
# ====================================================================================================

def _unwrap(value: object) -> object:
    while isinstance(value, (If, Loop)):
        value = value.body
    return value


def _literals(types: list, union: dict) -> tuple[set[str], bool]:
    """The string literal values of a union, and whether it also admits any string (an open enum)."""
    values, open_ = set(), False
    for ref in union["elements"]:
        element = deref(types, ref)
        kind = element["$type"]
        if kind == "StringLiteralType":
            values.add(element["value"])
        elif kind in ("StringType", "AnyType"):
            open_ = True
        elif kind == "UnionType":
            inner, inner_open = _literals(types, element)
            values |= inner
            open_ |= inner_open
        else:
            open_ = True  # a union with objects or numbers: not a plain enum
    return values, open_


def check_value(ctx: Context, types: list, type_: dict, value: object, path: str, line: int) -> None:
    value = _unwrap(value)
    if isinstance(value, Expr) or value is None:
        return
    kind = type_["$type"]
    if kind == "AnyType":
        return
    if kind == "UnionType":
        check_union(ctx, types, type_, value, path, line)
        return
    if isinstance(value, StrLit):
        if kind == "StringLiteralType":
            if value.value is not None and value.value != type_["value"]:
                ctx.report(line, "BCP036", f"{ctx.resource} {path}: {value.value!r} is not {type_['value']!r}")
        elif kind not in ("StringType",):
            ctx.report(line, "BCP036", f"{ctx.resource} {path}: a string where the type expects {kind}")
        return
    if isinstance(value, ObjectLit):
        if kind == "ObjectType":
            check_object(ctx, types, type_, value, path)
        elif kind == "DiscriminatedObjectType":
            check_discriminated(ctx, types, type_, value, path)
        else:
            ctx.report(value.line or line, "BCP036", f"{ctx.resource} {path}: an object where the type expects {kind}")
        return
    if isinstance(value, ArrayLit):
        if kind != "ArrayType":
            ctx.report(line, "BCP036", f"{ctx.resource} {path}: an array where the type expects {kind}")
            return
        item = deref(types, type_["itemType"])
        for n, element in enumerate(value.items):
            check_value(ctx, types, item, element, f"{path}[{n}]", line)


def check_union(ctx: Context, types: list, union: dict, value: object, path: str, line: int) -> None:
    if isinstance(value, StrLit):
        allowed, open_ = _literals(types, union)
        if not open_ and value.value is not None and value.value not in allowed:
            ctx.report(line, "BCP088", f"{ctx.resource} {path}: {value.value!r} is not one of {sorted(allowed)}")
        return
    candidates = [deref(types, ref) for ref in union["elements"]]
    best: list[Finding] | None = None
    for candidate in candidates:
        trial = Context(ctx.file, ctx.index, ctx.resource)
        check_value(trial, types, candidate, value, path, line)
        if best is None or len(trial.findings) < len(best):
            best, checked = trial.findings, trial.checked
        if not trial.findings:
            break
    ctx.findings += best or []
    ctx.checked += checked if best is not None else []


def check_object(ctx: Context, types: list, object_type: dict, obj: ObjectLit, path: str,
                 properties: dict | None = None, skip: frozenset[str] = frozenset()) -> None:
    properties = object_type.get("properties", {}) if properties is None else properties
    additional = object_type.get("additionalProperties")
    for prop in obj.props:
        if prop.key in skip:
            continue
        where = f"{path}.{prop.key}" if path else prop.key
        spec = properties.get(prop.key)
        if spec is None:
            if additional is not None:
                check_value(ctx, types, deref(types, additional), prop.value, where, prop.line)
                continue
            if "${" in prop.key:
                continue  # a computed key: only known at deployment
            reason = EXPECTED_WARNINGS.get((ctx.resource.lower(), where))
            if reason is not None:
                if not ctx.file.suppressed(prop.line, "BCP037"):
                    ctx.report(prop.line, "BCP037", f"{ctx.resource} {where}: expected warning without its "
                                                    f"'#disable-next-line BCP037' ({reason})")
                continue
            known = ", ".join(sorted(properties)) or "none"
            ctx.report(prop.line, "BCP037", f"{ctx.resource} {where}: not a property of the type (known: {known})")
            continue
        ctx.checked.append((prop.line, prop.key))
        if spec["flags"] & READ_ONLY:
            ctx.report(prop.line, "BCP073", f"{ctx.resource} {where}: read-only, must not be set")
            continue
        check_value(ctx, types, deref(types, spec["type"]), prop.value, where, prop.line)
    if not obj.spread:
        present = {prop.key for prop in obj.props}
        for name, spec in properties.items():
            if spec["flags"] & REQUIRED and not spec["flags"] & READ_ONLY and name not in present and name not in skip:
                ctx.report(obj.line, "BCP035", f"{ctx.resource} {path or '(body)'}: required property {name!r} missing")


def check_discriminated(ctx: Context, types: list, type_: dict, obj: ObjectLit, path: str,
                        skip: frozenset[str] = frozenset()) -> None:
    discriminator = type_["discriminator"]
    chosen = _unwrap(obj.get(discriminator))
    base = dict(type_.get("baseProperties", {}))
    elements = {key: deref(types, ref) for key, ref in type_["elements"].items()}
    if isinstance(chosen, StrLit) and chosen.value is not None:
        element = elements.get(chosen.value)
        if element is None:
            ctx.report(obj.line, "BCP036", f"{ctx.resource} {path or '(body)'}.{discriminator}: {chosen.value!r} is "
                                           f"not one of {sorted(elements)}")
            return
        check_object(ctx, types, element, obj, path, {**base, **element.get("properties", {})}, skip)
        return
    # The discriminator is only known at deployment: accept what any element accepts.
    merged = dict(base)
    for element in elements.values():
        merged.update(element.get("properties", {}))
    relaxed = {k: {**v, "flags": v["flags"] & ~REQUIRED} for k, v in merged.items()}
    check_object(ctx, types, {"properties": relaxed}, obj, path, relaxed, skip)


# ====================================================================================================
# Declarations
# ====================================================================================================

def _scope_of(file: BicepFile, body: ObjectLit) -> int:
    scope = _unwrap(body.get("scope"))
    if scope is None:
        return SCOPES.get(file.target_scope, 8)
    text = scope.text if isinstance(scope, Expr) else ""
    for call, bit in (("resourceGroup(", 8), ("subscription(", 4), ("managementGroup(", 2), ("tenant(", 1)):
        if text.startswith(call):
            return bit
    return SCOPES["extension"]  # a resource symbol: an extension resource on it


def check_resource(ctx: Context, decl: Declaration, parent_type: str | None = None) -> None:
    type_name = decl.type
    if parent_type is not None:
        base, _, version = parent_type.partition("@")
        child, _, child_version = type_name.partition("@")
        type_name = f"{base}/{child}@{child_version or version}"
    found = ctx.index.resource(type_name)
    if found is None:
        ctx.report(decl.line, "BCP081", f"resource type {type_name} has no type definition in "
                                        f"{ctx.index.root} (unknown type or API version)")
        return
    types, resource_type = found
    body = _unwrap(decl.value)
    if not isinstance(body, ObjectLit):
        return
    ctx.resource = resource_type["name"]
    if type_name.lower().startswith("microsoft.graph/") and not any(
            d.kind == "extension" for d in ctx.file.declarations):
        ctx.report(decl.line, "BCP081", f"{type_name} needs the Microsoft Graph extension ('extension ...')")
    scopes = resource_type.get("readableScopes" if decl.existing else "writableScopes")
    if scopes is not None and parent_type is None:
        scope = _scope_of(ctx.file, body)
        if not scopes & scope:
            ctx.report(decl.line, "BCP135", f"{ctx.resource} cannot be {'read' if decl.existing else 'deployed'} at "
                                            f"scope {scope} (allowed bit set {scopes})")
    body_type = deref(types, resource_type["body"])
    if decl.existing:
        if body.get("name") is None and not any(p.key in ("uniqueName", "appId") for p in body.props):
            ctx.report(decl.line, "BCP035", f"existing {ctx.resource}: no name")
    elif body_type["$type"] == "DiscriminatedObjectType":
        check_discriminated(ctx, types, body_type, body, "", LANGUAGE_KEYS)
    else:
        check_object(ctx, types, body_type, body, "", skip=LANGUAGE_KEYS)
    for child in body.resources:
        check_resource(ctx, child, resource_type["name"])
        ctx.resource = resource_type["name"]


def check_module(ctx: Context, decl: Declaration) -> None:
    target = (ctx.file.path.parent / decl.type).resolve()
    if not target.is_file():
        ctx.report(decl.line, "BCP091", f"module {decl.name}: {decl.type} does not exist")
        return
    module = bicep_file(target)
    params = {d.name: d for d in module.of("param")}
    body = _unwrap(decl.value)
    given = _unwrap(body.get("params")) if isinstance(body, ObjectLit) else None
    if isinstance(given, ObjectLit):
        for prop in given.props:
            ctx.checked.append((prop.line, prop.key))
            if prop.key not in params:
                ctx.report(prop.line, "BCP037", f"module {decl.name}: {decl.type} has no parameter {prop.key!r}")
        if not given.spread:
            supplied = {p.key for p in given.props}
            for name, param in params.items():
                if not param.has_default and name not in supplied:
                    ctx.report(decl.line, "BCP035", f"module {decl.name}: parameter {name!r} of {decl.type} not given")
    outputs = {d.name for d in module.of("output")}
    for match in re.finditer(rf"\b{re.escape(decl.name)}(?:\[[^\]]*\])?\.outputs\.(\w+)", ctx.file.text):
        if match.group(1) not in outputs:
            line = ctx.file.text.count("\n", 0, match.start()) + 1
            ctx.report(line, "BCP053", f"module {decl.name}: {decl.type} has no output {match.group(1)!r}")


@cache
def bicep_file(path: Path) -> BicepFile:
    return parse_file(path)


def check_file(file: BicepFile, index: TypeIndex) -> Context:
    ctx = Context(file, index)
    for decl in file.declarations:
        if decl.kind == "resource":
            check_resource(ctx, decl)
        elif decl.kind == "module":
            check_module(ctx, decl)
    return ctx


def bicep_files(root: Path = INFRA) -> list[Path]:
    return sorted(root.rglob("*.bicep"))


def check_all(index: TypeIndex, files: list[Path] | None = None) -> Iterator[Context]:
    for path in files or bicep_files():
        yield check_file(parse_file(path), index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=Path, default=None, help="bicep-types directory (default: ../shared/...)")
    args = parser.parse_args(argv)
    root = args.types or types_dir()
    if root is None or not root.is_dir():
        message = "bicep type check: the type definitions (shared/contracts/bicep-types) are not beside the project"
        if os.environ.get("CI", "").lower() == "true":
            print(message + ": failing, as CI must", file=sys.stderr)
            return 1
        print(message + ": skipped (set BICEP_TYPES_DIR to run it)")
        return 0
    index = TypeIndex(root)
    findings, checked, files = [], 0, 0
    for ctx in check_all(index):
        findings += ctx.findings
        checked += len(ctx.checked)
        files += 1
    for finding in findings:
        print(finding)
    print(f"bicep type check: {files} files, {checked} properties checked against {len(index.resources)} resource "
          f"types, {len(findings)} problem(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
