"""``make typecheck``, second half: the Logic App workflow definitions in infra/playbooks/, structurally.

What the Logic Apps designer and the ARM deployment would reject, and what a review should catch, checked from
the files (Workflow Definition Language schema reference, "Schema reference guide for trigger and action types",
and "Reference guide to workflow expression functions", Microsoft Learn):

- the definition's keys, its single trigger's type and required inputs;
- every action's type is a WDL action type, its keys are keys that type takes, its required inputs are present
  (Http: method and uri; HttpWebhook: subscribe.method and subscribe.uri; ApiConnection: host.connection.name,
  method and path; ...), and ``runAfter`` names sibling actions with valid statuses;
- every function called in an expression exists in WDL (:data:`FUNCTIONS`), every ``parameters('x')`` is
  declared, and every declared parameter without a default is supplied by infra/app/playbook.bicep;
- every action that sends a key (a ``SecureString`` parameter, or a header such as ``x-functions-key``) hides
  its inputs with ``runtimeConfiguration.secureData``.

It also checks what the registry in infra/main.bicep deploys from those files: each entry as written (the
Microsoft Sentinel incident trigger) and its alert- and entity-trigger variants, which infra/app/playbook.bicep
generates from the same definition with the trigger shapes of infra/playbooks/triggers/ (:func:`deployed_playbooks`
and :func:`variant_definition` build them the same way, for this check, the wiring tests and the local runner).
Every generated variant gets the checks above; a definition that has variants may read its trigger only through the
two expressions the generation translates (:func:`registry_problems`).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tools.bicep_parse import ArrayLit, Expr, ObjectLit, StrLit, parse_file

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "infra" / "playbooks"
PLAYBOOK_BICEP = ROOT / "infra" / "app" / "playbook.bicep"
MAIN_BICEP = ROOT / "infra" / "main.bicep"
TRIGGER_SHAPES = PLAYBOOKS / "triggers"
TRIGGER_KINDS = ("incident", "alert", "entity")
# Functions that read the trigger: a definition with variants may use them only in the translated forms.
TRIGGER_FUNCTIONS = frozenset({"trigger", "triggerbody", "triggeroutputs", "triggerformdatavalue",
                               "triggerformdatamultivalues", "triggermultipartbody"})
# Azure's name limits: a Logic App name (logic-<name>-<13-character resourceToken>) and a deployment name
# ('playbook-<name>', 'automation-<name>-<resourceToken>' in main.bicep).
LOGIC_APP_NAME_MAX, DEPLOYMENT_NAME_MAX, RESOURCE_TOKEN_LENGTH = 80, 64, 13

DEFINITION_KEYS = {"$schema", "contentVersion", "parameters", "triggers", "actions", "outputs", "staticResults"}
ACTION_KEYS = {"type", "kind", "inputs", "runAfter", "runtimeConfiguration", "operationOptions", "limit",
               "metadata", "description", "trackedProperties", "correlation"}
# type -> (extra action keys, required input paths, allowed input keys (None: any))
ACTION_TYPES: dict[str, tuple[set[str], tuple[str, ...], set[str] | None]] = {
    "http": (set(), ("method", "uri"), {"method", "uri", "headers", "queries", "body", "authentication",
                                         "retryPolicy", "cookie"}),
    "httpwebhook": (set(), ("subscribe.method", "subscribe.uri"), {"subscribe", "unsubscribe"}),
    "apiconnection": (set(), ("host.connection.name", "method", "path"),
                      {"host", "method", "path", "body", "queries", "headers", "authentication", "retryPolicy"}),
    "apiconnectionwebhook": (set(), ("host.connection.name", "path"),
                             {"host", "path", "body", "queries", "headers", "authentication", "retryPolicy"}),
    "if": ({"expression", "actions", "else"}, (), None),
    "switch": ({"expression", "cases", "default"}, (), None),
    "scope": ({"actions"}, (), None),
    "foreach": ({"foreach", "actions"}, (), None),
    "until": ({"expression", "actions"}, (), None),
    "compose": (set(), (), None),
    "parsejson": (set(), ("content", "schema"), {"content", "schema"}),
    "query": (set(), ("from", "where"), {"from", "where"}),
    "select": (set(), ("from", "select"), {"from", "select"}),
    "table": (set(), ("from", "format"), {"from", "format", "columns"}),
    "join": (set(), ("from", "joinWith"), {"from", "joinWith"}),
    "terminate": (set(), ("runStatus",), {"runStatus", "runError"}),
    "initializevariable": (set(), ("variables",), {"variables"}),
    "setvariable": (set(), ("name", "value"), {"name", "value"}),
    "incrementvariable": (set(), ("name",), {"name", "value"}),
    "decrementvariable": (set(), ("name",), {"name", "value"}),
    "appendtoarrayvariable": (set(), ("name", "value"), {"name", "value"}),
    "appendtostringvariable": (set(), ("name", "value"), {"name", "value"}),
    "response": (set(), ("statusCode",), {"statusCode", "headers", "body", "schema"}),
    "wait": (set(), (), {"interval", "until"}),
    "workflow": (set(), ("host.triggerName", "host.workflow.id"), {"host", "body", "headers", "retryPolicy"}),
}
TRIGGER_TYPES: dict[str, tuple[str, ...]] = {
    "apiconnectionwebhook": ("host.connection.name", "path"),
    "apiconnection": ("host.connection.name", "method", "path"),
    "request": (),
    "recurrence": (),
    "http": ("method", "uri"),
    "httpwebhook": ("subscribe.method", "subscribe.uri"),
}
RUN_AFTER = {"Succeeded", "Failed", "Skipped", "TimedOut"}
# Every function of the Workflow Definition Language expression reference (lower case).
FUNCTIONS = frozenset("""
action actions actionbody actionoutputs add addday addhours addminutes addproperty addseconds addtotime and array
base64 base64tobinary base64tostring binary body bool chunk coalesce concat contains convertfromutc converttimezone
converttoutc createarray datauri datauritobinary datauritostring dateadd datedifference dayofmonth dayofweek
dayofyear decimal decodebase64 decodedatauri decodeuricomponent div empty encodebase64 encodeuricomponent
endswith equals first float formatdatetime formatnumber formdatamultivalues formdatavalue getfuturetime
getpasttime greater greaterorequals guid if indexof int intersection isfloat isint item items iterationindexes
join json last lastindexof length less lessorequals listcallbackurl max min mod mul multipartbody not nthindexof
or outputs parameters parsedatetime rand range removeproperty replace result reverse setproperty skip slice sort
split startofday startofhour startofmonth startswith string sub substring subtractfromtime take ticks tolower
toupper trigger triggerbody triggerformdatamultivalues triggerformdatavalue triggermultipartbody triggeroutputs
trim union uribbase uricomponent uricomponenttobinary uricomponenttostring urihost uripath uripathandquery uriport
uriquery urischeme utcnow variables workflow xml xpath
""".split()) | {"uribase"}
SECRET_HEADERS = re.compile(r"^(x-functions-key|authorization|x-api-key|api-key|ocp-apim-subscription-key)$", re.I)


def _expressions(value: Any) -> Iterator[str]:
    """Every expression in a JSON value: '@expr' strings and each '@{...}' inside other strings."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _expressions(key)
            yield from _expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _expressions(item)
    elif isinstance(value, str):
        if value.startswith("@@"):
            return
        if value.startswith("@") and not value.startswith("@{"):
            yield value[1:]
            return
        i = 0
        while (start := value.find("@{", i)) >= 0:
            depth, j = 1, start + 2
            while j < len(value) and depth:
                if value[j] == "'":
                    j = value.find("'", j + 1)
                    if j < 0:
                        break
                depth += {"{": 1, "}": -1}.get(value[j], 0)
                j += 1
            yield value[start + 2:j - 1]
            i = j


_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_STRING = re.compile(r"'(?:[^']|'')*'")
_PARAMETER = re.compile(r"parameters\(\s*'((?:[^']|'')*)'\s*\)", re.I)


def called_functions(expression: str) -> list[str]:
    return _CALL.findall(_STRING.sub("''", expression))


def _get(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _object_keys(value: object) -> set[str]:
    return {prop.key for prop in value.props} if isinstance(value, ObjectLit) else set()


def supplied_parameters(playbook: str | None = None, bicep: Path = PLAYBOOK_BICEP, main: Path = MAIN_BICEP) -> set[str]:
    """What infra/ gives a playbook's parameters: ``baseParameters`` of infra/app/playbook.bicep, plus the
    ``parameters`` of the playbook's entry in main.bicep's registry (``playbook`` = its file name)."""
    supplied: set[str] = set()
    for decl in parse_file(bicep).of("var"):
        if decl.name == "baseParameters":
            supplied |= _object_keys(decl.value)
    if playbook is not None:
        for decl in parse_file(main).of("var"):
            if decl.name == "playbooks" and isinstance(decl.value, ArrayLit):
                for entry in decl.value.items:
                    definition = entry.get("definition") if isinstance(entry, ObjectLit) else None
                    if isinstance(definition, Expr) and f"playbooks/{playbook}'" in definition.text:
                        supplied |= _object_keys(entry.get("parameters"))
    return supplied


class PlaybookChecker:
    def __init__(self, name: str, definition: Any, supplied: set[str]) -> None:
        self.name = name
        self.definition = definition
        self.supplied = supplied
        self.problems: list[str] = []
        self.secure_parameters: set[str] = set()

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.name}: {where}: {message}")

    def check(self) -> list[str]:
        d = self.definition
        if not isinstance(d, dict):
            self.problem("(file)", "not a JSON object")
            return self.problems
        for key in set(d) - DEFINITION_KEYS:
            self.problem(key, "not a key of a workflow definition")
        if "workflowdefinition.json" not in str(d.get("$schema", "")):
            self.problem("$schema", "not the workflow definition schema")
        self.check_parameters(d.get("parameters") or {})
        triggers = d.get("triggers") or {}
        if not isinstance(triggers, dict) or len(triggers) != 1:
            self.problem("triggers", "a playbook has exactly one trigger")
        else:
            for name, trigger in triggers.items():
                self.check_trigger(name, trigger)
        actions = d.get("actions")
        if not isinstance(actions, dict) or not actions:
            self.problem("actions", "no actions")
        else:
            self.check_scope(actions, "actions")
        for expression in _expressions(d):
            for function in called_functions(expression):
                if function.lower() not in FUNCTIONS:
                    self.problem("expression", f"{function}() is not a workflow expression function: {expression!r}")
            for parameter in _PARAMETER.findall(expression):
                if parameter not in (d.get("parameters") or {}):
                    self.problem("expression", f"parameters({parameter!r}) is not declared")
        return self.problems

    def check_parameters(self, parameters: dict) -> None:
        types = {"string", "securestring", "int", "float", "bool", "array", "object", "secureobject"}
        for name, spec in parameters.items():
            kind = str((spec or {}).get("type", "")).lower()
            if kind not in types:
                self.problem(f"parameters.{name}", f"type {spec.get('type')!r} is not a parameter type")
            if kind.startswith("secure"):
                self.secure_parameters.add(name)
            if "defaultValue" not in spec and name != "$connections" and name not in self.supplied:
                self.problem(f"parameters.{name}", "no defaultValue and infra/app/playbook.bicep does not supply it")
        for name in self.supplied - set(parameters):
            self.problem("parameters", f"infra/ supplies {name!r}, which the definition does not declare (ARM "
                                       "rejects the deployment)")

    def check_trigger(self, name: str, trigger: dict) -> None:
        kind = str(trigger.get("type", "")).lower()
        if kind not in TRIGGER_TYPES:
            self.problem(f"triggers.{name}", f"type {trigger.get('type')!r} is not a trigger type")
            return
        for path in TRIGGER_TYPES[kind]:
            if _get(trigger.get("inputs"), path) is None:
                self.problem(f"triggers.{name}", f"inputs.{path} is required")

    def check_scope(self, actions: dict, where: str) -> None:
        for name, action in actions.items():
            at = f"{where}.{name}"
            if not isinstance(action, dict):
                self.problem(at, "not an object")
                continue
            kind = str(action.get("type", "")).lower()
            if kind not in ACTION_TYPES:
                self.problem(at, f"type {action.get('type')!r} is not a workflow action type")
                continue
            extra, required, inputs_allowed = ACTION_TYPES[kind]
            for key in set(action) - ACTION_KEYS - extra:
                self.problem(at, f"{key!r} is not a key of a {action['type']} action")
            inputs = action.get("inputs")
            for path in required:
                if _get(inputs, path) is None:
                    self.problem(at, f"inputs.{path} is required for {action['type']}")
            if inputs_allowed is not None and isinstance(inputs, dict):
                for key in set(inputs) - inputs_allowed:
                    self.problem(at, f"inputs.{key} is not an input of {action['type']}")
                if kind == "httpwebhook":
                    for part in ("subscribe", "unsubscribe"):
                        request = inputs.get(part)
                        if isinstance(request, dict):
                            allowed = ACTION_TYPES["http"][2]
                            for key in set(request) - allowed:
                                self.problem(at, f"inputs.{part}.{key} is not an input of an HTTP request")
            for before, statuses in (action.get("runAfter") or {}).items():
                if before not in actions or before == name:
                    self.problem(at, f"runAfter names {before!r}, not a sibling action")
                if not isinstance(statuses, list) or not statuses or not set(statuses) <= RUN_AFTER:
                    self.problem(at, f"runAfter {before!r} statuses {statuses!r} not among {sorted(RUN_AFTER)}")
            if kind in ("http", "httpwebhook", "apiconnection") and self.sends_key(action):
                secured = (action.get("runtimeConfiguration") or {}).get("secureData", {}).get("properties", [])
                if "inputs" not in secured:
                    self.problem(at, "sends a key: runtimeConfiguration.secureData.properties must hold 'inputs'")
            for nested in ("actions",):
                if isinstance(action.get(nested), dict):
                    self.check_scope(action[nested], f"{at}.{nested}")
            if isinstance(action.get("else"), dict):
                for key in set(action["else"]) - {"actions"}:
                    self.problem(f"{at}.else", f"{key!r} is not a key of else")
                self.check_scope(action["else"].get("actions") or {}, f"{at}.else.actions")
            for case, body in (action.get("cases") or {}).items():
                self.check_scope((body or {}).get("actions") or {}, f"{at}.cases.{case}")
            if isinstance(action.get("default"), dict):
                self.check_scope(action["default"].get("actions") or {}, f"{at}.default")
        roots = [n for n, a in actions.items() if isinstance(a, dict) and not a.get("runAfter")]
        if actions and not roots:
            self.problem(where, "every action waits for another: nothing would run")

    def sends_key(self, action: dict) -> bool:
        text = json.dumps(action)
        if any(f"parameters('{name}')" in text for name in self.secure_parameters):
            return True
        inputs = action.get("inputs") or {}
        requests = [inputs, inputs.get("subscribe") or {}, inputs.get("unsubscribe") or {}]
        return any(SECRET_HEADERS.match(h) for r in requests for h in (r.get("headers") or {}))


def check_definition(name: str, definition: Any, supplied: set[str] | None = None) -> list[str]:
    return PlaybookChecker(name, definition, supplied_parameters(name) if supplied is None else supplied).check()


def check_all(directory: Path = PLAYBOOKS) -> tuple[int, list[str]]:
    files = sorted(directory.glob("*.json"))
    problems: list[str] = []
    for path in files:
        problems += check_definition(path.name, json.loads(path.read_text(encoding="utf-8")))
    return len(files), problems


# ====================================================================================================
# The registry's variants: what infra/main.bicep and infra/app/playbook.bicep deploy
# ====================================================================================================

@cache
def trigger_shapes(directory: Path = TRIGGER_SHAPES) -> dict[str, dict]:
    """infra/playbooks/triggers/<kind>.json: the trigger, the actions before the definition's, and the expressions."""
    return {kind: json.loads((directory / f"{kind}.json").read_text(encoding="utf-8")) for kind in TRIGGER_KINDS}


@dataclass(frozen=True)
class RegistryEntry:
    """One entry of ``var playbooks`` in infra/main.bicep."""

    name: str
    file: str                       # infra/playbooks/<file>
    run_on: tuple[str, ...]
    alert: bool
    alert_run_on: tuple[str, ...]
    entities: tuple[str, ...]


@dataclass(frozen=True)
class Deployed:
    """One Logic App the registry deploys (an element of ``deployedPlaybooks``)."""

    name: str
    file: str
    trigger: str                    # incident | alert | entity
    entity_type: str
    triggers_on: str                # what its automation rules trigger on: Incidents, Alerts, or '' (none)
    run_on: tuple[str, ...]

    def definition(self) -> dict:
        """The workflow definition deployed for this Logic App (generated for the alert and entity triggers)."""
        return variant_definition(load_definition(self.file), self.trigger, self.entity_type)


def load_definition(file: str) -> dict:
    return json.loads((PLAYBOOKS / file).read_text(encoding="utf-8"))


def _strings(value: object) -> tuple[str, ...]:
    items = value.items if isinstance(value, ArrayLit) else []
    return tuple(item.value for item in items if isinstance(item, StrLit) and item.value is not None)


def registry(main: Path = MAIN_BICEP) -> list[RegistryEntry]:
    """The entries of main.bicep's ``var playbooks``, in order."""
    entries = []
    for decl in parse_file(main).of("var"):
        if decl.name != "playbooks" or not isinstance(decl.value, ArrayLit):
            continue
        for item in decl.value.items:
            if not isinstance(item, ObjectLit):
                continue
            name, definition, alert = item.get("name"), item.get("definition"), item.get("alert")
            match = re.search(r"loadJsonContent\('playbooks/([^']+)'\)", definition.text) \
                if isinstance(definition, Expr) else None
            entries.append(RegistryEntry(
                name=name.value if isinstance(name, StrLit) and name.value else "",
                file=match.group(1) if match else "",
                run_on=_strings(item.get("runOn")),
                alert=isinstance(alert, Expr) and alert.text == "true",
                alert_run_on=_strings(item.get("alertRunOn")),
                entities=_strings(item.get("entities")),
            ))
    return entries


def deployed_playbooks(main: Path = MAIN_BICEP) -> list[Deployed]:
    """``deployedPlaybooks`` of main.bicep: per entry, itself, its alert variant, then one entity variant per type."""
    deployed = []
    for entry in registry(main):
        deployed.append(Deployed(entry.name, entry.file, "incident", "", "Incidents", entry.run_on))
        if entry.alert:
            deployed.append(Deployed(f"{entry.name}-alert", entry.file, "alert", "", "Alerts", entry.alert_run_on))
        deployed += [Deployed(f"{entry.name}-entity-{kind.lower()}", entry.file, "entity", kind, "", ())
                     for kind in entry.entities]
    return deployed


def deployed(name: str) -> Deployed:
    """The deployed playbook called ``name`` (e.g. 'enrichment-ip-reputation-entity-ip')."""
    for playbook in deployed_playbooks():
        if playbook.name == name:
            return playbook
    raise KeyError(f"the registry in infra/main.bicep deploys no playbook named {name!r}")


def variant_definition(definition: dict, trigger: str, entity_type: str = "",
                       shapes: dict[str, dict] | None = None) -> dict:
    """What infra/app/playbook.bicep deploys for ``trigger`` (its ``variantDefinition``), built the same way."""
    if trigger == "incident":
        return copy.deepcopy(definition)
    shapes = shapes or trigger_shapes()
    shape, incident = shapes[trigger], shapes["incident"]
    # string() of ARM serialises compactly without escaping quotes' neighbours: the replacements match alike.
    text = json.dumps(definition["actions"], separators=(",", ":"), ensure_ascii=False)
    text = text.replace(f'"{incident["body"]}"', f'"{shape["body"]}"').replace(incident["incidentArmId"],
                                                                               shape["incidentArmId"])
    actions = json.loads(text)
    if shape["scope"]:
        actions = {**copy.deepcopy(shape["actions"]),
                   shape["scope"]: {"type": "Scope", "runAfter": copy.deepcopy(shape["scopeRunAfter"]),
                                    "actions": actions}}
    return {
        "$schema": definition["$schema"],
        "contentVersion": definition["contentVersion"],
        "parameters": copy.deepcopy(definition["parameters"]),
        "triggers": json.loads(json.dumps(shape["triggers"]).replace("{entityType}", entity_type)),
        "actions": actions,
        "outputs": copy.deepcopy(definition.get("outputs") or {}),
    }


def _trigger_reads(value: Any, body: str, incident_arm_id: str) -> Iterator[str]:
    """Expressions that read the trigger other than as the whole body or the incident's ARM id."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _trigger_reads(item, body, incident_arm_id)
    elif isinstance(value, list):
        for item in value:
            yield from _trigger_reads(item, body, incident_arm_id)
    elif isinstance(value, str) and value != body:
        for expression in _expressions(value):
            if {f.lower() for f in called_functions(expression.replace(incident_arm_id, ""))} & TRIGGER_FUNCTIONS:
                yield expression


def registry_problems(main: Path = MAIN_BICEP) -> list[str]:
    """What would make the registry deploy a variant that does not do what its definition does."""
    problems: list[str] = []
    shapes = trigger_shapes()
    incident, kinds = shapes["incident"], shapes["entity"]["entityKinds"]
    entries = registry(main)
    if not entries:
        return ["infra/main.bicep: no `var playbooks` registry"]
    for entry in entries:
        where = f"registry entry {entry.name or '?'}"
        if not entry.file or not (PLAYBOOKS / entry.file).is_file():
            problems.append(f"{where}: its definition is not a file of infra/playbooks/")
            continue
        definition = load_definition(entry.file)
        if definition.get("triggers") != incident["triggers"]:
            problems.append(f"{where}: the definition's trigger is not the incident trigger of "
                            "infra/playbooks/triggers/incident.json, which the variants are generated from")
        for event in set(entry.run_on) - {"Created", "Updated"}:
            problems.append(f"{where}: runOn {event!r} is not an incident event (Created, Updated)")
        for event in set(entry.alert_run_on) - {"Created"}:
            problems.append(f"{where}: alertRunOn {event!r} is not an alert event (Created)")
        if entry.alert_run_on and not entry.alert:
            problems.append(f"{where}: alertRunOn without alert: true")
        for kind in entry.entities:
            if kind not in kinds:
                problems.append(f"{where}: entity type {kind!r} is not one the entity trigger is modelled for "
                                f"({', '.join(kinds)}: infra/playbooks/triggers/entity.json)")
        if entry.alert or entry.entities:
            for expression in _trigger_reads(definition.get("actions"), incident["body"], incident["incidentArmId"]):
                problems.append(f"{where}: {expression!r} reads the trigger in a way the alert and entity variants "
                                f"cannot translate (use {incident['body']!r} or {incident['incidentArmId']!r})")
            taken = set(shapes["alert"]["actions"]) | {shapes["alert"]["scope"]}
            for name in sorted(taken & set(_action_names(definition.get("actions") or {}))):
                problems.append(f"{where}: the action name {name!r} is the alert variant's own")
    names = [playbook.name for playbook in deployed_playbooks(main)]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"two deployed playbooks are named {name!r}")
    for name in names:
        if len(f"logic-{name}-") + RESOURCE_TOKEN_LENGTH > LOGIC_APP_NAME_MAX or \
                len(f"automation-{name}-") + RESOURCE_TOKEN_LENGTH > DEPLOYMENT_NAME_MAX:
            problems.append(f"{name}: too long for Azure's Logic App or deployment names")
    return problems


def _action_names(actions: dict) -> Iterator[str]:
    for name, action in actions.items():
        yield name
        if isinstance(action, dict):
            yield from _action_names(action.get("actions") or {})
            yield from _action_names((action.get("else") or {}).get("actions") or {})


def check_variants(main: Path = MAIN_BICEP) -> tuple[int, list[str]]:
    """The registry's problems, then every generated variant through the same checks as the files."""
    problems = registry_problems(main)
    variants = [playbook for playbook in deployed_playbooks(main) if playbook.trigger != "incident"]
    for playbook in variants:
        if (PLAYBOOKS / playbook.file).is_file():
            problems += check_definition(f"{playbook.name} (generated from {playbook.file})", playbook.definition(),
                                         supplied_parameters(playbook.file))
    return len(variants), problems


def main() -> int:
    count, problems = check_all()
    variants, more = check_variants()
    problems += more
    for problem in problems:
        print(problem)
    print(f"playbook check: {count} workflow definitions, {variants} generated trigger variants, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
