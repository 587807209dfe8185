"""Compile SQL-on-FHIR v2 ViewDefinitions into one SQL query per view.

A ViewDefinition's select tree (``column``, nested ``select``, ``forEach``, ``forEachOrNull``,
``repeat``, ``unionAll``) becomes a list of row structs per resource, built with list lambdas and
exploded once at the top; a view without any iteration compiles to plain scalar expressions, which
is what keeps the common demographic and observation views close to hand-written SQL in speed. The
same compilation feeds DuckDB and Spark through :mod:`rhip.lake.dialect`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rhip.errors import InvalidResource
from rhip.lake.dialect import Dialect, get_dialect
from rhip.lake.fhirpath import Member, parse
from rhip.lake.fhirpath_sql import (
    Env,
    Val,
    _typed_member,
    as_bool,
    as_list,
    as_one,
    compile_path,
    member_chain,
)
from rhip.lake.fhirpath_struct import TVal, Unsupported, compile_typed
from rhip.lake.fhirpath_struct import root as struct_root
from rhip.lake.typed_copy import TYPED_COLUMN, covers

__all__ = ["Column", "CompiledView", "compile_view", "validate_view"]

_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESOURCE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
#: How deep ``repeat`` follows its paths (the SQL is unrolled, so it has a fixed depth).
REPEAT_DEPTH = 6
_TYPED = {"bool": "boolean", "int": "integer", "num": "decimal"}


@dataclass(frozen=True)
class Column:
    """One output column of a view."""

    name: str
    fhir_type: str
    collection: bool = False


@dataclass
class CompiledView:
    """A compiled view: SQL text, its bound parameters and the output columns, in order."""

    resource: str
    sql: str
    params: dict[str, object]
    columns: list[Column]
    dialect: str
    #: DuckDB: the elements the typed path reads (a ``json_transform`` structure), else None.
    typed_elements: dict[str, Any] | None = None

    @property
    def column_names(self) -> list[str]:
        """Output column names in order."""
        return [c.name for c in self.columns]


@dataclass
class _Rows:
    """Rows from one select node: one row of scalar fields, or an SQL list of row structs."""

    names: list[str]
    fields: list[tuple[str, str]] = field(default_factory=list)
    list_sql: str | None = None


class _Compiler:
    def __init__(self, view: dict[str, Any], dialect: Dialect) -> None:
        self.view = view
        self.d = dialect
        self.env = Env(dialect, _constants(view), resource_type=str(view["resource"]))
        self.columns: dict[str, Column] = {}
        #: The resource as a struct of exactly the elements used (DuckDB typed fast path).
        self.struct_root: TVal | None = struct_root(view["resource"]) if dialect.name == "duckdb" else None

    # -- columns ---------------------------------------------------------------------------
    def column(self, col: Any, ctx: Val, where: str) -> tuple[str, str]:
        if not isinstance(col, dict) or not isinstance(col.get("path"), str):
            raise InvalidResource(f"{where}: column needs a string 'path'")
        name = col.get("name")
        if not isinstance(name, str) or not _COLUMN_NAME.match(name):
            raise InvalidResource(f"{where}: column name must match {_COLUMN_NAME.pattern}")
        collection = col.get("collection") is True
        typed = self.typed(col["path"], ctx)
        if typed is not None:
            return self.typed_column(name, col, typed, collection, where)
        val = self.path(col["path"], ctx, f"{where}.{name}")
        fhir_type = col.get("type") or _TYPED.get(val.kind, "string")
        if not isinstance(fhir_type, str):
            raise InvalidResource(f"{where}.{name}: type must be a string")
        if collection:
            sql = self.d.cast_list(as_list(val, self.env), fhir_type)
        elif val.kind == "list":
            one = self.d.item(val.sql, "0")
            too_many = self.d.raise_error(
                self.env.bind(f"column {name} has more than one value; set collection")
            )
            sql = self.d.cast(
                f"(CASE WHEN {self.d.length(val.sql)} > 1 THEN {too_many} ELSE {one} END)", fhir_type
            )
        elif val.kind == "one":
            sql = self.d.cast(val.sql, fhir_type)
        elif fhir_type in ("boolean", "decimal") or _TYPED.get(val.kind) == fhir_type:
            sql = val.sql
        else:
            sql = self.d.cast(as_one(val, self.env), fhir_type)
        if name in self.columns:
            raise InvalidResource(f"{where}: duplicate column name {name!r}")
        self.columns[name] = Column(name, fhir_type, collection)
        return name, sql

    def typed(self, expression: Any, ctx: Val) -> TVal | None:
        """The typed (struct) compilation of a root-level expression, or None to use JSON."""
        if self.struct_root is None or not self.env.is_root(ctx) or not isinstance(expression, str):
            return None
        try:
            return compile_typed(parse(expression), self.struct_root, self.env)
        except Unsupported:
            return None

    def typed_column(
        self, name: str, col: dict[str, Any], tv: TVal, collection: bool, where: str
    ) -> tuple[str, str]:
        fhir_type = col.get("type") or ("boolean" if tv.kind == "bool" else "string")
        if not isinstance(fhir_type, str):
            raise InvalidResource(f"{where}.{name}: type must be a string")
        if collection:
            lst = tv.sql if tv.is_list else f"CASE WHEN ({tv.sql}) IS NULL THEN [] ELSE [{tv.sql}] END"
            sql = self.d.cast_list(lst, fhir_type)
        elif tv.is_list:
            too_many = self.d.raise_error(
                self.env.bind(f"column {name} has more than one value; set collection")
            )
            sql = self.d.cast(
                f"(CASE WHEN len({tv.sql}) > 1 THEN {too_many} ELSE ({tv.sql})[1] END)", fhir_type
            )
        elif tv.kind == "bool":
            sql = tv.sql
        else:
            sql = self.d.cast(tv.sql, fhir_type)
        if name in self.columns:
            raise InvalidResource(f"{where}: duplicate column name {name!r}")
        self.columns[name] = Column(name, fhir_type, collection)
        return name, sql

    def path(self, expression: Any, ctx: Val, where: str) -> Val:
        if not isinstance(expression, str):
            raise InvalidResource(f"{where}: FHIRPath must be a string")
        node = parse(expression)
        chain = member_chain(node)
        if isinstance(node, Member) and (typed := _typed_member(node, ctx, self.env)) is not None:
            return typed
        if chain and ctx.kind == "one" and self.d.strict_json_path and len(chain) > 1:
            # Fast path: a dotted path through objects only is one JSON lookup.
            if self.env.is_root(ctx):
                fast = self.d.get_json_path(self.env.root_json(chain[0]), chain[1:])
            else:
                fast = self.d.get_json_path(ctx.sql, chain)
            slow = compile_path(node, ctx, self.env).sql
            return Val(f"(CASE WHEN ({fast}) IS NOT NULL THEN {self.d.norm(fast)} ELSE {slow} END)", "list")
        return compile_path(node, ctx, self.env)

    # -- select tree ------------------------------------------------------------------------
    def node(self, node: Any, ctx: Val, where: str) -> _Rows:
        if not isinstance(node, dict):
            raise InvalidResource(f"{where}: select entry must be an object")
        iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in node]
        if len(iterators) > 1:
            raise InvalidResource(f"{where}: use only one of forEach, forEachOrNull, repeat")
        if not iterators:
            return self.parts(node, ctx, where)
        key = iterators[0]
        if key == "repeat":
            paths = node["repeat"]
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
                raise InvalidResource(f"{where}.repeat: must be a list of FHIRPath strings")
            items = self.repeat(paths, ctx, where)
        else:
            if not isinstance(node[key], str):
                raise InvalidResource(f"{where}.{key}: must be a FHIRPath string")
            items = as_list(self.path(node[key], ctx, f"{where}.{key}"), self.env)
        var, idx = self.env.var("e"), self.env.var("i")
        saved = self.env.row_index
        self.env.row_index = self.d.index0(idx)
        body = self.parts(node, Val(var, "one"), f"{where}.{key}")
        self.env.row_index = saved
        body_list = self.as_list(body)
        lst = self.d.flatten(self.d.transform(items, var, body_list, index=idx))
        if key == "forEachOrNull":
            # No items: one row computed on an empty item (so %rowIndex is 0), or all NULLs.
            nulls = self.d.array([self.d.null_struct([(n, self.sql_type(n)) for n in body.names])])
            null_item = self.d.array([f"CAST(NULL AS {self.d.sql_type('string')})"])
            on_null = self.d.flatten(self.d.transform(null_item, var, body_list, index=idx))
            lst = (
                f"(CASE WHEN {self.d.length(items)} = 0 THEN (CASE WHEN {self.d.length(on_null)} > 0 "
                f"THEN {on_null} ELSE {nulls} END) ELSE {lst} END)"
            )
        return _Rows(body.names, list_sql=lst)

    def repeat(self, paths: list[str], ctx: Val, where: str, depth: int | None = None) -> str:
        if depth is None:
            depth = REPEAT_DEPTH if len(paths) == 1 else max(2, REPEAT_DEPTH - 2 * (len(paths) - 1))
        if depth == 0:
            return self.d.empty_list()
        out: str | None = None
        for p in paths:
            children = as_list(self.path(p, ctx, f"{where}.repeat"), self.env)
            var = self.env.var("r")
            below = self.repeat(paths, Val(var, "one"), where, depth - 1)
            branch = self.d.flatten(self.d.transform(children, var, self.d.concat(self.d.single(var), below)))
            out = branch if out is None else self.d.concat(out, branch)
        return out or self.d.empty_list()

    def parts(self, node: dict[str, Any], ctx: Val, where: str) -> _Rows:
        parts: list[_Rows] = []
        cols = node.get("column", [])
        if not isinstance(cols, list):
            raise InvalidResource(f"{where}.column: must be a list")
        if cols:
            fields = [self.column(c, ctx, f"{where}.column[{i}]") for i, c in enumerate(cols)]
            parts.append(_Rows([n for n, _ in fields], fields=fields))
        selects = node.get("select", [])
        if not isinstance(selects, list):
            raise InvalidResource(f"{where}.select: must be a list")
        parts.extend(self.node(s, ctx, f"{where}.select[{i}]") for i, s in enumerate(selects))
        if "unionAll" in node:
            parts.append(self.union(node["unionAll"], ctx, f"{where}.unionAll"))
        return self.product(parts)

    def union(self, branches: Any, ctx: Val, where: str) -> _Rows:
        if not isinstance(branches, list) or not branches:
            raise InvalidResource(f"{where}: must be a non-empty list")
        before = dict(self.columns)
        names: list[str] | None = None
        lists: list[str] = []
        for i, branch in enumerate(branches):
            self.columns = dict(before)
            rows = self.node(branch, ctx, f"{where}[{i}]")
            if names is not None and rows.names != names:
                raise InvalidResource(f"{where}[{i}]: unionAll branches must have the same columns in order")
            names = rows.names
            lists.append(self.as_list(rows))
        sql = lists[0]
        for other in lists[1:]:
            sql = self.d.concat(sql, other)
        return _Rows(names or [], list_sql=sql)

    def product(self, parts: list[_Rows]) -> _Rows:
        names = [n for p in parts for n in p.names]
        if len(set(names)) != len(names):
            raise InvalidResource("duplicate column names in view")
        lists = [p for p in parts if p.list_sql is not None]
        if not lists:
            return _Rows(names, fields=[f for p in parts for f in p.fields])
        vars_ = {id(p): self.env.var("x") for p in lists}
        fields: list[tuple[str, str]] = []
        for p in parts:
            if p.list_sql is None:
                fields.extend(p.fields)
            else:
                fields.extend((n, self.d.field(vars_[id(p)], n)) for n in p.names)
        # Cross product: nested transforms, the innermost building the combined row.
        sql = self.d.struct(fields)
        for depth, p in enumerate(reversed(lists)):
            sql = self.d.transform(p.list_sql or "", vars_[id(p)], sql)
            if depth > 0:
                sql = self.d.flatten(sql)
        return _Rows(names, list_sql=sql)

    def as_list(self, rows: _Rows) -> str:
        if rows.list_sql is not None:
            return rows.list_sql
        return self.d.array([self.d.struct(rows.fields)])

    def sql_type(self, name: str) -> str:
        col = self.columns[name]
        base = self.d.sql_type(col.fhir_type)
        if col.collection:
            return f"{base}[]" if self.d.name == "duckdb" else f"array<{base}>"
        return base


def compile_view(
    view: dict[str, Any],
    dialect: str | Dialect = "duckdb",
    *,
    source: str = "resources",
    typed_structure: dict[str, Any] | None = None,
) -> CompiledView:
    """Compile a ViewDefinition into SQL for an engine.

    Args:
        view: the ViewDefinition resource (JSON object).
        dialect: 'duckdb', 'spark' or a :class:`Dialect`.
        source: SQL relation (table, view or table function) with a text column ``resource``
            holding one resource of the view's type per row; the engine supplies it.
        typed_structure: DuckDB only: the structure of the source's ``typed`` struct column
            (:mod:`rhip.lake.typed_copy`); when it covers the elements the view reads, the view
            reads that column instead of parsing ``resource``.

    Raises:
        InvalidResource: the ViewDefinition is malformed or uses unsupported FHIRPath.
    """
    d = get_dialect(dialect) if isinstance(dialect, str) else dialect
    validate_view(view)
    comp = _Compiler(view, d)
    root = Val("r.resource", "one", view["resource"])
    comp.env.root = root
    if d.extract_members_sql("resource", ["id"]):
        comp.env.fragments = []
    rows = comp.parts({"select": view["select"]}, root, "ViewDefinition")
    conds = []
    for i, w in enumerate(view.get("where", []) or []):
        if not isinstance(w, dict) or not isinstance(w.get("path"), str):
            raise InvalidResource(f"ViewDefinition.where[{i}]: needs a string 'path'")
        typed = comp.typed(w["path"], root)
        if typed is not None and typed.kind == "bool":
            conds.append(typed.sql)
            continue
        conds.append(as_bool(comp.path(w["path"], root, f"ViewDefinition.where[{i}]"), comp.env, strict=True))
    where_sql = f" WHERE {' AND '.join(f'coalesce({c}, FALSE)' for c in conds)}" if conds else ""
    extra = []
    if comp.env.fragments:
        # Parse each resource once: every top-level member the view touches, in one extraction.
        extra.append(f"{d.extract_members_sql('resource', comp.env.fragments)} AS f_")
    typed_elements: dict[str, Any] | None = None
    if comp.struct_root is not None and comp.struct_root.node and comp.struct_root.node.children:
        typed_elements = json.loads(comp.struct_root.node.describe())
        if typed_structure and covers(typed_structure, comp.struct_root.node):
            extra.append(f"{TYPED_COLUMN} AS t_")
        else:
            structure = comp.struct_root.node.describe().replace("'", "''")
            extra.append(f"json_transform(resource, '{structure}') AS t_")
    if extra:
        source = f"(SELECT resource, {', '.join(extra)} FROM {source})"
    q = (lambda n: f'"{n}"') if d.name == "duckdb" else (lambda n: f"`{n}`")
    if rows.list_sql is None:
        select = ", ".join(f"{sql} AS {q(n)}" for n, sql in rows.fields)
        sql = f"SELECT {select} FROM {source} AS r{where_sql}"
    else:
        explode = "unnest" if d.name == "duckdb" else "explode"
        inner = f"SELECT {explode}({rows.list_sql}) AS row_ FROM {source} AS r{where_sql}"
        select = ", ".join(f"{d.field('row_', n)} AS {q(n)}" for n in rows.names)
        sql = f"SELECT {select} FROM ({inner}) AS t_"
    columns = [comp.columns[n] for n in rows.names]
    used = set(re.findall(r"[$:](p[0-9]+)\b", sql))
    params = {k: v for k, v in comp.env.params.items() if k in used}
    return CompiledView(view["resource"], sql, params, columns, d.name, typed_elements)


def validate_view(view: Any) -> None:
    """Check the shape of a ViewDefinition (resource, select, constants); raise InvalidResource."""
    if not isinstance(view, dict):
        raise InvalidResource("ViewDefinition must be a JSON object")
    if view.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise InvalidResource("resourceType must be ViewDefinition")
    resource = view.get("resource")
    if not isinstance(resource, str) or not _RESOURCE_NAME.match(resource):
        raise InvalidResource("ViewDefinition.resource must name a FHIR resource type")
    select = view.get("select")
    if not isinstance(select, list) or not select:
        raise InvalidResource("ViewDefinition.select must be a non-empty list")
    where = view.get("where", [])
    if where is not None and not isinstance(where, list):
        raise InvalidResource("ViewDefinition.where must be a list")
    _constants(view)


def _constants(view: dict[str, Any]) -> dict[str, tuple[str, object]]:
    out: dict[str, tuple[str, object]] = {}
    consts = view.get("constant", []) or []
    if not isinstance(consts, list):
        raise InvalidResource("ViewDefinition.constant must be a list")
    for i, c in enumerate(consts):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise InvalidResource(f"ViewDefinition.constant[{i}]: needs a name")
        values = [(k[5:], v) for k, v in c.items() if k.startswith("value") and len(k) > 5]
        if len(values) != 1:
            raise InvalidResource(f"ViewDefinition.constant[{i}]: needs exactly one value[x]")
        t, v = values[0]
        out[c["name"]] = (t[:1].lower() + t[1:], v)
    return out
