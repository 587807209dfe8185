"""Typed copy of each resource, written next to its JSON text at export time (DuckDB fast path).

Parsing JSON is the dominant cost of flattening: a view over JSON text converts every resource with
``json_transform`` on every run. The export therefore also stores, per row, a nested STRUCT column
``typed`` holding the resource parsed once, in the shape the compiler's typed path expects: element
names from the data plus every element the library's views read, repetition (LIST or not) from the
FHIR R4 model, primitives as VARCHAR, and only elements the model knows (extensions and unknown keys
stay in the JSON text). One structure per
resource type is inferred from the first exported chunk and kept in the lake's state file, so base
and delta files share one Parquet schema. A compiled view reads ``typed`` only when the stored
structure covers every element it needs with the same shape (:func:`covers`); otherwise it parses
the JSON text as before, so results never depend on which path ran.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import TYPE_CHECKING, Any

from rhip.lake.fhirpath_typed import element

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from rhip.lake.fhirpath_struct import Schema

__all__ = [
    "TYPED_COLUMN",
    "add_typed_column",
    "covers",
    "infer_structure",
    "library_structure",
    "merge_structures",
    "structure_sql_text",
]

#: Name of the struct column in the lake's Parquet files.
TYPED_COLUMN = "typed"
#: Deepest element nesting kept in the typed copy (deeper elements stay JSON text).
MAX_DEPTH = 6
#: Rows sampled to infer a type's structure.
SAMPLE_ROWS = 50_000


def infer_structure(con: duckdb.DuckDBPyConnection, relation: str, resource_type: str) -> dict[str, Any]:
    """The typed-copy structure of a resource type, inferred from ``relation.resource`` (JSON text).

    Args:
        con: a DuckDB connection on which ``relation`` is registered.
        relation: a registered relation name (from the caller, not from input) with a ``resource``
            text column.
        resource_type: the FHIR resource type of every row.
    """
    rows = con.execute(
        f"SELECT json_group_structure(json(resource)) FROM "
        f"(SELECT resource FROM {relation} WHERE resource IS NOT NULL LIMIT {SAMPLE_ROWS})"
    ).fetchall()
    if not rows or rows[0][0] is None:
        return {}
    data = json.loads(rows[0][0])
    found = _conform(data, resource_type, 1) if isinstance(data, dict) else {}
    return merge_structures(found, library_structure(resource_type))


def library_structure(resource_type: str) -> dict[str, Any]:
    """Every element the library's views of a type read, so they always find them typed."""
    return copy.deepcopy(_library_structure(resource_type))


@cache
def _library_structure(resource_type: str) -> dict[str, Any]:
    from rhip.errors import InvalidResource
    from rhip.lake.compiler import compile_view
    from rhip.lake.library import load_views

    out: dict[str, Any] = {}
    for view in load_views().values():
        if view.get("resource") != resource_type:
            continue
        try:
            compiled = compile_view(view)
        except InvalidResource:  # pragma: no cover - the library views are tested
            continue
        out = merge_structures(out, compiled.typed_elements or {})
    return out


def merge_structures(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Union of two structures; an element read with children wins over the same one as text."""
    out = dict(a)
    for name, node in b.items():
        if name not in out:
            out[name] = node
            continue
        mine = out[name]
        x = mine[0] if isinstance(mine, list) else mine
        y = node[0] if isinstance(node, list) else node
        if isinstance(x, dict) and isinstance(y, dict):
            merged: Any = merge_structures(x, y)
        else:
            merged = y if isinstance(y, dict) else x
        out[name] = [merged] if isinstance(mine, list) else merged
    return out


def _conform(data: dict[str, Any], type_name: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sub in data.items():
        found = element(type_name, name)
        if found is None:
            continue
        child_type, repeats = found
        inner = sub[0] if isinstance(sub, list) and sub else sub
        node: Any = "VARCHAR"
        if isinstance(inner, dict) and depth < MAX_DEPTH:
            children = _conform(inner, child_type, depth + 1)
            if children:
                node = children
        out[name] = [node] if repeats else node
    return out


def structure_sql_text(structure: dict[str, Any]) -> str:
    """The structure as an SQL string literal for ``json_transform``."""
    text = json.dumps(structure, separators=(",", ":"))
    return "'" + text.replace("'", "''") + "'"


def add_typed_column(con: duckdb.DuckDBPyConnection, table: pa.Table, structure: dict[str, Any]) -> pa.Table:
    """``table`` (columns id, ..., resource) plus the ``typed`` struct column built by DuckDB."""
    con.register("typed_copy_in_", table)
    try:
        return con.sql(
            f"SELECT *, json_transform(resource, {structure_sql_text(structure)}) AS {TYPED_COLUMN} "
            "FROM typed_copy_in_"
        ).to_arrow_table()
    finally:
        con.unregister("typed_copy_in_")


def covers(stored: dict[str, Any], wanted: Schema) -> bool:
    """Whether the stored structure holds every element of ``wanted`` in the same shape."""
    for name, child in wanted.children.items():
        if name not in stored:
            return False
        node = stored[name]
        if child.is_array != isinstance(node, list):
            return False
        inner = node[0] if isinstance(node, list) else node
        if not child.children:
            if inner != "VARCHAR":
                return False
        elif not isinstance(inner, dict) or not covers(inner, child):
            return False
    return True
