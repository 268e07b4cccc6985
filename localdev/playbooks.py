"""Run the Logic App workflow definitions of ``infra/playbooks/`` on this machine.

What Bicep deploys (``infra/app/playbook.bicep`` passes ``definition`` plus the parameters
``$connections``, ``functionBaseUrl`` and ``functionKey``) is what the demo and the tests run:

    runner = PlaybookRunner(load_playbook(path), bicep_parameters(host.url, host.function_key))
    result = runner.run(sample("incident-trigger.json"))
    result.status, result.actions["Enrich_IP_reputation"].outputs["statusCode"], result.timeline

The subset of the Workflow Definition Language that the runner implements, following the
Azure Logic Apps reference (schema reference for triggers and actions, expression reference,
"Handle errors and exceptions"):

* **Trigger**: the definition's single trigger (for the playbooks the ``azuresentinel``
  ``ApiConnectionWebhook``) fires with the body given to :meth:`PlaybookRunner.run`; of its inputs
  (the connector subscription) only ``path`` is evaluated. ``triggerBody()`` is that body,
  ``triggerOutputs()`` is ``{"headers": ..., "body": ...}``. When ``connectors`` holds a stand-in
  for the trigger's connection that knows its triggers (``trigger_problem(path, body)``, e.g.
  :class:`localdev.sentinel_connector.SentinelConnector`), a body that trigger never hands over
  (an incident body to an entity trigger, a Host to the IP entity trigger) raises
  :class:`PlaybookError` instead of running.
* **Ordering**: an action runs when every ``runAfter`` predecessor finished with one of the
  listed statuses (``Succeeded``, ``Failed``, ``Skipped``, ``TimedOut``), else it is ``Skipped``.
  Actions run **one at a time**, in definition order among those that are ready: parallel
  branches of a real run are serialised (results are the same; wall time is not).
* **Run, Scope and If-branch status**: as the engine does, only the branches' last actions count;
  a branch that ends with a ``Skipped`` action takes its predecessor's status; any branch ending
  ``Failed`` or ``TimedOut`` makes the whole ``Failed``. ``Terminate`` sets the run status itself.
* **Http**: ``method``, ``uri``, ``headers``, ``queries``, ``body``. ``retryPolicy`` inside
  ``inputs``: ``exponential`` (``count``, ``interval``, ``minimumInterval`` = PT5S,
  ``maximumInterval`` = P1D; retry *n* waits a random time in
  ``[max(interval*2^(n-2) or 0, min), min(interval*2^(n-1), max)]``), ``fixed``, ``none``;
  without one the *default* policy applies (exponential, 4 retries, 7.5 s steps capped to
  5..45 s). Retried: 408, 429, 5xx and connection failures or time-outs; a ``Retry-After``
  header sets the wait instead. Asynchronous pattern: a final ``202`` with ``Location`` is polled
  with GET (``Retry-After`` or every 20 s; custom headers are not re-sent) until an answer that is
  not 202, within ``limit.timeout`` (default P1D), unless ``operationOptions`` holds
  ``DisableAsyncPattern``. A final answer outside 2xx fails the action.
* **ApiConnection** (a managed connector's action, e.g. the Sentinel connector's "Alert - Get
  incident"): ``host.connection.name`` evaluates to the connection id that ``$connections`` holds;
  the request (``method``, ``path``, ``queries``, ``headers``, ``body``, ``retryPolicy``) goes to the
  local stand-in that ``connectors`` maps that id to (``connectors={connection_id: stand_in}``, the
  stand-in a URL or an object with ``url``), at ``<stand-in url><path>``, with the Http action's
  retries, asynchronous pattern and outputs. A connection without a stand-in fails the action.
* **HttpWebhook**: a loopback callback server (an :class:`~localdev.emulators.base.Emulator`,
  one per runner) gives each action run a unique, signed ``listCallbackUrl()`` that answers 404
  once the action has finished; ``subscribe`` is sent (with its retry
  policy), then the action waits for a POST to that URL (its body becomes ``body('<action>')``)
  up to ``limit.timeout`` (default P1D). On time-out the action is ``TimedOut``. ``unsubscribe``
  (``uri`` or ``url``) is sent when the action finishes, successfully or not, as the webhook
  reference describes.
* **If** (``expression`` as a condition object with ``and``/``or``/``not``/``equals``/``greater``/
  ``greaterOrEquals``/``less``/``lessOrEquals``/``contains``, or an expression that evaluates to a
  boolean; ``actions`` and ``else.actions``), **Scope**, **Compose**, **Terminate** (``runStatus``,
  ``runError``), **InitializeVariable**, **SetVariable**, **IncrementVariable**,
  **AppendToArrayVariable**, **AppendToStringVariable**.
* **Expressions**: ``"@expr"`` gives any JSON value, ``"... @{expr} ..."`` interpolates strings
  (several per string), ``@@`` escapes a leading ``@`` (and ``@@{`` a literal ``@{``). A tokenizer
  and a recursive-descent parser (no ``eval``) handle string literals with ``''`` escapes,
  numbers, ``true``/``false``/``null``, array literals, ``['key']``, ``.key`` and their null-safe
  ``?['key']``/``?.key`` forms, and the functions in :data:`FUNCTIONS` (names are
  case-insensitive, as in Logic Apps). Anything else raises :class:`ExpressionError` naming the
  expression; all expressions of a definition are parsed when the runner is built.
* ``runtimeConfiguration.secureData.properties`` hides ``inputs``/``outputs`` in the recorded
  :class:`ActionResult` (the values still flow to later actions), like the run history does.

All waits (retries, polling intervals, webhook time-outs) are multiplied by ``time_scale`` so
tests run in milliseconds what Azure runs in minutes; :attr:`ActionResult.waits` keeps the
nominal seconds.
"""

from __future__ import annotations

import base64
import email.utils
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

import requests

from localdev.emulators.base import Emulator, Request, Response

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "FUNCTIONS",
    "SECURED",
    "ActionResult",
    "ExpressionContext",
    "ExpressionError",
    "PlaybookError",
    "PlaybookRunner",
    "RetryPolicy",
    "RunResult",
    "bicep_parameters",
    "evaluate",
    "load_playbook",
    "parse_duration",
]

SECURED = "<secured by runtimeConfiguration.secureData>"
STATUSES = ("Succeeded", "Failed", "Skipped", "TimedOut")
RETRY_STATUS_CODES = frozenset({408, 429})
DEFAULT_POLL_INTERVAL = 20.0          # seconds between polls when a 202 carries no Retry-After
DEFAULT_ASYNC_TIMEOUT = "P1D"         # limit.timeout when an action sets none
WORKFLOW_NAME = "local-playbook"


class PlaybookError(Exception):
    """The definition or its parameters cannot be run (found when the runner is built)."""


class ExpressionError(PlaybookError):
    """An expression is malformed, unsupported, or fails to evaluate."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        self.message = message
        self.expression = expression
        super().__init__(f"{message} (in expression {expression!r})" if expression is not None else message)


class _ActionFailure(Exception):
    """Ends the current action as Failed with a Logic Apps style error object."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ====================================================================================================
# Durations, retry policies
# ====================================================================================================

_DURATION = re.compile(
    r"P(?:(?P<Y>\d+(?:\.\d+)?)Y)?(?:(?P<Mo>\d+(?:\.\d+)?)M)?(?:(?P<W>\d+(?:\.\d+)?)W)?(?:(?P<D>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<H>\d+(?:\.\d+)?)H)?(?:(?P<Mi>\d+(?:\.\d+)?)M)?(?:(?P<S>\d+(?:\.\d+)?)S)?)?")
_DURATION_SECONDS = {"Y": 365 * 86400, "Mo": 30 * 86400, "W": 7 * 86400, "D": 86400, "H": 3600, "Mi": 60, "S": 1}


def parse_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration such as ``PT10S``, ``PT1H`` or ``P1D`` (a year is 365 days)."""
    value = text.strip().upper() if isinstance(text, str) else ""
    match = _DURATION.fullmatch(value)
    if not match or value in ("P", "PT") or value.endswith("T"):
        raise PlaybookError(f"{text!r} is not an ISO 8601 duration (for example PT10S, PT1H, P1D)")
    return float(sum(float(v) * _DURATION_SECONDS[k] for k, v in match.groupdict().items() if v))


@dataclass(frozen=True)
class RetryPolicy:
    """A ``retryPolicy`` object; :meth:`delay` gives the nominal wait before retry number ``n``."""

    type: str
    count: int = 0
    interval: float = 0.0
    minimum_interval: float = 5.0
    maximum_interval: float = 86400.0

    @classmethod
    def from_spec(cls, spec: Any) -> RetryPolicy:
        if spec is None:
            return DEFAULT_RETRY_POLICY
        if not isinstance(spec, dict):
            raise PlaybookError(f"retryPolicy must be an object, not {spec!r}")
        kind = str(spec.get("type", "")).lower()
        if kind == "default":
            return DEFAULT_RETRY_POLICY
        if kind == "none":
            return cls("none")
        if kind not in ("fixed", "exponential"):
            raise PlaybookError(f"retryPolicy type {spec.get('type')!r} is not one of default, none, fixed, "
                                "exponential")
        count = spec.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 90:
            raise PlaybookError(f"retryPolicy count must be an integer from 1 to 90, not {count!r}")
        if "interval" not in spec:
            raise PlaybookError(f"a {kind} retryPolicy needs an interval (ISO 8601, for example PT10S)")
        interval = parse_duration(spec["interval"])
        minimum = parse_duration(spec.get("minimumInterval", "PT5S"))
        maximum = parse_duration(spec.get("maximumInterval", "P1D"))
        return cls(kind, count, interval, minimum, maximum)

    def delay(self, retry: int, rng: random.Random) -> float:
        if self.type == "fixed":
            return self.interval
        low = max(0.0 if retry == 1 else self.interval * 2 ** (retry - 2), self.minimum_interval)
        high = max(low, min(self.interval * 2 ** (retry - 1), self.maximum_interval))
        return rng.uniform(low, high)


# "up to 4 retries at exponentially increasing intervals, which scale by 7.5 seconds but are capped
# between 5 and 45 seconds" (Handle errors and exceptions in Azure Logic Apps).
DEFAULT_RETRY_POLICY = RetryPolicy("exponential", 4, 7.5, 5.0, 45.0)


# ====================================================================================================
# Expressions: tokenizer, parser, evaluator
# ====================================================================================================

@dataclass(frozen=True)
class _Token:
    kind: str   # "str", "num", "ident", "punct", "end"
    value: Any
    pos: int


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _ArrayLiteral:
    items: tuple


@dataclass(frozen=True)
class _Call:
    name: str       # lower case
    spelled: str
    args: tuple


@dataclass(frozen=True)
class _Select:
    target: Any
    key: Any
    safe: bool


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "'":
            chars, j = [], i + 1
            while True:
                if j >= n:
                    raise ExpressionError(f"unterminated string literal starting at position {i}", text)
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        chars.append("'")
                        j += 2
                        continue
                    break
                chars.append(text[j])
                j += 1
            tokens.append(_Token("str", "".join(chars), i))
            i = j + 1
        elif c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()
                             and (not tokens or tokens[-1].value in ("(", ",", "["))):
            j = i + 1
            while j < n and text[j].isdigit():
                j += 1
            if j + 1 < n and text[j] == "." and text[j + 1].isdigit():
                j += 1
                while j < n and text[j].isdigit():
                    j += 1
                tokens.append(_Token("num", float(text[i:j]), i))
            else:
                tokens.append(_Token("num", int(text[i:j]), i))
            i = j
        elif c.isalpha() or c in "_$":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_$"):
                j += 1
            tokens.append(_Token("ident", text[i:j], i))
            i = j
        elif c in "()[],.?":
            tokens.append(_Token("punct", c, i))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {c!r} at position {i}", text)
    tokens.append(_Token("end", None, n))
    return tokens


class _Parser:
    """expression := primary ( '?'? ( '[' expression ']' | '.' identifier ) )*
    primary    := string | number | true | false | null | name '(' arguments? ')' | '[' arguments? ']'"""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> Any:
        if self.peek().kind == "end":
            raise ExpressionError("empty expression", self.text)
        node = self.expression()
        token = self.peek()
        if token.kind != "end":
            raise ExpressionError(f"unexpected {self.describe(token)} at position {token.pos}", self.text)
        return node

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, punct: str) -> None:
        token = self.take()
        if token.kind != "punct" or token.value != punct:
            raise ExpressionError(f"expected {punct!r} but found {self.describe(token)} at position {token.pos}",
                                  self.text)

    @staticmethod
    def describe(token: _Token) -> str:
        return "the end of the expression" if token.kind == "end" else repr(token.value)

    def is_punct(self, value: str) -> bool:
        token = self.peek()
        return token.kind == "punct" and token.value == value

    def expression(self) -> Any:
        node = self.primary()
        while True:
            safe = False
            if self.is_punct("?"):
                self.take()
                safe = True
                if not (self.is_punct("[") or self.is_punct(".")):
                    token = self.peek()
                    raise ExpressionError(f"'?' must be followed by '[' or '.', found {self.describe(token)} "
                                          f"at position {token.pos}", self.text)
            if self.is_punct("["):
                self.take()
                key = self.expression()
                self.expect("]")
                node = _Select(node, key, safe)
            elif self.is_punct("."):
                self.take()
                token = self.take()
                if token.kind != "ident":
                    raise ExpressionError(f"expected a property name after '.' at position {token.pos}", self.text)
                node = _Select(node, _Literal(token.value), safe)
            else:
                return node

    def arguments(self, close: str) -> tuple:
        args: list[Any] = []
        if self.is_punct(close):
            self.take()
            return ()
        while True:
            args.append(self.expression())
            if self.is_punct(","):
                self.take()
                continue
            self.expect(close)
            return tuple(args)

    def primary(self) -> Any:
        token = self.take()
        if token.kind in ("str", "num"):
            return _Literal(token.value)
        if token.kind == "punct" and token.value == "[":
            return _ArrayLiteral(self.arguments("]"))
        if token.kind == "ident":
            if self.is_punct("("):
                self.take()
                name = token.value.lower()
                if name not in FUNCTIONS:
                    raise ExpressionError(f"the function {token.value!r} is not supported by the local runner",
                                          self.text)
                args = self.arguments(")")
                _, low, high = FUNCTIONS[name]
                if len(args) < low or (high is not None and len(args) > high):
                    expected = str(low) if low == high else f"{low} to {high}" if high is not None else f"{low}+"
                    raise ExpressionError(f"{token.value}() takes {expected} argument(s), got {len(args)}", self.text)
                return _Call(name, token.value, args)
            keyword = token.value.lower()
            if keyword in ("true", "false", "null"):
                return _Literal({"true": True, "false": False, "null": None}[keyword])
            raise ExpressionError(f"unknown name {token.value!r} at position {token.pos} (functions need '()', "
                                  "strings need single quotes)", self.text)
        raise ExpressionError(f"unexpected {self.describe(token)} at position {token.pos}", self.text)


@lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    return _Parser(text).parse()


@dataclass(frozen=True)
class _Template:
    """A JSON string value compiled once: a literal, one expression, or an interpolation."""

    source: str
    kind: str              # "literal", "expression", "interpolation"
    parts: tuple = ()      # literal -> (text,), expression -> (ast, text), interpolation -> str | (ast, text)

    def evaluate(self, ctx: ExpressionContext) -> Any:
        if self.kind == "literal":
            return self.parts[0]
        if self.kind == "expression":
            ast, text = self.parts
            return _eval(ast, ctx, text)
        out = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _to_string(_eval(part[0], ctx, part[1])))
        return "".join(out)


def _closing_brace(source: str, start: int) -> int:
    """Index of the '}' that closes an interpolation whose expression starts at ``start``."""
    i, in_string = start, False
    while i < len(source):
        c = source[i]
        if in_string:
            if c == "'":
                if i + 1 < len(source) and source[i + 1] == "'":
                    i += 2
                    continue
                in_string = False
        elif c == "'":
            in_string = True
        elif c == "}":
            return i
        i += 1
    raise ExpressionError("unterminated '@{' interpolation (no closing '}')", source)


@lru_cache(maxsize=4096)
def _compile(source: str) -> _Template:
    if source.startswith("@@"):
        return _Template(source, "literal", (source[1:],))
    if source.startswith("@") and not source.startswith("@{"):
        text = source[1:]
        return _Template(source, "expression", (_parse(text), text))
    if "@{" not in source:
        return _Template(source, "literal", (source,))
    parts: list[Any] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        if source.startswith("@@{", i):
            literal.append("@{")
            i += 3
        elif source.startswith("@{", i):
            end = _closing_brace(source, i + 2)
            text = source[i + 2:end]
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((_parse(text), text))
            i = end + 1
        else:
            literal.append(source[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    if all(isinstance(part, str) for part in parts):
        return _Template(source, "literal", ("".join(parts),))
    return _Template(source, "interpolation", tuple(parts))


def _precompile(value: Any) -> None:
    """Parse every expression in a JSON value (raises ExpressionError on the first bad one)."""
    if isinstance(value, str):
        _compile(value)
    elif isinstance(value, dict):
        for item in value.values():
            _precompile(item)
    elif isinstance(value, list):
        for item in value:
            _precompile(item)


@dataclass
class ExpressionContext:
    """What expressions can see: the trigger, parameters, variables, action results, the workflow."""

    trigger_body: Any = None
    trigger_headers: dict[str, str] = field(default_factory=dict)
    trigger_name: str = "manual"
    parameters: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, ActionResult] = field(default_factory=dict)
    declared_actions: frozenset[str] | None = None
    workflow_name: str = WORKFLOW_NAME
    run_name: str = "local-run"
    callback_url: str | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def trigger(self) -> dict:
        return {"name": self.trigger_name, "status": "Succeeded", "code": "OK",
                "outputs": {"headers": dict(self.trigger_headers), "body": self.trigger_body}}

    def action(self, name: Any) -> ActionResult:
        if not isinstance(name, str):
            raise ExpressionError(f"an action name must be a string, not {_type_name(name)}")
        result = self.actions.get(name)
        if result is None:
            if self.declared_actions is not None and name in self.declared_actions:
                raise ExpressionError(f"the action '{name}' has not run yet")
            raise ExpressionError(f"the workflow has no action named '{name}'")
        if result.status in ("Running", "Skipped"):
            raise ExpressionError(f"the action '{name}' is {result.status}: it has no outputs")
        return result


def evaluate(value: Any, context: ExpressionContext | None = None) -> Any:
    """Evaluate the expressions in a JSON value (strings, and recursively objects and arrays)."""
    ctx = context or ExpressionContext()
    if isinstance(value, str):
        return _compile(value).evaluate(ctx)
    if isinstance(value, dict):
        return {key: evaluate(item, ctx) for key, item in value.items()}
    if isinstance(value, list):
        return [evaluate(item, ctx) for item in value]
    return value


def _eval(node: Any, ctx: ExpressionContext, text: str) -> Any:
    try:
        return _eval_node(node, ctx, text)
    except ExpressionError as exc:
        if exc.expression is None:
            raise ExpressionError(exc.message, text) from None
        raise


def _eval_node(node: Any, ctx: ExpressionContext, text: str) -> Any:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _ArrayLiteral):
        return [_eval_node(item, ctx, text) for item in node.items]
    if isinstance(node, _Select):
        return _select(_eval_node(node.target, ctx, text), _eval_node(node.key, ctx, text), node.safe)
    if isinstance(node, _Call):
        function = FUNCTIONS[node.name][0]
        args = [_eval_node(arg, ctx, text) for arg in node.args]  # left to right, no short-circuit
        return function(ctx, *args)
    raise ExpressionError(f"cannot evaluate {node!r}", text)  # pragma: no cover - parser bug


def _select(target: Any, key: Any, safe: bool) -> Any:
    if target is None:
        if safe:
            return None
        raise ExpressionError(f"cannot select {key!r} on null; use ?[{_literal(key)}] to get null instead")
    if isinstance(target, dict):
        if not isinstance(key, str):
            raise ExpressionError(f"an object property name must be a string, not {_type_name(key)}")
        if key in target:
            return target[key]
        folded = key.casefold()
        for name, value in target.items():  # Logic Apps property names are case-insensitive
            if isinstance(name, str) and name.casefold() == folded:
                return value
        if safe:
            return None
        available = ", ".join(repr(k) for k in list(target)[:12]) or "none"
        raise ExpressionError(f"property {key!r} doesn't exist (available: {available}); "
                              f"use ?[{_literal(key)}] to get null instead")
    if isinstance(target, list):
        if isinstance(key, bool) or not isinstance(key, int):
            raise ExpressionError(f"an array index must be an integer, not {_type_name(key)}")
        if 0 <= key < len(target):
            return target[key]
        if safe:
            return None
        raise ExpressionError(f"index {key} is outside the array (length {len(target)})")
    raise ExpressionError(f"cannot select {key!r} on a value of type {_type_name(target)}")


def _literal(key: Any) -> str:
    return "'" + key.replace("'", "''") + "'" if isinstance(key, str) else repr(key)


def _type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Object"
    return type(value).__name__


def _to_string(value: Any) -> str:
    """How a value reads inside ``@{...}`` and through ``string()`` (null is empty, booleans as .NET)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- functions -------------------------------------------------------------------------------------

FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {}


def _function(name: str, low: int, high: int | None = -1) -> Callable:
    def register(implementation: Callable[..., Any]) -> Callable[..., Any]:
        FUNCTIONS[name.lower()] = (implementation, low, low if high == -1 else high)
        return implementation
    return register


def _need(value: Any, kinds: tuple[type, ...], function: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise ExpressionError(f"{function}() expects {what}, not a Boolean")
    if not isinstance(value, kinds):
        raise ExpressionError(f"{function}() expects {what}, not {_type_name(value)}")
    return value


def _number(value: Any, function: str) -> int | float:
    return _need(value, (int, float), function, "a number")


def _boolean(value: Any, function: str) -> bool:
    return _need(value, (bool,), function, "a Boolean")


def _text(value: Any, function: str) -> str:
    return _need(value, (str,), function, "a string")


# workflow data
@_function("triggerBody", 0)
def _fn_trigger_body(ctx: ExpressionContext) -> Any:
    return ctx.trigger_body


@_function("triggerOutputs", 0)
def _fn_trigger_outputs(ctx: ExpressionContext) -> Any:
    return ctx.trigger()["outputs"]


@_function("trigger", 0)
def _fn_trigger(ctx: ExpressionContext) -> Any:
    return ctx.trigger()


@_function("body", 1)
def _fn_body(ctx: ExpressionContext, name: Any) -> Any:
    return ctx.action(name).body


@_function("outputs", 1)
def _fn_outputs(ctx: ExpressionContext, name: Any) -> Any:
    return ctx.action(name).raw_outputs


@_function("actions", 1)
def _fn_actions(ctx: ExpressionContext, name: Any) -> Any:
    return ctx.action(name).as_expression_value()


@_function("parameters", 1)
def _fn_parameters(ctx: ExpressionContext, name: Any) -> Any:
    if not isinstance(name, str) or name not in ctx.parameters:
        raise ExpressionError(f"the workflow parameter {name!r} is not declared")
    return ctx.parameters[name]


@_function("variables", 1)
def _fn_variables(ctx: ExpressionContext, name: Any) -> Any:
    if not isinstance(name, str) or name not in ctx.variables:
        raise ExpressionError(f"the variable {name!r} is not initialized")
    return ctx.variables[name]


@_function("workflow", 0)
def _fn_workflow(ctx: ExpressionContext) -> Any:
    workflow_id = f"/workflows/{ctx.workflow_name}"
    return {"id": workflow_id, "name": ctx.workflow_name, "type": "Microsoft.Logic/workflows", "location": "local",
            "tags": {}, "run": {"id": f"{workflow_id}/runs/{ctx.run_name}", "name": ctx.run_name,
                                "type": "Microsoft.Logic/workflows/runs"}}


@_function("listCallbackUrl", 0)
def _fn_list_callback_url(ctx: ExpressionContext) -> Any:
    if ctx.callback_url is None:
        raise ExpressionError("listCallbackUrl() is only available in the inputs of an HttpWebhook action")
    return ctx.callback_url


# conversion
@_function("string", 1)
def _fn_string(ctx: ExpressionContext, value: Any) -> str:
    return _to_string(value)


@_function("int", 1)
def _fn_int(ctx: ExpressionContext, value: Any) -> int:
    if isinstance(value, bool):
        raise ExpressionError("int() expects a string or a number, not a Boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ExpressionError(f"int() cannot convert {value!r} to an integer")


@_function("float", 1)
def _fn_float(ctx: ExpressionContext, value: Any) -> float:
    if not isinstance(value, bool) and isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ExpressionError(f"float() cannot convert {value!r} to a number")


@_function("bool", 1)
def _fn_bool(ctx: ExpressionContext, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ExpressionError(f"bool() cannot convert {value!r} to a Boolean")


@_function("json", 1)
def _fn_json(ctx: ExpressionContext, value: Any) -> Any:
    if isinstance(value, dict | list):
        return value
    try:
        return json.loads(_text(value, "json"))
    except ValueError as exc:
        raise ExpressionError(f"json() got text that is not JSON: {exc}") from None


@_function("encodeUriComponent", 1)
def _fn_encode_uri_component(ctx: ExpressionContext, value: Any) -> str:
    return quote(_to_string(value), safe="-_.~")


FUNCTIONS["uricomponent"] = (_fn_encode_uri_component, 1, 1)


@_function("createArray", 0, None)
def _fn_create_array(ctx: ExpressionContext, *items: Any) -> list:
    return list(items)


# objects ("setProperty: set a property's value, or add it"; "addProperty: fails when it exists"; a new object each)
def _object(value: Any, function: str) -> dict:
    return dict(_need(value, (dict,), function, "an object"))


@_function("setProperty", 3)
def _fn_set_property(ctx: ExpressionContext, obj: Any, name: Any, value: Any) -> dict:
    return {**_object(obj, "setProperty"), _text(name, "setProperty"): value}


@_function("addProperty", 3)
def _fn_add_property(ctx: ExpressionContext, obj: Any, name: Any, value: Any) -> dict:
    result = _object(obj, "addProperty")
    if _text(name, "addProperty") in result:
        raise ExpressionError(f"addProperty(): the object already has the property {name!r} (use setProperty)")
    return {**result, name: value}


@_function("removeProperty", 2)
def _fn_remove_property(ctx: ExpressionContext, obj: Any, name: Any) -> dict:
    result = _object(obj, "removeProperty")
    result.pop(_text(name, "removeProperty"), None)
    return result


# logic and comparison ("null values are converted to empty string values" when compared)
def _comparable(value: Any) -> Any:
    return "" if value is None else value


def _equal(a: Any, b: Any) -> bool:
    a, b = _comparable(a), _comparable(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _order(a: Any, b: Any, function: str) -> tuple[Any, Any]:
    a, b = _comparable(a), _comparable(b)
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    raise ExpressionError(f"{function}() compares two numbers or two strings, not {_type_name(a)} "
                          f"and {_type_name(b)}")


@_function("equals", 2)
def _fn_equals(ctx: ExpressionContext, a: Any, b: Any) -> bool:
    return _equal(a, b)


@_function("greater", 2)
def _fn_greater(ctx: ExpressionContext, a: Any, b: Any) -> bool:
    x, y = _order(a, b, "greater")
    return x > y


@_function("greaterOrEquals", 2)
def _fn_greater_or_equals(ctx: ExpressionContext, a: Any, b: Any) -> bool:
    x, y = _order(a, b, "greaterOrEquals")
    return x >= y


@_function("less", 2)
def _fn_less(ctx: ExpressionContext, a: Any, b: Any) -> bool:
    x, y = _order(a, b, "less")
    return x < y


@_function("lessOrEquals", 2)
def _fn_less_or_equals(ctx: ExpressionContext, a: Any, b: Any) -> bool:
    x, y = _order(a, b, "lessOrEquals")
    return x <= y


@_function("not", 1)
def _fn_not(ctx: ExpressionContext, value: Any) -> bool:
    return not _boolean(value, "not")


@_function("and", 1, None)
def _fn_and(ctx: ExpressionContext, *values: Any) -> bool:
    return all([_boolean(value, "and") for value in values])


@_function("or", 1, None)
def _fn_or(ctx: ExpressionContext, *values: Any) -> bool:
    return any([_boolean(value, "or") for value in values])


@_function("if", 3)
def _fn_if(ctx: ExpressionContext, condition: Any, yes: Any, no: Any) -> Any:
    return yes if _boolean(condition, "if") else no


@_function("coalesce", 1, None)
def _fn_coalesce(ctx: ExpressionContext, *values: Any) -> Any:
    return next((value for value in values if value is not None), None)


# collections and strings
@_function("empty", 1)
def _fn_empty(ctx: ExpressionContext, value: Any) -> bool:
    if value is None:
        return True
    return len(_need(value, (str, list, dict), "empty", "a string, an array or an object")) == 0


@_function("length", 1)
def _fn_length(ctx: ExpressionContext, value: Any) -> int:
    return len(_need(value, (str, list, dict), "length", "a string or an array"))


@_function("contains", 2)
def _fn_contains(ctx: ExpressionContext, collection: Any, value: Any) -> bool:
    if isinstance(collection, str):
        return _text(value, "contains") in collection  # case-sensitive
    if isinstance(collection, list):
        return any(_equal(item, value) for item in collection)
    if isinstance(collection, dict):
        return value in collection
    raise ExpressionError(f"contains() expects a string, an array or an object, not {_type_name(collection)}")


@_function("first", 1)
def _fn_first(ctx: ExpressionContext, value: Any) -> Any:
    if value is None:
        return None
    return _need(value, (str, list), "first", "a string or an array")[0] if value else None


@_function("last", 1)
def _fn_last(ctx: ExpressionContext, value: Any) -> Any:
    if value is None:
        return None
    return _need(value, (str, list), "last", "a string or an array")[-1] if value else None


@_function("concat", 1, None)
def _fn_concat(ctx: ExpressionContext, *values: Any) -> str:
    return "".join(_to_string(value) for value in values)


@_function("toLower", 1)
def _fn_to_lower(ctx: ExpressionContext, value: Any) -> str:
    return _text(value, "toLower").lower()


@_function("toUpper", 1)
def _fn_to_upper(ctx: ExpressionContext, value: Any) -> str:
    return _text(value, "toUpper").upper()


@_function("trim", 1)
def _fn_trim(ctx: ExpressionContext, value: Any) -> str:
    return _text(value, "trim").strip()


@_function("startsWith", 2)
def _fn_starts_with(ctx: ExpressionContext, value: Any, prefix: Any) -> bool:
    return _text(value, "startsWith").lower().startswith(_text(prefix, "startsWith").lower())


@_function("endsWith", 2)
def _fn_ends_with(ctx: ExpressionContext, value: Any, suffix: Any) -> bool:
    return _text(value, "endsWith").lower().endswith(_text(suffix, "endsWith").lower())


@_function("indexOf", 2)
def _fn_index_of(ctx: ExpressionContext, value: Any, search: Any) -> int:
    return _text(value, "indexOf").lower().find(_text(search, "indexOf").lower())


@_function("replace", 3)
def _fn_replace(ctx: ExpressionContext, value: Any, old: Any, new: Any) -> str:
    return _text(value, "replace").replace(_text(old, "replace"), _text(new, "replace"))


@_function("split", 2)
def _fn_split(ctx: ExpressionContext, value: Any, separator: Any) -> list:
    return _text(value, "split").split(_text(separator, "split"))


@_function("join", 2)
def _fn_join(ctx: ExpressionContext, items: Any, separator: Any) -> str:
    return _text(separator, "join").join(_to_string(item) for item in _need(items, (list,), "join", "an array"))


@_function("substring", 2, 3)
def _fn_substring(ctx: ExpressionContext, value: Any, start: Any, length: Any = None) -> str:
    text = _text(value, "substring")
    begin = _need(start, (int,), "substring", "an integer start index")
    end = len(text) if length is None else begin + _need(length, (int,), "substring", "an integer length")
    if begin < 0 or end < begin or end > len(text):
        raise ExpressionError(f"substring() range {begin}..{end} is outside a string of length {len(text)}")
    return text[begin:end]


# math
@_function("add", 2)
def _fn_add(ctx: ExpressionContext, a: Any, b: Any) -> Any:
    return _number(a, "add") + _number(b, "add")


@_function("sub", 2)
def _fn_sub(ctx: ExpressionContext, a: Any, b: Any) -> Any:
    return _number(a, "sub") - _number(b, "sub")


@_function("mul", 2)
def _fn_mul(ctx: ExpressionContext, a: Any, b: Any) -> Any:
    return _number(a, "mul") * _number(b, "mul")


@_function("div", 2)
def _fn_div(ctx: ExpressionContext, a: Any, b: Any) -> Any:
    x, y = _number(a, "div"), _number(b, "div")
    if y == 0:
        raise ExpressionError("div() by zero")
    return int(x / y) if isinstance(x, int) and isinstance(y, int) else x / y


# time and identifiers
_DOTNET_TOKENS = ("yyyy", "fffffff", "ffffff", "fffff", "ffff", "fff", "ff", "f", "MM", "dd", "HH", "mm", "ss", "K")


def _format_time(moment: datetime, fmt: str) -> str:
    """The .NET standard formats o, s, u, D and the common custom specifiers."""
    ticks = f"{moment.microsecond:06d}0"
    if fmt in ("o", "O"):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + ticks + "Z"
    if fmt == "s":
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fmt == "u":
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    if fmt == "D":
        return f"{moment:%A}, {moment:%B} {moment.day}, {moment.year}"
    if len(fmt) == 1:
        raise ExpressionError(f"the date format {fmt!r} is not supported by the local runner (use o, s, u, D or a "
                              "custom pattern such as yyyy-MM-ddTHH:mm:ss)")
    values = {"yyyy": f"{moment.year:04d}", "MM": f"{moment.month:02d}", "dd": f"{moment.day:02d}",
              "HH": f"{moment.hour:02d}", "mm": f"{moment.minute:02d}", "ss": f"{moment.second:02d}", "K": "Z"}
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "'":
            end = fmt.find("'", i + 1)
            end = len(fmt) if end < 0 else end
            out.append(fmt[i + 1:end])
            i = end + 1
            continue
        token = next((t for t in _DOTNET_TOKENS if fmt.startswith(t, i)), None)
        if token is None:
            out.append(fmt[i])
            i += 1
        else:
            out.append(ticks[:len(token)] if token[0] == "f" else values[token])
            i += len(token)
    return "".join(out)


@_function("utcNow", 0, 1)
def _fn_utc_now(ctx: ExpressionContext, fmt: Any = "o") -> str:
    return _format_time(ctx.now().astimezone(UTC), _text(fmt, "utcNow"))


@_function("guid", 0, 1)
def _fn_guid(ctx: ExpressionContext, fmt: Any = "D") -> str:
    value = uuid.uuid4()
    formats = {"N": value.hex, "D": str(value), "B": "{" + str(value) + "}", "P": "(" + str(value) + ")"}
    key = _text(fmt, "guid").upper()
    if key not in formats:
        raise ExpressionError(f"guid() format must be N, D, B or P, not {fmt!r}")
    return formats[key]


# --- conditions (the If action's object form) ------------------------------------------------------

_CONDITION_COMPARISONS = {"equals": _fn_equals, "greater": _fn_greater, "greaterorequals": _fn_greater_or_equals,
                          "less": _fn_less, "lessorequals": _fn_less_or_equals, "contains": _fn_contains}


def _check_condition(condition: Any) -> None:
    if isinstance(condition, bool):
        return
    if isinstance(condition, str):
        _compile(condition)
        return
    if not isinstance(condition, dict) or len(condition) != 1:
        raise ExpressionError(f"a condition is an expression string or an object with one operator, not "
                              f"{json.dumps(condition)}")
    (operator, operand), = condition.items()
    op = operator.lower()
    if op in ("and", "or"):
        if not isinstance(operand, list) or not operand:
            raise ExpressionError(f"'{operator}' needs a non-empty array of conditions", json.dumps(condition))
        for item in operand:
            _check_condition(item)
    elif op == "not":
        _check_condition(operand)
    elif op in _CONDITION_COMPARISONS:
        if not isinstance(operand, list) or len(operand) != 2:
            raise ExpressionError(f"'{operator}' needs an array of two values", json.dumps(condition))
        _precompile(operand)
    else:
        raise ExpressionError(f"the condition operator '{operator}' is not supported by the local runner",
                              json.dumps(condition))


def _evaluate_condition(condition: Any, ctx: ExpressionContext) -> bool:
    if isinstance(condition, bool):
        return condition
    if isinstance(condition, str):
        value = evaluate(condition, ctx)
        if not isinstance(value, bool):
            raise ExpressionError(f"the condition must evaluate to a Boolean, not {_type_name(value)}", condition)
        return value
    (operator, operand), = condition.items()
    op = operator.lower()
    if op == "and":
        return all([_evaluate_condition(item, ctx) for item in operand])
    if op == "or":
        return any([_evaluate_condition(item, ctx) for item in operand])
    if op == "not":
        return not _evaluate_condition(operand, ctx)
    left, right = evaluate(operand, ctx)
    try:
        return _CONDITION_COMPARISONS[op](ctx, left, right)
    except ExpressionError as exc:
        raise ExpressionError(exc.message, json.dumps(condition)) from None


# ====================================================================================================
# Results
# ====================================================================================================

@dataclass
class ActionResult:
    """One action's run record, as the run history shows it."""

    name: str
    type: str
    status: str = "Skipped"          # Succeeded, Failed, Skipped, TimedOut
    inputs: Any = None
    outputs: Any = None               # Http / HttpWebhook: {"statusCode", "headers", "body"}
    attempts: int = 0                 # requests sent for the action's call, retries included (not polls)
    polls: int = 0                    # GETs of the asynchronous pattern's Location
    waits: list[float] = field(default_factory=list)  # nominal seconds waited (retries, polls)
    error: dict | None = None         # {"code", "message"}
    started: str | None = None
    ended: str | None = None
    raw_inputs: Any = field(default=None, repr=False, compare=False)
    raw_outputs: Any = field(default=None, repr=False, compare=False)

    @property
    def body(self) -> Any:
        if self.type.lower() == "compose":
            return self.raw_outputs
        return self.raw_outputs.get("body") if isinstance(self.raw_outputs, dict) else None

    def as_expression_value(self) -> dict:
        return {"name": self.name, "type": self.type, "status": self.status, "inputs": self.raw_inputs,
                "outputs": self.raw_outputs, "error": self.error, "startTime": self.started, "endTime": self.ended,
                "code": (self.error or {}).get("code", "OK" if self.status == "Succeeded" else self.status)}


@dataclass
class RunResult:
    """A run: its status, every action's record (nested ones included) and a readable timeline."""

    name: str
    status: str                       # Succeeded, Failed, Cancelled
    actions: dict[str, ActionResult]
    timeline: list[str]
    trigger: dict
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict | None = None

    def __getitem__(self, name: str) -> ActionResult:
        return self.actions[name]


# ====================================================================================================
# The callback server of HttpWebhook actions
# ====================================================================================================

@dataclass
class _Callback:
    path: str
    event: threading.Event = field(default_factory=threading.Event)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _CallbackServer(Emulator):
    """Loopback endpoint for ``listCallbackUrl()``: one unique, signed URL per webhook action run."""

    name = "playbook-callbacks"

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, _Callback] = {}
        self.route("POST", r"/workflows/[^/]+/runs/[^/]+/actions/[^/]+/run", self._called_back)

    def register(self, workflow: str, run: str, action: str) -> tuple[str, str, _Callback]:
        signature = uuid.uuid4().hex
        path = f"/workflows/{quote(workflow, safe='')}/runs/{quote(run, safe='')}/actions/{quote(action, safe='')}/run"
        callback = _Callback(path=path)
        with self._lock:
            self._pending[signature] = callback
        query = urlencode({"api-version": "2016-10-01", "sp": "/runs/*/actions/*/run", "sv": "1.0",
                           "sig": signature})
        return f"{self.url}{path}?{query}", signature, callback

    def expire(self, signature: str) -> None:
        with self._lock:
            self._pending.pop(signature, None)

    def _called_back(self, request: Request) -> Response:
        with self._lock:
            callback = self._pending.get(request.query.get("sig", ""))
            if callback is None or request.path != unquote(callback.path) or callback.event.is_set():
                return Response(404, {"error": {"code": "WorkflowRunActionCallbackNotFound",
                                                "message": "no webhook action is waiting for this callback URL"}})
            callback.headers = dict(request.headers.items())
            callback.body = _decode(request.body, request.headers.get("Content-Type") or "")
            callback.event.set()
        return Response(200)


def _decode(payload: bytes, content_type: str) -> Any:
    """A body the way Logic Apps exposes it: JSON as a value, text as a string, bytes as $content."""
    if not payload:
        return None
    if "json" in content_type.lower():
        try:
            return json.loads(payload)
        except ValueError:
            pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"$content-type": content_type or "application/octet-stream",
                "$content": base64.b64encode(payload).decode("ascii")}


# ====================================================================================================
# The runner
# ====================================================================================================

def load_playbook(path: str | Path) -> dict:
    """The workflow definition in a playbook file (a bare definition, or an object with ``definition``)."""
    document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    definition = document.get("definition", document) if isinstance(document, dict) else None
    if not isinstance(definition, dict) or "triggers" not in definition:
        raise PlaybookError(f"{path} does not hold a workflow definition (no 'triggers')")
    return definition


LOCAL_SENTINEL_CONNECTION = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-local/providers/"
                             "Microsoft.Web/connections/azuresentinel")


def bicep_parameters(function_base_url: str, function_key: str, *,
                     connection_id: str = LOCAL_SENTINEL_CONNECTION) -> dict[str, Any]:
    """The parameter values ``infra/app/playbook.bicep`` gives every playbook, with local stand-ins."""
    return {
        "$connections": {"azuresentinel": {
            "connectionId": connection_id,
            "connectionName": connection_id.rsplit("/", 1)[-1],
            "id": "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Web/locations/local/"
                  "managedApis/azuresentinel",
            "connectionProperties": {"authentication": {"type": "ManagedServiceIdentity"}},
        }},
        "functionBaseUrl": function_base_url.rstrip("/"),
        "functionKey": function_key,
    }


_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "securestring": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "array": (list,), "object": (dict,), "secureobject": (dict,),
}
_ACTION_TYPES = ("Http", "HttpWebhook", "ApiConnection", "If", "Scope", "Compose", "Terminate", "InitializeVariable",
                 "SetVariable", "IncrementVariable", "AppendToArrayVariable", "AppendToStringVariable")


class _Run:
    """The state of one run."""

    def __init__(self, runner: PlaybookRunner, trigger_body: Any, trigger_headers: dict[str, str]) -> None:
        self.runner = runner
        self.name = f"0858{random.randrange(10**16):016d}{random.randrange(10**6):06d}CU{random.randrange(100):02d}"
        self.results: dict[str, ActionResult] = {}
        self.timeline: list[str] = []
        self.terminated: tuple[str, dict | None] | None = None
        self.started = time.monotonic()
        self.ctx = ExpressionContext(
            trigger_body=trigger_body, trigger_headers=trigger_headers, trigger_name=runner.trigger_name,
            parameters=runner.parameters, variables={}, actions=self.results,
            declared_actions=frozenset(runner.action_names), workflow_name=runner.name, run_name=self.name)

    def say(self, line: str) -> None:
        self.timeline.append(line)



class PlaybookRunner:
    """Runs one workflow definition; build once, :meth:`run` as often as needed.

    The callback server of HttpWebhook actions starts with the first one that runs and serves
    every later run; :meth:`close` (or ``with PlaybookRunner(...) as runner:``) stops it.
    ``connectors`` maps API connection ids (the ``connectionId`` values of ``$connections``) to the
    local stand-ins of their connectors, for ApiConnection actions and the trigger's body check.
    """

    def __init__(self, definition: dict, parameters: dict[str, Any], *, time_scale: float = 0.01,
                 http: requests.Session | None = None, name: str = WORKFLOW_NAME, request_timeout: float = 120.0,
                 rng: random.Random | None = None, connectors: dict[str, Any] | None = None) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        if not isinstance(definition, dict):
            raise PlaybookError("a workflow definition is a JSON object")
        self.definition = definition
        self.time_scale = time_scale
        self.http = http or requests.Session()
        self.name = name
        self.request_timeout = request_timeout
        self.rng = rng or random.Random()
        self._callbacks: _CallbackServer | None = None
        self._callbacks_lock = threading.Lock()
        self.parameters = self._resolve_parameters(definition.get("parameters") or {}, parameters or {})
        triggers = definition.get("triggers") or {}
        if not isinstance(triggers, dict) or len(triggers) != 1:
            raise PlaybookError(f"the local runner needs exactly one trigger, the definition has {len(triggers)}")
        (self.trigger_name, self.trigger), = triggers.items()
        self.connectors = dict(connectors or {})
        self.trigger_path, self.trigger_connection = self._trigger_subscription()
        self.actions: dict[str, dict] = definition.get("actions") or {}
        self.action_names: list[str] = []
        self._validate_scope(self.actions, "the workflow")
        for name, output in (definition.get("outputs") or {}).items():
            try:
                _precompile(output.get("value") if isinstance(output, dict) else output)
            except ExpressionError as exc:
                raise ExpressionError(f"workflow output '{name}': {exc.message}", exc.expression) from None

    # -- building ------------------------------------------------------------------------------------
    @staticmethod
    def _resolve_parameters(declared: dict, given: dict) -> dict[str, Any]:
        undeclared = sorted(set(given) - set(declared))
        if undeclared:
            raise PlaybookError(f"parameter(s) {', '.join(undeclared)} are not declared in the definition's "
                                "'parameters'")
        values, missing = {}, []
        for name, spec in declared.items():
            spec = spec if isinstance(spec, dict) else {}
            if name in given:
                value = given[name]
            elif "defaultValue" in spec:
                value = spec["defaultValue"]
            else:
                missing.append(name)
                continue
            kinds = _PARAMETER_TYPES.get(str(spec.get("type", "")).lower())
            if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                raise PlaybookError(f"parameter '{name}' is declared {spec.get('type')} but the value given is "
                                    f"{_type_name(value)}")
            values[name] = value
        if missing:
            raise PlaybookError(f"parameter(s) {', '.join(missing)} have no value and no defaultValue")
        return values

    def _validate_scope(self, actions: Any, where: str) -> None:
        if not isinstance(actions, dict):
            raise PlaybookError(f"{where}: 'actions' must be an object")
        for name, action in actions.items():
            if name in self.action_names:
                raise PlaybookError(f"the action name '{name}' is used twice (names are unique in a workflow)")
            self.action_names.append(name)
            if not isinstance(action, dict) or not isinstance(action.get("type"), str):
                raise PlaybookError(f"action '{name}' has no 'type'")
            kind = self._kind(action)
            if kind is None:
                raise PlaybookError(f"action '{name}': type '{action['type']}' is not supported by the local runner "
                                    f"(supported: {', '.join(_ACTION_TYPES)})")
            run_after = action.get("runAfter") or {}
            if not isinstance(run_after, dict):
                raise PlaybookError(f"action '{name}': runAfter must be an object")
            for before, statuses in run_after.items():
                if before not in actions or before == name:
                    raise PlaybookError(f"action '{name}' runs after '{before}', which is not another action of "
                                        f"{where}")
                wanted = {s.lower() for s in STATUSES}
                if not isinstance(statuses, list) or not statuses or any(
                        not isinstance(s, str) or s.lower() not in wanted for s in statuses):
                    raise PlaybookError(f"action '{name}': runAfter '{before}' must list statuses among "
                                        f"{', '.join(STATUSES)}, not {statuses!r}")
            try:
                self._validate_action(name, kind, action)
            except ExpressionError as exc:
                raise ExpressionError(f"action '{name}': {exc.message}", exc.expression) from None
        self._check_acyclic(actions, where)

    def _validate_action(self, name: str, kind: str, action: dict) -> None:
        inputs = action.get("inputs")
        _precompile(inputs)
        if "limit" in action and isinstance(action["limit"], dict) and "timeout" in action["limit"]:
            parse_duration(action["limit"]["timeout"])
        if kind == "http":
            self._check_request(name, inputs, "inputs")
        elif kind == "apiconnection":
            self._check_connection(name, inputs)
        elif kind == "httpwebhook":
            if not isinstance(inputs, dict):
                raise PlaybookError(f"action '{name}': an HttpWebhook needs inputs with 'subscribe'")
            self._check_request(name, inputs.get("subscribe"), "inputs.subscribe")
            if "unsubscribe" in inputs:
                self._check_request(name, inputs["unsubscribe"], "inputs.unsubscribe")
        elif kind == "if":
            if "expression" not in action:
                raise PlaybookError(f"action '{name}': an If needs an 'expression'")
            _check_condition(action["expression"])
            self._validate_scope(action.get("actions") or {}, f"the If '{name}' (actions)")
            self._validate_scope((action.get("else") or {}).get("actions") or {}, f"the If '{name}' (else)")
        elif kind == "scope":
            self._validate_scope(action.get("actions") or {}, f"the Scope '{name}'")

    def _trigger_subscription(self) -> tuple[str | None, str | None]:
        """The trigger's ``path`` and connection id, evaluated (only parameters are in scope), when it has them.

        Either is None when it cannot be evaluated here (e.g. ``$connections`` left to its empty default): the
        trigger then fires with any body, as before connectors were known to the runner.
        """
        inputs = self.trigger.get("inputs") if isinstance(self.trigger, dict) else None
        if not isinstance(inputs, dict):
            return None, None
        ctx = ExpressionContext(parameters=self.parameters)
        values = []
        for value in (inputs.get("path"), ((inputs.get("host") or {}).get("connection") or {}).get("name")):
            try:
                value = evaluate(value, ctx)
            except ExpressionError:
                value = None
            values.append(value if isinstance(value, str) else None)
        return values[0], values[1]

    @staticmethod
    def _check_connection(name: str, inputs: Any) -> None:
        host = inputs.get("host") if isinstance(inputs, dict) else None
        connection = host.get("connection") if isinstance(host, dict) else None
        if not (isinstance(connection, dict) and connection.get("name") and inputs.get("method")
                and isinstance(inputs.get("path"), str)):
            raise PlaybookError(f"action '{name}': an ApiConnection needs inputs with host.connection.name, 'method' "
                                "and 'path'")
        policy = inputs.get("retryPolicy")
        if isinstance(policy, dict) and not any(isinstance(v, str) and v.startswith("@") for v in policy.values()):
            RetryPolicy.from_spec(policy)

    @staticmethod
    def _check_request(name: str, request: Any, where: str) -> None:
        if not isinstance(request, dict) or not request.get("method") or not (request.get("uri") or
                                                                              request.get("url")):
            raise PlaybookError(f"action '{name}': {where} needs 'method' and 'uri'")
        policy = request.get("retryPolicy")
        if isinstance(policy, dict) and not any(isinstance(v, str) and v.startswith("@") for v in policy.values()):
            RetryPolicy.from_spec(policy)

    @staticmethod
    def _check_acyclic(actions: dict, where: str) -> None:
        done: set[str] = set()
        remaining = dict(actions)
        while remaining:
            ready = [n for n, a in remaining.items() if set(a.get("runAfter") or {}) <= done]
            if not ready:
                raise PlaybookError(f"the runAfter of {where} form a cycle: {', '.join(remaining)}")
            for name in ready:
                done.add(name)
                del remaining[name]

    @staticmethod
    def _kind(action: dict) -> str | None:
        kind = str(action.get("type", "")).lower()
        return kind if kind in {t.lower() for t in _ACTION_TYPES} else None

    # -- running -------------------------------------------------------------------------------------
    def __enter__(self) -> PlaybookRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the webhook callback server, if one was started."""
        with self._callbacks_lock:
            callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            callbacks.stop()

    def _callback_server(self) -> _CallbackServer:
        with self._callbacks_lock:
            if self._callbacks is None:
                self._callbacks = _CallbackServer().start()
            return self._callbacks

    def run(self, trigger_body: Any, *, trigger_headers: dict[str, str] | None = None) -> RunResult:
        """Fire the trigger with ``trigger_body`` and run the actions to the end."""
        headers = {"Content-Type": "application/json"} if trigger_headers is None else dict(trigger_headers)
        stand_in = self.connectors.get(self.trigger_connection or "")
        check = getattr(stand_in, "trigger_problem", None)
        if check is not None and self.trigger_path is not None:
            problem = check(self.trigger_path, trigger_body)
            if problem:
                raise PlaybookError(f"trigger '{self.trigger_name}' ({self.trigger_path}) never fires with this body: "
                                    f"{problem}")
        run = _Run(self, trigger_body, headers)
        run.say(f"run {run.name}: trigger '{self.trigger_name}' ({self.trigger.get('type', '?')}) fired")
        if check is not None and self.trigger_path is not None:
            run.say(f"{self.trigger_name}: the connector's {self.trigger_path} trigger handed over the body")
        status = self._run_scope(run, self.actions)
        error = None
        if run.terminated is not None:
            status, error = run.terminated
        elif status == "Failed":
            error = next((r.error for r in run.results.values() if r.status in ("Failed", "TimedOut") and r.error),
                         None)
        outputs = {}
        for name, output in (self.definition.get("outputs") or {}).items():
            try:
                outputs[name] = evaluate(output.get("value") if isinstance(output, dict) else output, run.ctx)
            except ExpressionError as exc:
                outputs[name] = None
                run.say(f"output '{name}' could not be evaluated: {exc}")
        run.say(f"run {status} in {time.monotonic() - run.started:.2f}s")
        return RunResult(run.name, status, dict(run.results), run.timeline, run.ctx.trigger(), outputs, error)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.time_scale > 0:
            time.sleep(seconds * self.time_scale)

    def _run_scope(self, run: _Run, actions: dict[str, dict]) -> str:
        pending = list(actions)
        while pending:
            if run.terminated is not None:
                for name in pending:
                    self._skip(run, name, actions[name], "the run was terminated")
                break
            name = next(n for n in pending
                        if all(p in run.results and run.results[p].status in STATUSES
                               for p in actions[n].get("runAfter") or {}))
            pending.remove(name)
            action = actions[name]
            unmet = [f"'{before}' is {run.results[before].status}, needs {'/'.join(allowed)}"
                     for before, allowed in (action.get("runAfter") or {}).items()
                     if run.results[before].status.lower() not in {s.lower() for s in allowed}]
            if unmet:
                self._skip(run, name, action, "; ".join(unmet))
            else:
                self._execute(run, name, action)
        return self._scope_status(actions, run.results)

    @staticmethod
    def _scope_status(actions: dict[str, dict], results: dict[str, ActionResult]) -> str:
        """Only the branches' last actions count; a skipped one counts as its predecessors."""
        followed = {before for action in actions.values() for before in action.get("runAfter") or {}}

        def effective(name: str) -> str:
            status = results[name].status
            if status != "Skipped":
                return status
            before = list(actions[name].get("runAfter") or {})
            return "Failed" if any(effective(b) in ("Failed", "TimedOut") for b in before) else "Succeeded"

        ends = [name for name in actions if name not in followed]
        return "Failed" if any(effective(name) in ("Failed", "TimedOut") for name in ends) else "Succeeded"

    def _skip(self, run: _Run, name: str, action: dict, reason: str) -> None:
        run.results[name] = ActionResult(name, action.get("type", "?"), "Skipped")
        run.say(f"{name}: Skipped ({reason})")
        self._skip_nested(run, action, f"'{name}' was skipped")

    def _skip_nested(self, run: _Run, action: dict, reason: str) -> None:
        for branch in (action.get("actions") or {}, (action.get("else") or {}).get("actions") or {}):
            for name, nested in branch.items():
                run.results[name] = ActionResult(name, nested.get("type", "?"), "Skipped")
                self._skip_nested(run, nested, reason)

    def _execute(self, run: _Run, name: str, action: dict) -> None:
        kind = self._kind(action)
        result = ActionResult(name, action["type"], "Running", started=_now())
        run.results[name] = result
        secure = {str(p).lower() for p in
                  (((action.get("runtimeConfiguration") or {}).get("secureData") or {}).get("properties") or [])}
        try:
            getattr(self, f"_do_{kind}")(run, name, action, result)
        except ExpressionError as exc:
            result.status = "Failed"
            result.error = {"code": "InvalidTemplate",
                            "message": f"Unable to process template language expressions in action '{name}': {exc}"}
        except _ActionFailure as exc:
            result.status = "Failed"
            result.error = {"code": exc.code, "message": exc.message}
        except PlaybookError as exc:  # e.g. an invalid retryPolicy that only an expression revealed
            result.status = "Failed"
            result.error = {"code": "InvalidDefinition", "message": str(exc)}
        result.ended = _now()
        result.inputs = SECURED if "inputs" in secure and result.raw_inputs is not None else result.raw_inputs
        result.outputs = SECURED if "outputs" in secure and result.raw_outputs is not None else result.raw_outputs
        detail = []
        if result.attempts > 1:
            detail.append(f"{result.attempts} attempts")
        if result.polls:
            detail.append(f"{result.polls} polls")
        if result.error:
            detail.append(f"{result.error['code']}: {result.error['message']}")
        run.say(f"{name}: {result.status}" + (f" ({'; '.join(detail)})" if detail else ""))

    def _inputs(self, run: _Run, action: dict, result: ActionResult) -> Any:
        result.raw_inputs = evaluate(action.get("inputs"), run.ctx)
        return result.raw_inputs

    # -- HTTP ----------------------------------------------------------------------------------------
    def _request(self, spec: Any, where: str) -> tuple[str, str, dict[str, str], bytes | None, RetryPolicy]:
        if not isinstance(spec, dict):
            raise _ActionFailure("InvalidInput", f"{where} must be an object")
        if spec.get("authentication"):
            raise _ActionFailure("NotSupported", f"{where}: 'authentication' is not supported by the local runner")
        method, uri = spec.get("method"), spec.get("uri", spec.get("url"))
        if not isinstance(method, str) or not method:
            raise _ActionFailure("InvalidInput", f"{where}: 'method' must be a non-empty string")
        if not isinstance(uri, str):
            raise _ActionFailure("InvalidInput", f"{where}: 'uri' must be a string, not {_type_name(uri)}")
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _ActionFailure("InvalidUri", f"{where}: {uri!r} is not an absolute http(s) URL")
        queries = spec.get("queries") or {}
        if not isinstance(queries, dict):
            raise _ActionFailure("InvalidInput", f"{where}: 'queries' must be an object")
        if queries:
            pairs = parse_qsl(parts.query, keep_blank_values=True) + [
                (str(k), _to_string(v)) for k, v in queries.items()]
            uri = urlunsplit(parts._replace(query=urlencode(pairs)))
        headers = {str(k): _to_string(v) for k, v in (spec.get("headers") or {}).items() if v is not None}
        body, data = spec.get("body"), None
        if isinstance(body, str):
            data = body.encode("utf-8")
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        try:
            policy = RetryPolicy.from_spec(spec.get("retryPolicy"))
        except PlaybookError as exc:
            raise _ActionFailure("InvalidRetryPolicy", str(exc)) from None
        return method.upper(), uri, headers, data, policy

    def _send(self, run: _Run, name: str, result: ActionResult, method: str, url: str, headers: dict[str, str],
              data: bytes | None, policy: RetryPolicy, *, label: str = "", count: bool = True
              ) -> tuple[requests.Response | None, str | None]:
        """One request with its retry policy; returns the last answer (or None and why it failed)."""
        retry = 0
        while True:
            if count:
                result.attempts += 1
            try:
                response: requests.Response | None = self.http.request(
                    method, url, headers=headers, data=data, timeout=self.request_timeout, allow_redirects=False)
                problem, outcome = None, f"{response.status_code} {response.reason or ''}".rstrip()
            except requests.RequestException as exc:
                response, problem = None, f"{type(exc).__name__}: {exc}"
                outcome = f"no answer ({type(exc).__name__})"
            transient = response is None or response.status_code in RETRY_STATUS_CODES or response.status_code >= 500
            line = f"{name}: {label}{method} {_shown(url)} -> {outcome}"
            if not transient or retry >= policy.count:
                run.say(line)
                return response, problem
            retry += 1
            wait = _retry_after(response)
            why = "Retry-After"
            if wait is None:
                wait, why = policy.delay(retry, self.rng), f"{policy.type} retry policy"
            run.say(f"{line}; retry {retry}/{policy.count} in {wait:.3g}s ({why})")
            result.waits.append(wait)
            self._sleep(wait)

    def _finish_http(self, result: ActionResult, method: str, url: str, response: requests.Response | None,
                     problem: str | None) -> None:
        if response is None:
            result.status = "Failed"
            result.error = {"code": "HttpRequestFailed", "message": f"{method} {_shown(url)} failed: {problem}"}
            return
        result.raw_outputs = {"statusCode": response.status_code, "headers": dict(response.headers),
                              "body": _decode(response.content, response.headers.get("Content-Type") or "")}
        if 200 <= response.status_code < 300:
            result.status = "Succeeded"
        else:
            result.status = "Failed"
            result.error = {"code": _status_code_name(response.status_code),
                            "message": f"{method} {_shown(url)} answered {response.status_code}"}

    def _do_apiconnection(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result)
        connection = ((inputs.get("host") or {}).get("connection") or {}).get("name")
        stand_in = self.connectors.get(connection) if isinstance(connection, str) else None
        if stand_in is None:
            raise _ActionFailure("ConnectionNotFound", f"no local stand-in for the API connection {connection!r} "
                                                       "(PlaybookRunner(connectors={connection id: stand-in}))")
        base = (stand_in if isinstance(stand_in, str) else stand_in.url).rstrip("/")
        path = inputs.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise _ActionFailure("InvalidInput", f"inputs.path must be a string starting with '/', not {path!r}")
        request = {key: inputs[key] for key in ("method", "queries", "headers", "body", "retryPolicy") if key in inputs}
        self._call(run, name, action, result, {**request, "uri": base + path})

    def _do_http(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        self._call(run, name, action, result, self._inputs(run, action, result))

    def _call(self, run: _Run, name: str, action: dict, result: ActionResult, inputs: Any) -> None:
        """An HTTP request with its retry policy and the asynchronous pattern (Http and ApiConnection actions)."""
        method, url, headers, data, policy = self._request(inputs, "inputs")
        response, problem = self._send(run, name, result, method, url, headers, data, policy)
        if (response is not None and response.status_code == 202 and response.headers.get("Location")
                and "disableasyncpattern" not in _operation_options(action)):
            limit = _limit_timeout(action)
            waited = 0.0
            run.say(f"{name}: 202 Accepted, polling Location (asynchronous pattern)")
            while response is not None and response.status_code == 202 and response.headers.get("Location"):
                wait = _retry_after(response)
                wait = DEFAULT_POLL_INTERVAL if wait is None else wait
                if waited + wait > limit:
                    result.raw_outputs = {"statusCode": 202, "headers": dict(response.headers), "body": None}
                    result.status = "TimedOut"
                    result.error = {"code": "ActionTimedOut", "message": f"the asynchronous operation did not finish "
                                                                         f"within {_limit_text(action)}"}
                    return
                result.waits.append(wait)
                self._sleep(wait)
                waited += wait
                url = urljoin(url, response.headers["Location"])
                method = "GET"
                result.polls += 1
                response, problem = self._send(run, name, result, "GET", url, {}, None, policy, label="poll ",
                                               count=False)
        self._finish_http(result, method, url, response, problem)

    def _do_httpwebhook(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        callbacks = self._callback_server()
        callback_url, signature, callback = callbacks.register(self.name, run.name, name)
        try:
            run.ctx.callback_url = callback_url
            try:
                inputs = self._inputs(run, action, result)
            finally:
                run.ctx.callback_url = None
            method, url, headers, data, policy = self._request(inputs.get("subscribe"), "inputs.subscribe")
            response, problem = self._send(run, name, result, method, url, headers, data, policy,
                                           label="subscribe ")
            if response is None or not 200 <= response.status_code < 300:
                self._finish_http(result, method, url, response, problem)
                result.error = {"code": "WebhookSubscribeFailed", "message": result.error["message"]}
                return
            run.say(f"{name}: waiting for the callback (limit.timeout {_limit_text(action)})")
            limit = _limit_timeout(action)
            callback.event.wait(limit * self.time_scale)
        finally:
            callbacks.expire(signature)  # from here on the URL answers 404
        if callback.event.is_set():
            result.raw_outputs = {"statusCode": 200, "headers": callback.headers, "body": callback.body}
            result.status = "Succeeded"
            run.say(f"{name}: callback received")
        else:
            result.waits.append(limit)
            result.status = "TimedOut"
            result.error = {"code": "ActionTimedOut",
                            "message": f"no callback within {_limit_text(action)} (limit.timeout)"}
        if inputs.get("unsubscribe"):
            method, url, headers, data, policy = self._request(inputs["unsubscribe"], "inputs.unsubscribe")
            self._send(run, name, ActionResult(name, "unsubscribe"), method, url, headers, data, policy,
                       label="unsubscribe ")

    # -- control and data actions --------------------------------------------------------------------
    def _do_if(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        result.raw_inputs = {"expression": action["expression"]}
        try:
            outcome = _evaluate_condition(action["expression"], run.ctx)
        except ExpressionError:
            self._skip_nested(run, action, f"the condition of '{name}' failed")
            raise
        result.raw_outputs = {"expression": outcome}
        taken = action.get("actions") or {}
        other = (action.get("else") or {}).get("actions") or {}
        run.say(f"{name}: condition is {str(outcome).lower()}, running {'actions' if outcome else 'else'}"
                + ("" if (taken if outcome else other) else " (empty)"))
        for skipped, nested in (other if outcome else taken).items():
            self._skip(run, skipped, nested, f"'{name}' took the other branch")
        result.status = self._run_scope(run, taken if outcome else other)

    def _do_scope(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        result.status = self._run_scope(run, action.get("actions") or {})

    def _do_compose(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        result.raw_outputs = self._inputs(run, action, result)
        result.status = "Succeeded"

    def _do_terminate(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result) or {}
        status = str(inputs.get("runStatus", "")).capitalize()
        if status not in ("Succeeded", "Failed", "Cancelled"):
            raise _ActionFailure("InvalidInput", f"runStatus must be Succeeded, Failed or Cancelled, not "
                                                 f"{inputs.get('runStatus')!r}")
        error = inputs.get("runError") if status == "Failed" else None
        run.terminated = (status, error)
        result.status = "Succeeded"
        run.say(f"{name}: terminating the run as {status}")

    def _do_initializevariable(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result) or {}
        for variable in inputs.get("variables") or []:
            var_name, kind = variable.get("name"), str(variable.get("type", "")).lower()
            if var_name in run.ctx.variables:
                raise _ActionFailure("InvalidVariable", f"the variable '{var_name}' is already initialized")
            default = {"integer": 0, "float": 0.0, "boolean": False, "string": "", "array": [], "object": {}}
            if kind not in default:
                raise _ActionFailure("InvalidVariable", f"variable type {variable.get('type')!r} is not one of "
                                                        "integer, float, boolean, string, array, object")
            run.ctx.variables[var_name] = variable.get("value", default[kind])
        result.status = "Succeeded"

    def _variable(self, run: _Run, inputs: Any) -> str:
        var_name = (inputs or {}).get("name")
        if var_name not in run.ctx.variables:
            raise _ActionFailure("InvalidVariable", f"the variable {var_name!r} is not initialized")
        return var_name

    def _do_setvariable(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result)
        run.ctx.variables[self._variable(run, inputs)] = inputs.get("value")
        result.raw_outputs = {"body": {"name": inputs["name"], "value": inputs.get("value")}}
        result.status = "Succeeded"

    def _do_incrementvariable(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result)
        var_name = self._variable(run, inputs)
        try:
            run.ctx.variables[var_name] = _fn_add(run.ctx, run.ctx.variables[var_name], inputs.get("value", 1))
        except ExpressionError as exc:
            raise _ActionFailure("InvalidVariable", exc.message) from None
        result.status = "Succeeded"

    def _do_appendtoarrayvariable(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result)
        var_name = self._variable(run, inputs)
        if not isinstance(run.ctx.variables[var_name], list):
            raise _ActionFailure("InvalidVariable", f"the variable '{var_name}' is not an array")
        run.ctx.variables[var_name] = [*run.ctx.variables[var_name], inputs.get("value")]
        result.status = "Succeeded"

    def _do_appendtostringvariable(self, run: _Run, name: str, action: dict, result: ActionResult) -> None:
        inputs = self._inputs(run, action, result)
        var_name = self._variable(run, inputs)
        if not isinstance(run.ctx.variables[var_name], str):
            raise _ActionFailure("InvalidVariable", f"the variable '{var_name}' is not a string")
        run.ctx.variables[var_name] += _to_string(inputs.get("value"))
        result.status = "Succeeded"


# --- helpers -----------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _shown(url: str) -> str:
    """A URL for the timeline: without its query string, where keys and signatures live."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="...", fragment="") if parts.query else parts._replace(fragment=""))


def _status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"HTTP{status}"


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _operation_options(action: dict) -> set[str]:
    return {option.strip().lower() for option in str(action.get("operationOptions") or "").split(",") if option}


def _limit_text(action: dict) -> str:
    return str((action.get("limit") or {}).get("timeout") or DEFAULT_ASYNC_TIMEOUT)


def _limit_timeout(action: dict) -> float:
    return parse_duration(_limit_text(action))
