"""Compile FHIRPath syntax trees to SQL expressions over JSON text.

Every FHIRPath collection becomes an SQL list of text values (objects as JSON text, primitives as
raw text), a single nullable text value, or a typed SQL scalar when the type is known (literals,
comparisons, ``exists()``). Working with these three shapes lets simple paths stay cheap scalar
expressions while collections still follow FHIRPath semantics exactly. Literal values are bound as
parameters, never spliced into the SQL text.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from rhip.errors import InvalidResource
from rhip.lake.dialect import Dialect
from rhip.lake.fhirpath import Binary, Call, Const, Index, Literal, Member, Node, This, Unary

__all__ = ["Env", "Val", "compile_path"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRIMITIVES = {
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant",
    "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt", "uuid",
    "integer64",
}  # fmt: skip


@dataclass(frozen=True)
class Val:
    """A compiled FHIRPath value: ``kind`` is list, one, bool, num, int or str."""

    sql: str
    kind: str
    fhir_type: str | None = None
    #: (JSON SQL, JSON path) this value was read from, when it is a plain schema-known path.
    origin: tuple[str, str] | None = None


@dataclass
class Env:
    """Compilation environment: dialect, bound parameters, constants and the current row index."""

    dialect: Dialect
    constants: dict[str, tuple[str, object]]
    params: dict[str, object] = field(default_factory=dict)
    row_index: str = "0"
    root: Val | None = None
    resource_type: str = ""
    #: Top-level members extracted from the resource in one parse (DuckDB); None when disabled.
    fragments: list[str] | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def is_root(self, v: Val) -> bool:
        """Whether ``v`` is the resource itself (so its members come from the one-parse fragments)."""
        return self.fragments is not None and v is self.root

    def root_json(self, name: str) -> str:
        """SQL for the JSON of a top-level member of the resource, extracted once per row."""
        assert self.fragments is not None
        if name not in self.fragments:
            self.fragments.append(name)
        return f"r.f_[{self.fragments.index(name) + 1}]"

    def bind(self, value: object) -> str:
        """A placeholder for a bound value."""
        key = f"p{len(self.params)}"
        self.params[key] = value
        return self.dialect.param(key)

    def var(self, prefix: str = "e") -> str:
        """A fresh lambda variable name."""
        return f"{prefix}{next(self._counter)}_"


def as_list(v: Val, env: Env) -> str:
    """The value as an SQL list of text."""
    d = env.dialect
    if v.kind == "list":
        return v.sql
    if v.kind == "one":
        return d.single(v.sql)
    return d.single(as_text(v, env))


def as_one(v: Val, env: Env) -> str:
    """The first item as nullable text."""
    if v.kind == "list":
        return env.dialect.item(v.sql, "0")
    if v.kind == "one":
        return v.sql
    return as_text(v, env)


def as_text(v: Val, env: Env) -> str:
    """The value as nullable text."""
    if v.kind == "str":
        return v.sql
    if v.kind == "bool":
        return f"(CASE WHEN {v.sql} THEN 'true' WHEN NOT {v.sql} THEN 'false' END)"
    if v.kind in ("num", "int"):
        return env.dialect.to_text(v.sql)
    return as_one(v, env)


def as_bool(v: Val, env: Env, strict: bool = False) -> str:
    """The value as a nullable boolean; ``strict`` fails the query on a non-boolean value."""
    if v.kind == "bool":
        return v.sql
    if v.kind in ("num", "int", "str") and strict:
        raise InvalidResource("expression does not evaluate to a boolean")
    one = as_one(v, env)
    other = "NULL"
    if strict:
        other = env.dialect.raise_error(env.bind("where/filter expression did not evaluate to a boolean"))
    return (
        f"(CASE WHEN ({one}) IS NULL THEN NULL WHEN ({one}) = 'true' THEN TRUE "
        f"WHEN ({one}) = 'false' THEN FALSE ELSE {other} END)"
    )


def as_num(v: Val, env: Env) -> str:
    """The value as a nullable double."""
    if v.kind in ("num", "int"):
        return v.sql
    return env.dialect.to_double(as_text(v, env))


def compile_path(node: Node, ctx: Val, env: Env) -> Val:
    """Compile a syntax tree evaluated on the collection ``ctx``."""
    if isinstance(node, Literal):
        return _literal(node, env)
    if isinstance(node, Const):
        return _constant(node, env)
    if isinstance(node, This):
        return ctx
    if isinstance(node, Member):
        if node.base is None and node.name == env.resource_type and node.name[:1].isupper():
            return ctx
        typed = _typed_member(node, ctx, env)
        if typed is not None:
            return typed
        base = ctx if node.base is None else compile_path(node.base, ctx, env)
        out = _member(base, node.name, env)
        return Val(out.sql, out.kind, _child_type(base.fhir_type, node.name))
    if isinstance(node, Index):
        base = compile_path(node.base, ctx, env)
        idx = compile_path(node.index, ctx, env)
        return Val(env.dialect.item(as_list(base, env), _as_int(idx, env)), "one")
    if isinstance(node, Unary):
        operand = compile_path(node.operand, ctx, env)
        return Val(f"(-{as_num(operand, env)})", "num") if node.op == "-" else operand
    if isinstance(node, Binary):
        return _binary(node, ctx, env)
    if isinstance(node, Call):
        from rhip.lake.fhirpath_functions import compile_call

        return compile_call(node, ctx, env)
    raise InvalidResource(f"unsupported FHIRPath construct {type(node).__name__}")


def _typed_member(node: Member, ctx: Val, env: Env) -> Val | None:
    """A dotted path compiled as one JSON-path lookup when the FHIR model knows every step."""
    if not env.dialect.strict_json_path:
        return None
    names: list[str] = []
    cur: Node | None = node
    while isinstance(cur, Member):
        names.append(cur.name)
        cur = cur.base
    names.reverse()
    if cur is None and names[0] == env.resource_type and names[0][:1].isupper():
        names = names[1:]
        if not names:
            return None
    base = ctx if cur is None else compile_path(cur, ctx, env)
    from rhip.lake.fhirpath_typed import typed_chain

    return typed_chain(base, names, env)


def _child_type(type_name: str | None, name: str) -> str | None:
    if type_name is None:
        return None
    from rhip.lake.fhirpath_typed import element

    found = element(type_name, name)
    return found[0] if found else None


def _as_int(v: Val, env: Env) -> str:
    if v.kind == "int":
        return v.sql
    return env.dialect.to_bigint(as_text(v, env))


def _literal(node: Literal, env: Env) -> Val:
    if node.kind == "empty":
        return Val(env.dialect.empty_list(), "list")
    if node.kind == "boolean":
        return Val("TRUE" if node.value else "FALSE", "bool", "boolean")
    if node.kind == "integer":
        return Val(f"CAST({env.bind(int(str(node.value)))} AS BIGINT)", "int", "integer")
    if node.kind == "decimal":
        return Val(f"CAST({env.bind(float(str(node.value)))} AS DOUBLE)", "num", "decimal")
    return Val(env.bind(str(node.value)), "str", node.kind)


def _constant(node: Const, env: Env) -> Val:
    if node.name == "rowIndex":
        return Val(env.row_index, "int", "integer")
    if node.name in ("resource", "rootResource", "context") and env.root is not None:
        return env.root
    if node.name not in env.constants:
        raise InvalidResource(f"undefined constant %{node.name}")
    fhir_type, value = env.constants[node.name]
    if fhir_type == "boolean":
        return Val("TRUE" if value else "FALSE", "bool", "boolean")
    if fhir_type in ("integer", "positiveInt", "unsignedInt", "integer64"):
        return Val(f"CAST({env.bind(int(str(value)))} AS BIGINT)", "int", fhir_type)
    if fhir_type == "decimal":
        return Val(f"CAST({env.bind(float(str(value)))} AS DOUBLE)", "num", fhir_type)
    return Val(env.bind(str(value)), "str", fhir_type)


def _member(base: Val, name: str, env: Env) -> Val:
    d = env.dialect
    if not _NAME.match(name):
        raise InvalidResource(f"invalid element name {name!r}")
    if env.is_root(base):
        return Val(d.norm(env.root_json(name)), "list")
    if base.kind == "one":
        return Val(d.norm(d.get_json(base.sql, name)), "list")
    if base.kind != "list":
        return Val(d.empty_list(), "list")
    var = env.var()
    return Val(d.flatten(d.transform(base.sql, var, d.norm(d.get_json(var, name)))), "list")


def member_chain(node: Node) -> list[str] | None:
    """The names of a plain dotted path starting at the context (``a.b.c``), else None."""
    names: list[str] = []
    cur: Node | None = node
    while isinstance(cur, Member):
        names.append(cur.name)
        cur = cur.base
    if cur is not None or not names:
        return None
    return list(reversed(names))


_COMPARE = {"=": "=", "!=": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


def _binary(node: Binary, ctx: Val, env: Env) -> Val:
    op = node.op
    left = compile_path(node.left, ctx, env)
    right = compile_path(node.right, ctx, env)
    if op in ("and", "or"):
        return Val(f"({as_bool(left, env)} {op.upper()} {as_bool(right, env)})", "bool", "boolean")
    if op == "xor":
        return Val(f"({as_bool(left, env)} <> {as_bool(right, env)})", "bool", "boolean")
    if op == "implies":
        return Val(f"((NOT {as_bool(left, env)}) OR {as_bool(right, env)})", "bool", "boolean")
    if op in _COMPARE or op in ("~", "!~"):
        return _compare(op, left, right, env)
    if op in ("+", "-", "*", "/", "div", "mod"):
        return _arith(op, left, right, env)
    if op == "&":
        return Val(f"(coalesce({as_text(left, env)}, '') || coalesce({as_text(right, env)}, ''))", "str")
    if op == "|":
        d = env.dialect
        return Val(d.distinct(d.concat(as_list(left, env), as_list(right, env))), "list")
    if op == "in":
        return Val(env.dialect.contains(as_list(right, env), as_text(left, env)), "bool")
    if op == "contains":
        return Val(env.dialect.contains(as_list(left, env), as_text(right, env)), "bool")
    raise InvalidResource(f"unsupported FHIRPath operator {op!r}")


def _compare(op: str, left: Val, right: Val, env: Env) -> Val:
    if op in ("~", "!~"):
        expr = f"(lower(trim({as_text(left, env)})) = lower(trim({as_text(right, env)})))"
        return Val(expr if op == "~" else f"(NOT {expr})", "bool", "boolean")
    sql_op = _COMPARE[op]
    kinds = {left.kind, right.kind}
    if kinds & {"num", "int"}:
        return Val(f"({as_num(left, env)} {sql_op} {as_num(right, env)})", "bool", "boolean")
    if "bool" in kinds:
        return Val(f"({as_bool(left, env)} {sql_op} {as_bool(right, env)})", "bool", "boolean")
    if "str" in kinds:
        return Val(f"({as_text(left, env)} {sql_op} {as_text(right, env)})", "bool", "boolean")
    # Both sides come from the data: compare as numbers when both are numeric, else as text.
    lt, rt = as_one(left, env), as_one(right, env)
    d = env.dialect
    ln, rn = d.to_double(lt), d.to_double(rt)
    expr = (
        f"(CASE WHEN {ln} IS NOT NULL AND {rn} IS NOT NULL THEN {ln} {sql_op} {rn} "
        f"ELSE {lt} {sql_op} {rt} END)"
    )
    return Val(expr, "bool", "boolean")


def _arith(op: str, left: Val, right: Val, env: Env) -> Val:
    if op == "+" and "str" in (left.kind, right.kind) and not {left.kind, right.kind} & {"num", "int"}:
        return Val(f"({as_text(left, env)} || {as_text(right, env)})", "str")
    a, b = as_num(left, env), as_num(right, env)
    if op == "div":
        return Val(f"CAST(floor({a} / nullif({b}, 0)) AS BIGINT)", "int")
    if op == "mod":
        return Val(f"({a} - {b} * floor({a} / nullif({b}, 0)))", "num")
    if op == "/":
        return Val(f"({a} / nullif({b}, 0))", "num")
    kind = "int" if left.kind == right.kind == "int" else "num"
    return Val(f"({a} {op} {b})", kind)
