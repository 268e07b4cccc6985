"""A small parser for the Bicep that infra/ is written in: enough to type-check it without the Bicep CLI.

It reads declarations (``param``, ``var``, ``resource``, ``module``, ``output``, ``targetScope``, ``extension``),
object and array literals, ``if (...)`` conditions and ``[for ...: ...]`` loops, nested child resources, and
``#disable-next-line`` pragmas. Expressions it does not need to understand (function calls, references,
operators) are kept as opaque text. String literals without interpolation keep their value, so enum values
can be checked. Every object key remembers its line, for messages and for the pragmas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ArrayLit", "BicepFile", "Declaration", "Expr", "ObjectLit", "Prop", "StrLit", "parse", "parse_file"]


@dataclass
class Expr:
    """An expression the checker does not evaluate (a reference, a call, an operator, an interpolation)."""

    text: str


@dataclass
class StrLit:
    value: str | None  # None: an interpolated string ('${...}'): its value is only known at deployment
    raw: str = ""


@dataclass
class Prop:
    key: str
    value: object
    line: int


@dataclass
class ObjectLit:
    props: list[Prop] = field(default_factory=list)
    spread: bool = False           # holds '...expr': keys beyond those listed may arrive
    resources: list[Declaration] = field(default_factory=list)  # nested child resources
    line: int = 0

    def get(self, key: str) -> object | None:
        for prop in self.props:
            if prop.key == key:
                return prop.value
        return None


@dataclass
class ArrayLit:
    items: list[object] = field(default_factory=list)


@dataclass
class Loop:
    """``[for x in y: body]``: body may be an ``If``."""

    body: object


@dataclass
class If:
    condition: str
    body: object


@dataclass
class Declaration:
    kind: str                      # param, var, resource, module, output, targetScope, extension, import, type
    name: str
    line: int
    type: str = ""                 # resource type string, module path, param/output type
    value: object = None
    existing: bool = False
    has_default: bool = False
    decorators: list[str] = field(default_factory=list)


@dataclass
class BicepFile:
    path: Path
    declarations: list[Declaration]
    pragmas: dict[int, set[str]]   # line -> codes of a '#disable-next-line' on that line
    text: str

    def of(self, kind: str) -> list[Declaration]:
        return [d for d in self.declarations if d.kind == kind]

    @property
    def target_scope(self) -> str:
        for d in self.of("targetScope"):
            if isinstance(d.value, StrLit) and d.value.value:
                return d.value.value
        return "resourceGroup"

    def suppressed(self, line: int, code: str) -> bool:
        """Is ``code`` disabled for ``line`` by a '#disable-next-line' just above it (comments may sit between)?"""
        lines = self.text.splitlines()
        n = line - 1
        while n >= 1:
            if n in self.pragmas:
                return code in self.pragmas[n]
            stripped = lines[n - 1].strip()
            if stripped and not stripped.startswith("//"):
                return False
            n -= 1
        return False


class ParseError(ValueError):
    pass


_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


class _Parser:
    def __init__(self, text: str, path: Path) -> None:
        self.s = text
        self.i = 0
        self.path = path
        self.pragmas: dict[int, set[str]] = {}

    # -- low level ------------------------------------------------------------------------------------
    def line(self, at: int | None = None) -> int:
        return self.s.count("\n", 0, self.i if at is None else at) + 1

    def error(self, message: str) -> ParseError:
        return ParseError(f"{self.path}:{self.line()}: {message}")

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def skip(self, newlines: bool = True) -> None:
        """Skip blanks and comments (and newlines and pragmas when ``newlines``)."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "\n" and newlines:
                self.i += 1
            elif s.startswith("//", self.i):
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i)
                if end < 0:
                    raise self.error("unterminated /* comment")
                self.i = end + 2
            elif c == "#" and newlines:
                end = s.find("\n", self.i)
                end = len(s) if end < 0 else end
                words = s[self.i:end].split()
                if words and words[0] == "#disable-next-line":
                    self.pragmas[self.line()] = set(words[1:])
                self.i = end
            else:
                return

    def word(self) -> str | None:
        m = _IDENT.match(self.s, self.i)
        return m.group(0) if m else None

    def take_word(self) -> str:
        w = self.word()
        if w is None:
            raise self.error(f"expected a name, found {self.s[self.i:self.i + 20]!r}")
        self.i += len(w)
        return w

    def expect(self, text: str) -> None:
        self.skip()
        if not self.s.startswith(text, self.i):
            raise self.error(f"expected {text!r}, found {self.s[self.i:self.i + 20]!r}")
        self.i += len(text)

    def string_end(self, start: int) -> int:
        """Index after the string literal starting at ``start`` (interpolations may nest strings)."""
        s = self.s
        if s.startswith("'''", start):
            end = s.find("'''", start + 3)
            if end < 0:
                raise self.error("unterminated ''' string")
            return end + 3
        i = start + 1
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if c == "'":
                return i + 1
            if s.startswith("${", i):
                i = self.balanced_end(i + 1)
                continue
            if c == "\n":
                raise self.error("newline in a string literal")
            i += 1
        raise self.error("unterminated string")

    def balanced_end(self, start: int) -> int:
        """Index after the bracket group opening at ``start``."""
        s, stack, i = self.s, [_CLOSERS[self.s[start]]], start + 1
        while i < len(s) and stack:
            c = s[i]
            if c == "'":
                i = self.string_end(i)
                continue
            if s.startswith("//", i):
                i = s.find("\n", i)
                continue
            if c in _CLOSERS:
                stack.append(_CLOSERS[c])
            elif c in ")]}":
                if c != stack[-1]:
                    raise self.error(f"unbalanced {c!r}")
                stack.pop()
            i += 1
        if stack:
            raise self.error("unbalanced brackets")
        return i

    # -- values ---------------------------------------------------------------------------------------
    def value(self) -> object:
        self.skip()
        c = self.peek()
        if c == "{":
            return self.expression(self.object())
        if c == "[":
            start = self.i
            self.i += 1
            self.skip()
            if self.word() == "for":
                self.i = start
                return self.loop()
            self.i = start
            return self.expression(self.array())
        if self.word() == "if" and self.s[self.i + 2:].lstrip(" \t").startswith("("):
            self.i += 2
            self.skip()
            end = self.balanced_end(self.i)
            condition = self.s[self.i + 1:end - 1]
            self.i = end
            return If(condition, self.value())
        if c == "'":
            start = self.i
            self.i = self.string_end(start)
            raw = self.s[start:self.i]
            literal = StrLit(None if "${" in raw else raw[1:-1].replace("\\'", "'").replace("\\\\", "\\"), raw)
            return self.expression(literal)
        return self.expression(None)

    def expression(self, first: object | None) -> object:
        """Continue past a literal if an operator or call follows; consume an opaque expression to its end."""
        start = self.i
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in "\n,)]}":
                break
            if s.startswith("//", self.i):
                break
            if c == "'":
                self.i = self.string_end(self.i)
            elif c in "([{":
                self.i = self.balanced_end(self.i)
            else:
                self.i += 1
        rest = s[start:self.i].strip()
        if first is not None and not rest:
            return first
        return Expr(rest if first is None else f"{first!r} {rest}")

    def object(self) -> ObjectLit:
        obj = ObjectLit(line=self.line())
        self.expect("{")
        while True:
            self.skip()
            c = self.peek()
            if c == "}":
                self.i += 1
                return obj
            if c == ",":
                self.i += 1
                continue
            if c == "@":  # a decorator on a property (types): skip it
                self.i += 1
                self.take_word()
                if self.peek() == "(":
                    self.i = self.balanced_end(self.i)
                continue
            if self.peek(3) == "...":
                self.i += 3
                self.expression(None)
                obj.spread = True
                continue
            line = self.line()
            if c == "'":
                start = self.i
                self.i = self.string_end(start)
                raw = self.s[start:self.i]
                key = raw[1:-1] if "${" not in raw else raw
            else:
                key = self.take_word()
                if key == "resource":
                    self.skip()
                    if self.peek() != ":":
                        obj.resources.append(self.resource(line, []))
                        continue
            self.expect(":")
            obj.props.append(Prop(key, self.value(), line))

    def array(self) -> ArrayLit:
        arr = ArrayLit()
        self.expect("[")
        while True:
            self.skip()
            c = self.peek()
            if c == "]":
                self.i += 1
                return arr
            if c == ",":
                self.i += 1
                continue
            arr.items.append(self.value())

    def loop(self) -> Loop:
        self.expect("[")
        self.skip()
        # 'for <item or (item, index)> in <expression>:' up to the ':' at depth 0
        s = self.s
        while self.i < len(s) and s[self.i] != ":":
            if s[self.i] == "'":
                self.i = self.string_end(self.i)
            elif s[self.i] in "([{":
                self.i = self.balanced_end(self.i)
            else:
                self.i += 1
        self.i += 1
        body = self.value()
        self.expect("]")
        return Loop(body)

    # -- declarations ---------------------------------------------------------------------------------
    def resource(self, line: int, decorators: list[str]) -> Declaration:
        self.skip()
        name = self.take_word()
        self.skip()
        start = self.i
        self.i = self.string_end(start)
        type_ = self.s[start + 1:self.i - 1]
        self.skip()
        existing = False
        if self.word() == "existing":
            existing = True
            self.i += len("existing")
        self.expect("=")
        return Declaration("resource", name, line, type_, self.value(), existing=existing, decorators=decorators)

    def file(self) -> list[Declaration]:
        out: list[Declaration] = []
        decorators: list[str] = []
        while True:
            self.skip()
            if self.i >= len(self.s):
                return out
            if self.peek() == "@":
                start = self.i
                self.i += 1
                self.take_word()
                if self.peek() == "(":
                    self.i = self.balanced_end(self.i)
                decorators.append(self.s[start:self.i])
                continue
            line = self.line()
            keyword = self.take_word()
            self.skip(newlines=False)
            if keyword == "resource":
                out.append(self.resource(line, decorators))
            elif keyword == "module":
                name = self.take_word()
                self.skip()
                start = self.i
                self.i = self.string_end(start)
                path = self.s[start + 1:self.i - 1]
                self.expect("=")
                out.append(Declaration("module", name, line, path, self.value(), decorators=decorators))
            elif keyword in ("param", "output"):
                name = self.take_word()
                self.skip(newlines=False)
                if keyword == "output" and self.word() == "resource":
                    self.take_word()
                    self.skip(newlines=False)
                    start = self.i
                    self.i = self.string_end(start)
                    type_ = self.s[start:self.i]
                else:
                    start = self.i
                    self.expression(None)
                    type_ = self.s[start:self.i].split("=")[0].strip()
                    self.i = start + len(self.s[start:self.i].split("=")[0])
                self.skip(newlines=False)
                value, has_default = None, False
                if self.peek() == "=":
                    self.i += 1
                    value, has_default = self.value(), True
                out.append(Declaration(keyword, name, line, type_, value, has_default=has_default,
                                       decorators=decorators))
            elif keyword in ("var", "type"):
                name = self.take_word()
                self.expect("=")
                out.append(Declaration(keyword, name, line, value=self.value(), decorators=decorators))
            elif keyword == "targetScope":
                self.expect("=")
                out.append(Declaration("targetScope", "targetScope", line, value=self.value()))
            elif keyword in ("extension", "import", "metadata", "func", "using"):
                start = self.i
                self.expression(None)
                out.append(Declaration(keyword, self.s[start:self.i].strip(), line))
            else:
                raise self.error(f"unknown declaration {keyword!r}")
            decorators = []


def parse(text: str, path: str | Path = "<bicep>") -> BicepFile:
    parser = _Parser(text, Path(path))
    declarations = parser.file()
    return BicepFile(Path(path), declarations, parser.pragmas, text)


def parse_file(path: str | Path) -> BicepFile:
    return parse(Path(path).read_text(encoding="utf-8"), path)
