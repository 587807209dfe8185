"""A parser for the FHIRPath subset that SQL-on-FHIR v2 ViewDefinitions use.

The lake never evaluates FHIRPath row by row: expressions are parsed here into a small immutable
syntax tree, and :mod:`rhip.lake.compiler` turns that tree into SQL for DuckDB or Spark. Keeping the
parser separate lets the compiler reject unsupported syntax before any SQL is produced, with the
error naming the expression and the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rhip.errors import InvalidResource

__all__ = ["Binary", "Call", "Const", "Index", "Literal", "Member", "Node", "This", "Unary", "parse"]


@dataclass(frozen=True)
class Literal:
    """A literal: ``kind`` is one of string, integer, decimal, boolean, date, dateTime, time, empty."""

    kind: str
    value: object


@dataclass(frozen=True)
class Const:
    """An environment variable such as ``%name`` or ``%rowIndex``."""

    name: str


@dataclass(frozen=True)
class This:
    """``$this`` (or the implicit input of a path)."""


@dataclass(frozen=True)
class Member:
    """``base.name``; ``base`` is None when the name starts a path."""

    base: Node | None
    name: str


@dataclass(frozen=True)
class Call:
    """``base.fn(args)``; ``base`` is None for a function that starts a path."""

    base: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Index:
    """``base[index]``."""

    base: Node
    index: Node


@dataclass(frozen=True)
class Binary:
    """A binary operator (``=``, ``and``, ``+``, ``|``...)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Unary:
    """A unary ``-`` or ``+``."""

    op: str
    operand: Node


Node = Literal | Const | This | Member | Call | Index | Binary | Unary

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.)*')
     |(?P<dt>@(?:T[0-9:.]+|[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?(?:T[0-9:.]*(?:Z|[+-][0-9]{2}:[0-9]{2})?)?))
     |(?P<num>[0-9]+(?:\.[0-9]+)?)
     |(?P<const>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]*`))
     |(?P<this>\$this|\$index|\$total)
     |(?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
     |(?P<op><=|>=|!=|!~|[-+*/&|=~<>()\[\].,])
    )""",
    re.VERBOSE,
)

_PRECEDENCE: list[tuple[str, ...]] = [
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<", ">", "<=", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
]


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidResource(f"FHIRPath syntax error at position {pos} in expression {text!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def error(self, what: str) -> InvalidResource:
        return InvalidResource(f"FHIRPath syntax error ({what}) at token {self.pos} in {self.text!r}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise self.error(f"expected {value or 'a token'}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise self.error("unexpected trailing input")
        return node

    def binary(self, level: int) -> Node:
        if level == len(_PRECEDENCE):
            return self.unary()
        left = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok[0] in ("op", "id") and tok[1] in _PRECEDENCE[level]:
            self.pos += 1
            if tok[1] in ("is", "as"):
                type_name = self.take()[1]
                left = Call(left, "ofType" if tok[1] == "as" else "is", (Member(None, type_name),))
                continue
            right = self.binary(level + 1)
            left = Binary(tok[1], left, right)
        return left

    def unary(self) -> Node:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ("+", "-"):
            self.pos += 1
            return Unary(tok[1], self.unary())
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while (tok := self.peek()) is not None and tok[1] in (".", "["):
            self.pos += 1
            if tok[1] == "[":
                index = self.binary(0)
                self.take("]")
                node = Index(node, index)
                continue
            name = self.take()
            if name[0] != "id":
                raise self.error("expected a name after '.'")
            node = self.invocation(node, _ident(name[1]))
        return node

    def invocation(self, base: Node | None, name: str) -> Node:
        tok = self.peek()
        if tok is not None and tok[1] == "(":
            self.pos += 1
            args: list[Node] = []
            if self.peek() is not None and self.peek() != ("op", ")"):
                args.append(self.binary(0))
                while self.peek() == ("op", ","):
                    self.pos += 1
                    args.append(self.binary(0))
            self.take(")")
            return Call(base, name, tuple(args))
        return Member(base, name)

    def term(self) -> Node:
        tok = self.take()
        kind, value = tok
        if kind == "str":
            return Literal("string", _unescape(value[1:-1]))
        if kind == "num":
            return Literal("decimal" if "." in value else "integer", value)
        if kind == "dt":
            body = value[1:]
            if body.startswith("T"):
                return Literal("time", body[1:])
            return Literal("dateTime" if "T" in body else "date", body)
        if kind == "const":
            return Const(value[1:].strip("`"))
        if kind == "this":
            if value != "$this":
                raise self.error(f"{value} is not supported")
            return This()
        if kind == "id":
            if value in ("true", "false"):
                return Literal("boolean", value == "true")
            return self.invocation(None, _ident(value))
        if value == "(":
            inner = self.binary(0)
            self.take(")")
            return inner
        if value == "{":
            self.take("}")
            return Literal("empty", None)
        raise self.error(f"unexpected {value!r}")


def _ident(text: str) -> str:
    return text[1:-1] if text.startswith("`") else text


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), text)


def parse(expression: str) -> Node:
    """Parse a FHIRPath expression into a syntax tree.

    Raises:
        InvalidResource: the expression is not valid FHIRPath (the message names the expression).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidResource("FHIRPath expression must be a non-empty string")
    return _Parser(expression).parse()
