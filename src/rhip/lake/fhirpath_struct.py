"""Typed fast path (DuckDB): FHIRPath over a struct parsed once per resource with ``json_transform``.

For expressions made only of element paths, ``first()``, ``where()``, ``exists()``/``empty()``,
``not()``, comparisons, ``and``/``or``, ``ofType()``, ``getResourceKey()`` and
``getReferenceKey()``, the compiler asks for exactly the elements the view touches, typed from the
FHIR R4 model, and DuckDB converts each resource into that struct once. Element access then costs
a field lookup instead of a JSON parse. Anything else raises :class:`Unsupported` and the column
falls back to the schema-free JSON compilation, so correctness never depends on this path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rhip.lake.fhirpath import Binary, Call, Const, Literal, Member, Node, This
from rhip.lake.fhirpath_sql import Env
from rhip.lake.fhirpath_typed import element

__all__ = ["Schema", "TVal", "Unsupported", "compile_typed"]

_STRUCT_COL = "r.t_"


class Unsupported(Exception):
    """The expression needs the generic compilation."""


@dataclass
class Schema:
    """The elements a view reads, as a tree: name -> (is_array, children)."""

    children: dict[str, Schema] = field(default_factory=dict)
    is_array: bool = False
    leaf: bool = True

    def structure(self) -> Any:
        """The ``json_transform`` structure description."""
        if self.leaf and not self.children:
            node: Any = "VARCHAR"
        else:
            node = {name: child.structure() for name, child in self.children.items()}
        return [node] if self.is_array else node

    def describe(self) -> str:
        """The structure as JSON text for ``json_transform``."""
        return json.dumps({n: c.structure() for n, c in self.children.items()}, separators=(",", ":"))


@dataclass(frozen=True)
class TVal:
    """A typed value: SQL, whether it is a list, its FHIR type and its schema node (None for scalars)."""

    sql: str
    is_list: bool
    fhir_type: str | None
    node: Schema | None
    kind: str = "value"  # value | bool | str | num


def compile_typed(node: Node, ctx: TVal, env: Env) -> TVal:
    """Compile ``node`` on a typed context; raise Unsupported when it needs the generic path."""
    if isinstance(node, This):
        return ctx
    if isinstance(node, Member):
        if node.base is None and node.name == env.resource_type:
            return ctx
        base = ctx if node.base is None else compile_typed(node.base, ctx, env)
        return _member(base, node.name)
    if isinstance(node, Literal):
        if node.kind in ("string", "code"):
            return TVal(env.bind(str(node.value)), False, "string", None, "str")
        if node.kind == "boolean":
            return TVal("TRUE" if node.value else "FALSE", False, "boolean", None, "bool")
        if node.kind in ("integer", "decimal"):
            return TVal(f"CAST({env.bind(float(str(node.value)))} AS DOUBLE)", False, "decimal", None, "num")
        raise Unsupported
    if isinstance(node, Const):
        if node.name not in env.constants:
            raise Unsupported
        fhir_type, value = env.constants[node.name]
        if fhir_type == "boolean" or fhir_type in ("integer", "decimal", "positiveInt", "unsignedInt"):
            raise Unsupported
        return TVal(env.bind(str(value)), False, fhir_type, None, "str")
    if isinstance(node, Binary):
        return _binary(node, ctx, env)
    if isinstance(node, Call):
        return _call(node, ctx, env)
    raise Unsupported


def _member(base: TVal, name: str) -> TVal:
    if base.node is None or base.fhir_type is None:
        raise Unsupported
    found = element(base.fhir_type, name)
    if found is None:
        raise Unsupported
    child_type, repeats = found
    base.node.leaf = False
    child = base.node.children.setdefault(name, Schema(is_array=repeats))
    if base.is_list:
        mapped = f'list_transform({base.sql}, lambda x_: x_."{name}")'
        # flatten() already skips NULL lists, so repeating children need no extra filter pass.
        sql = f"flatten({mapped})" if repeats else f"list_filter({mapped}, lambda y_: y_ IS NOT NULL)"
        return TVal(sql, True, child_type, child)
    access = f'({base.sql})."{name}"'
    if repeats:
        return TVal(f"coalesce({access}, [])", True, child_type, child)
    return TVal(access, False, child_type, child)


def as_bool(v: TVal) -> str:
    """A nullable boolean (FHIR boolean elements are read as text)."""
    if v.kind == "bool":
        return v.sql
    if v.is_list or v.node is None or v.fhir_type != "boolean":
        raise Unsupported
    return f"(CASE ({v.sql}) WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END)"


def _one(v: TVal) -> str:
    return f"({v.sql})[1]" if v.is_list else v.sql


def _binary(node: Binary, ctx: TVal, env: Env) -> TVal:
    left = compile_typed(node.left, ctx, env)
    right = compile_typed(node.right, ctx, env)
    if node.op in ("and", "or"):
        return TVal(f"({as_bool(left)} {node.op.upper()} {as_bool(right)})", False, "boolean", None, "bool")
    ops = {"=": "=", "!=": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
    if node.op not in ops:
        raise Unsupported
    kinds = {left.kind, right.kind}
    if "num" in kinds:
        a, b = (f"TRY_CAST({_one(v)} AS DOUBLE)" if v.kind != "num" else v.sql for v in (left, right))
    elif "str" in kinds and node.op in ("=", "!="):
        a, b = _one(left), _one(right)
    else:
        raise Unsupported
    if left.is_list or right.is_list:
        # FHIRPath equality on more than one item is empty; keep to singletons.
        raise Unsupported
    return TVal(f"({a} {ops[node.op]} {b})", False, "boolean", None, "bool")


def _call(node: Call, ctx: TVal, env: Env) -> TVal:
    if node.name == "ofType" and isinstance(node.base, Member) and len(node.args) == 1:
        arg = node.args[0]
        if not isinstance(arg, Member) or arg.base is not None:
            raise Unsupported
        name = node.base.name + arg.name[:1].upper() + arg.name[1:]
        return compile_typed(Member(node.base.base, name), ctx, env)
    base = ctx if node.base is None else compile_typed(node.base, ctx, env)
    if node.name == "first" and not node.args:
        return TVal(f"({base.sql})[1]", False, base.fhir_type, base.node) if base.is_list else base
    if node.name in ("exists", "empty") and len(node.args) <= 1:
        if node.args:
            base = _where(base, node.args[0], env)
        test = f"(len({base.sql}) > 0)" if base.is_list else f"(({base.sql}) IS NOT NULL)"
        return TVal(test if node.name == "exists" else f"(NOT {test})", False, "boolean", None, "bool")
    if node.name == "where" and len(node.args) == 1:
        return _where(base, node.args[0], env)
    if node.name == "not" and not node.args:
        return TVal(f"(NOT {as_bool(base)})", False, "boolean", None, "bool")
    if node.name == "getResourceKey" and not node.args and base is ctx:
        return _member(base, "id")
    if node.name == "getReferenceKey" and len(node.args) <= 1:
        return _reference_key(base, node.args, env)
    raise Unsupported


def _where(base: TVal, cond: Node, env: Env) -> TVal:
    if base.node is None:
        raise Unsupported
    var = env.var("w")
    elem = TVal(var, False, base.fhir_type, base.node)
    test = as_bool(compile_typed(cond, elem, env))
    lst = base.sql if base.is_list else f"CASE WHEN ({base.sql}) IS NULL THEN [] ELSE [{base.sql}] END"
    return TVal(f"list_filter({lst}, lambda {var}: coalesce({test}, FALSE))", True, base.fhir_type, base.node)


def _reference_key(base: TVal, args: tuple[Node, ...], env: Env) -> TVal:
    ref = _one(_member(base, "reference"))
    # 'Type/id' or '.../Type/id/_history/n' by splitting (no per-row regex); no '/' -> NULL.
    history = f"contains({ref}, '/_history/')"
    ident = (
        f"(CASE WHEN NOT contains({ref}, '/') THEN NULL WHEN {history} "
        f"THEN nullif(split_part({ref}, '/', -3), '') ELSE nullif(split_part({ref}, '/', -1), '') END)"
    )
    rtype = f"(CASE WHEN {history} THEN split_part({ref}, '/', -4) ELSE split_part({ref}, '/', -2) END)"
    if not args:
        return TVal(ident, False, "id", None, "str")
    target = args[0]
    if not isinstance(target, Member) or target.base is not None:
        raise Unsupported
    wanted = env.bind(target.name)
    general = f"(CASE WHEN {rtype} = {wanted} THEN {ident} END)"
    # Fast path for the usual 'Type/id': one prefix test and one search instead of four splits.
    prefix, start = env.bind(target.name + "/"), len(target.name) + 2
    rest = f"substr({ref}, {start})"
    fast = f"(CASE WHEN starts_with({ref}, {prefix}) AND NOT contains({rest}, '/') THEN nullif({rest}, '') "
    return TVal(f"{fast}ELSE {general} END)", False, "id", None, "str")


def root(resource_type: str) -> TVal:
    """The typed resource (the struct column the compiler adds to the source)."""
    return TVal(_STRUCT_COL, False, resource_type, Schema(leaf=False))
