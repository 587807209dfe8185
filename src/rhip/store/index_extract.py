"""Fast extraction of index rows from a resource body, by precompiled paths.

Each resource type's parameters are compiled once into (param, table, paths, value converter)
entries; indexing a resource then walks plain dicts and lists. Parameters whose first key is absent
from the body cost one dict lookup, which is what keeps indexing in the tens of microseconds.
This module holds the plans and the public entry points; the paths' readers are in
:mod:`rhip.store.index_paths` and the value converters of each parameter type in
:mod:`rhip.store.index_converters`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any, NamedTuple

from rhip.fhir.search_params import PathSpec, SearchParamDef, registry_version, search_params_for
from rhip.store.index_converters import _NONE, Convert, Vals, _converter, _tokens_converter, parse_reference
from rhip.store.index_paths import Reader, _reader
from rhip.store.index_sharing import StoredAs, parts_of, plan_sharing

__all__ = ["index_rows", "index_tuples", "params_reading", "parse_reference", "stored_params"]

Row = dict[str, Any]
_TABLE = {
    "string": "idx_string",
    "token": "idx_token",
    "date": "idx_date",
    "reference": "idx_reference",
    "quantity": "idx_quantity",
    "number": "idx_number",
    "uri": "idx_uri",
    "composite": "idx_composite",
}


# --- composites -----------------------------------------------------------------------------------

#: The (system, code) pairs of a composite's first component, from one element value.
Codes = Callable[[Any], Sequence[tuple[Any, Any]]]
#: A composite row (system1, code1, system2, code2, low2, high2, text2) from the first component's
#: code and one value tuple of the second component.
CompositeRow = Callable[[Any, Any, Vals], Vals]
#: A compiled path from a node (the resource, or a composite's context): its key when it is one
#: key (read directly), else its reader, and its converter.
_CompiledPath = tuple[str | None, Reader, Callable[[Any], Sequence[Any]]]
#: A composite's compiled context: its reader (None: the resource itself), how a row is made, the
#: second component's paths and the first component's paths.
_CompositeContext = tuple[Reader | None, CompositeRow, tuple[_CompiledPath, ...], tuple[_CompiledPath, ...]]


def _compiled_path(p: PathSpec, conv: Callable[[Any], Sequence[Any]]) -> _CompiledPath:
    key = p.steps[0] if len(p.steps) == 1 and isinstance(p.steps[0], str) else None
    return key, _reader(p.steps), conv


def _codes_converter(p: PathSpec) -> Codes:
    """(system, code) of the token rows of a value: what a composite's first component uses.

    Codings are read directly, so their display and text are not normalised only to be dropped.
    """
    tokens = _tokens_converter(p)
    if p.const is None and p.elem_type in ("CodeableConcept", "Coding"):
        concept = p.elem_type == "CodeableConcept"

        def codings(v: Any) -> Sequence[tuple[Any, Any]]:
            if not isinstance(v, dict):
                return [(r[0], r[1]) for r in tokens(v)]
            if concept:
                return [
                    (c.get("system"), c.get("code")) for c in v.get("coding") or () if isinstance(c, dict)
                ]
            return ((v.get("system"), v.get("code")),)

        return codings
    return lambda v: [(r[0], r[1]) for r in tokens(v)]


_COMPOSITE_ROWS: dict[str, CompositeRow] = {
    "token": lambda s1, c1, r: (s1, c1, r[0], r[1], None, None, r[2]),  # (system, code, text)
    "quantity": lambda s1, c1, r: (s1, c1, r[2], r[3], r[0], r[1], r[4]),  # (low, high, system, code, unit)
    "date": lambda s1, c1, r: (s1, c1, None, None, r[0], r[1], None),  # (low, high)
    "number": lambda s1, c1, r: (s1, c1, None, None, r[0], r[1], None),
    "string": lambda s1, c1, r: (s1, c1, None, r[1], None, None, r[0]),  # (norm, exact)
}


def _composite_row_of(kind: str) -> CompositeRow:
    """How a composite row is made from a second component of type ``kind`` (uri: ``(uri,)``,
    reference: its first value)."""
    return _COMPOSITE_ROWS.get(kind, lambda s1, c1, r: (s1, c1, None, r[0], None, None, None))


def _compile_composite(sp: SearchParamDef) -> tuple[_CompositeContext, ...]:
    return tuple(
        (
            _reader(ctx_steps) if ctx_steps else None,
            _composite_row_of(second.type),
            tuple(_compiled_path(p, _converter(second.type, p)) for p in second.paths),
            tuple(_compiled_path(p, _codes_converter(p)) for p in first.paths),
        )
        for ctx_steps, (first, second) in sp.contexts
    )


def _composite_rows_of(sp: SearchParamDef) -> RowsOf:
    contexts = _compile_composite(sp)

    def composite_rows(resource: dict[str, Any]) -> Sequence[Vals]:
        out: list[Vals] = []
        for ctx_of, row_of, second_paths, first_paths in contexts:
            for node in ctx_of(resource) if ctx_of is not None else (resource,):
                if not isinstance(node, dict):
                    continue  # no path reaches anything from a context that is not an object
                right = _reached(second_paths, node)
                if not right:
                    continue
                for system1, code1 in _reached(first_paths, node):
                    if code1 is None:
                        continue
                    for r in right:
                        out.append(row_of(system1, code1, r))
        return out

    return composite_rows


def _reached(paths: tuple[_CompiledPath, ...], node: dict[str, Any]) -> list[Any]:
    """Everything the paths' converters give for the values they reach from ``node`` (the
    resource, or a composite's context), path by path."""
    out: list[Any] = []
    for key, values_of, conv in paths:
        if key is None:
            for value in values_of(node):
                out.extend(conv(value))
            continue
        v = node.get(key)
        if v is None:
            continue
        if isinstance(v, list):
            for value in v:
                out.extend(conv(value))
        else:
            out.extend(conv(v))
    return out


# --- compiled plans -------------------------------------------------------------------------------

#: The value tuples one parameter gives for a resource (a compiled plan entry's work).
RowsOf = Callable[[dict[str, Any]], Sequence[Vals]]


def _rows_of(sp: SearchParamDef) -> RowsOf:
    """The function giving ``sp``'s value tuples for a resource, specialised on the shape of its paths.

    One call per parameter and resource: a path of one or two keys converts the elements it
    reaches as it finds them, other paths go through their compiled readers, composites through
    :func:`_composite_rows_of`.
    """
    if sp.type == "composite":
        return _composite_rows_of(sp)
    if len(sp.paths) == 1:
        p = sp.paths[0]
        conv = _converter(sp.type, p, sp.algorithm)
        keys = [step for step in p.steps if isinstance(step, str)]
        if len(keys) == len(p.steps) == 1:
            return _top_rows_of(keys[0], conv)
        if len(keys) == len(p.steps) == 2:
            return _child_rows_of(keys[0], keys[1], conv)
        last = p.steps[-1]
        if len(p.steps) == 2 and isinstance(p.steps[0], str) and not isinstance(last, str):
            return _filtered_rows_of(p.steps[0], last[0], last[1], conv)
        return _path_rows_of(_reader(p.steps), conv)
    return partial(_reached, tuple(_compiled_path(p, _converter(sp.type, p, sp.algorithm)) for p in sp.paths))


def _top_rows_of(key: str, conv: Convert) -> RowsOf:
    def top_rows(resource: dict[str, Any]) -> Sequence[Vals]:
        v = resource.get(key)
        if v is None:
            return _NONE
        if not isinstance(v, list):
            return conv(v)
        if len(v) == 1:
            return conv(v[0])
        out: list[Vals] = []
        for value in v:
            out.extend(conv(value))
        return out

    return top_rows


def _child_rows_of(key: str, child: str, conv: Convert) -> RowsOf:
    """:func:`_path_rows_of` for a path of two keys, without the list of values in between.

    The inner loop is :func:`_reached`'s, written out: calling it per parent element cost a
    Patient 8 % more instructions (its two-key parameters: address parts, family, given...).
    """

    def child_rows(resource: dict[str, Any]) -> Sequence[Vals]:
        v = resource.get(key)
        if v is None:
            return _NONE
        out: list[Vals] = []
        for node in v if isinstance(v, list) else (v,):
            if isinstance(node, dict):
                x = node.get(child)
                if x is None:
                    continue
                if isinstance(x, list):
                    for value in x:
                        out.extend(conv(value))
                else:
                    out.extend(conv(x))
        return out

    return child_rows


def _filtered_rows_of(key: str, field: str, want: str, conv: Convert) -> RowsOf:
    """:func:`_path_rows_of` for one key and a where-filter (``telecom.where(system='phone')``),
    without the list of values in between."""

    def filtered_rows(resource: dict[str, Any]) -> Sequence[Vals]:
        v = resource.get(key)
        if v is None:
            return _NONE
        out: list[Vals] = []
        for node in v if isinstance(v, list) else (v,):
            if isinstance(node, dict) and node.get(field) == want:
                out.extend(conv(node))
        return out

    return filtered_rows


def _path_rows_of(values_of: Reader, conv: Convert) -> RowsOf:
    def path_rows(resource: dict[str, Any]) -> Sequence[Vals]:
        out: list[Vals] = []
        for value in values_of(resource):
            out.extend(conv(value))
        return out

    return path_rows


#: One parameter's plan entry: name, table, the top-level keys that feed it, and its rows function.
_Entry = tuple[str, str, tuple[str, ...], RowsOf]
_Plan = list[_Entry]


class _Compiled(NamedTuple):
    """A resource type's plan, which entries each top-level key feeds, the always-run entries, and
    the parameters whose rows each parameter's search must also read (see :func:`stored_params`)."""

    plan: _Plan
    by_key: dict[str, list[int]]
    always: list[int]
    stored: dict[str, StoredAs]
    #: :func:`params_reading` answers, filled on first use
    reading: dict[frozenset[str], dict[str, frozenset[str]]]
    #: the entries to run, in plan order, for each sequence of top-level keys met so far (bounded)
    entries_by_keys: dict[tuple[str, ...], tuple[_Entry, ...]]


_plans: dict[str, _Compiled] = {}
_plans_version = -1


def _first_keys(sp: SearchParamDef) -> tuple[str, ...]:
    """Top-level keys at least one of which must be present for ``sp`` to yield anything."""
    keys: list[str] = []
    for p in sp.paths:
        keys.append(p.steps[0] if p.steps and isinstance(p.steps[0], str) else "")
    for ctx_steps, comps in sp.contexts:
        if ctx_steps:
            keys.append(ctx_steps[0] if isinstance(ctx_steps[0], str) else "")
        else:
            keys.extend(p.steps[0] if isinstance(p.steps[0], str) else "" for p in comps[-1].paths)
    if "" in keys:  # a path we cannot pre-check: always evaluate
        return ()
    return tuple(dict.fromkeys(keys))


def _plan(res_type: str) -> _Compiled:
    """The compiled indexing plan of ``res_type`` (rebuilt when the parameter registry changes)."""
    global _plans_version
    if _plans_version != registry_version():
        _plans.clear()
        _plans_version = registry_version()
    compiled = _plans.get(res_type)
    if compiled is None:
        params = search_params_for(res_type)
        sharing = plan_sharing(params)
        plan: _Plan = []
        by_key: dict[str, list[int]] = {}
        always: list[int] = []
        for name, full in sorted(params.items()):
            sp = sharing.reduced.get(name, full)
            if not parts_of(sp):
                continue  # every row it would give is written under other parameters
            firsts = _first_keys(sp)
            for key in firsts:
                by_key.setdefault(key, []).append(len(plan))
            if not firsts:
                always.append(len(plan))
            plan.append((name, _TABLE[sp.type], firsts, _rows_of(sp)))
        compiled = _plans[res_type] = _Compiled(plan, by_key, always, sharing.stored, {}, {})
    return compiled


def params_reading(res_type: str, elements: frozenset[str]) -> dict[str, frozenset[str]]:
    """Index table -> the parameters of ``res_type`` in it whose rows can hold values of ``elements``.

    A parameter counts when one of its paths starts at one of the given top-level elements, or
    when its paths cannot be checked in advance (it is evaluated on every resource). Tables with
    no such parameter are left out.
    """
    compiled = _plan(res_type)
    found = compiled.reading.get(elements)
    if found is None:
        by_table: dict[str, set[str]] = {}
        for name, table, firsts, *_rest in compiled.plan:
            if not firsts or elements.intersection(firsts):
                by_table.setdefault(table, set()).add(name)
        found = compiled.reading[elements] = {table: frozenset(names) for table, names in by_table.items()}
    return found


def stored_params(res_type: str, name: str) -> StoredAs:
    """Where the index holds the rows of ``res_type``'s parameter ``name``: (param, target type) pairs.

    Usually ``((name, None),)``. ``combo-code`` reads ``combo-code``, ``code`` and
    ``component-code`` rows; Observation ``patient`` reads the ``subject`` rows whose target type
    is ``Patient`` (see :mod:`rhip.store.index_sharing`). Searches must match all of them.
    Unknown names give ``((name, None),)``.
    """
    return _plan(res_type).stored.get(name, ((name, None),))


def index_tuples(resource: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Index rows for the current body of ``resource`` as tuples in table column order.

    Table name -> rows ``(res_type, res_id, param, *values)``: the form the writers hand to the
    driver, built directly so that the bulk path creates no per-row dict. Pure and fast: no I/O,
    no FHIRPath engine; values that do not parse (a malformed date) are skipped, not raised,
    because validation happens before storage. Resources without ``resourceType`` or ``id`` give
    no rows. Rows repeating the same values under one parameter are written once.
    """
    res_type = resource.get("resourceType")
    res_id = resource.get("id")
    out: dict[str, list[tuple[Any, ...]]] = {}
    if not isinstance(res_type, str) or not isinstance(res_id, str):
        return out
    for name, table, _firsts, rows_of in _entries(res_type, resource):
        vals = rows_of(resource)
        if not vals:
            continue
        key_cols = (res_type, res_id, name)
        bucket = out.setdefault(table, [])
        if len(vals) == 1:
            bucket.append(key_cols + vals[0])
        else:
            for v in dict.fromkeys(vals):  # a loop, not a generator: see _string_parts
                bucket.append(key_cols + v)
    return out


#: Distinct key sequences remembered per resource type; a feed's resources share a few layouts.
_KEY_LAYOUTS_KEPT = 1024


def _entries(res_type: str, resource: dict[str, Any]) -> tuple[_Entry, ...]:
    """The plan entries that can give rows for ``resource``: those fed by its keys, and the always-run ones.

    They depend only on the resource's top-level keys, so they are chosen once per key layout.
    """
    compiled = _plan(res_type)
    layout = tuple(resource)
    found = compiled.entries_by_keys.get(layout)
    if found is None:
        chosen = set(compiled.always)
        for key in layout:
            hit = compiled.by_key.get(key)
            if hit is not None:
                chosen.update(hit)
        found = tuple(compiled.plan[index] for index in sorted(chosen))
        if len(compiled.entries_by_keys) >= _KEY_LAYOUTS_KEPT:
            compiled.entries_by_keys.clear()
        compiled.entries_by_keys[layout] = found
    return found


def index_rows(resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Index rows for the current body of ``resource``: table name -> rows as dicts (column -> value).

    The same rows as :func:`index_tuples` (which the writers use), keyed by column name for
    readers and tests. Every row carries ``res_type``, ``res_id`` and ``param``.
    """
    columns = _columns()
    return {
        table: [dict(zip(columns[table], row, strict=True)) for row in rows]
        for table, rows in index_tuples(resource).items()
    }


@lru_cache(maxsize=1)
def _columns() -> dict[str, tuple[str, ...]]:
    from rhip.store.index_schema import INDEX_TABLES  # the schema module imports this one

    return {table.name: tuple(c.name for c in table.columns) for table in INDEX_TABLES}
