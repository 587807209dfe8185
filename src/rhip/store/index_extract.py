"""Fast extraction of index rows from a resource body, by precompiled paths.

Each resource type's parameters are compiled once into (param, table, paths, value converter)
entries; indexing a resource then walks plain dicts and lists. Parameters whose first key is absent
from the body cost one dict lookup, which is what keeps indexing in the tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any, NamedTuple

from rhip.fhir.search_params import PathSpec, SearchParamDef, registry_version, search_params_for
from rhip.store.index_sharing import StoredAs, parts_of, plan_sharing
from rhip.store.search_values import (
    MAX_INDEXED_CHARS,
    TIME_MAX,
    TIME_MIN,
    date_range,
    normalize,
    phonetic_key,
)

__all__ = ["index_rows", "index_tuples", "params_reading", "parse_reference", "stored_params"]

Row = dict[str, Any]
#: Value columns of one index row (the columns after ``res_type``, ``res_id``, ``param``).
Vals = tuple[Any, ...]
Convert = Callable[[Any, PathSpec], list[Vals]]
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


def walk(node: Any, steps: tuple[str | tuple[str, str], ...]) -> list[Any]:
    """Values reached from ``node`` by following JSON keys (lists flattened) and where-filters."""
    nodes = [node]
    for step in steps:
        if isinstance(step, str):
            nxt: list[Any] = []
            for n in nodes:
                if isinstance(n, dict):
                    v = n.get(step)
                    if v is None:
                        continue
                    if isinstance(v, list):
                        nxt.extend(v)
                    else:
                        nxt.append(v)
            nodes = nxt
        else:
            key, want = step
            nodes = [n for n in nodes if isinstance(n, dict) and n.get(key) == want]
        if not nodes:
            break
    return nodes


#: The values a path reaches in a resource (what :func:`walk` gives from the resource root).
Reader = Callable[[dict[str, Any]], Sequence[Any]]


def _reader(steps: tuple[str | tuple[str, str], ...]) -> Reader:
    """A function giving ``walk(resource, steps)``, specialised for the common one- and two-key paths.

    Most parameters read one top-level element or one key below it; the readers of those do no
    per-step type tests and builds no intermediate lists.
    """
    first = steps[0] if steps else None
    if len(steps) == 1 and isinstance(first, str):
        return partial(_top_values, first)
    if len(steps) == 2 and isinstance(first, str) and isinstance(steps[1], str):
        return partial(_child_values, first, steps[1])
    if isinstance(first, str):
        return partial(_walk_present, first, steps)
    return partial(_walk_from, steps)


def _top_values(key: str, resource: dict[str, Any]) -> Sequence[Any]:
    v = resource.get(key)
    if v is None:
        return ()
    return v if isinstance(v, list) else (v,)


def _child_values(key: str, child: str, resource: dict[str, Any]) -> Sequence[Any]:
    v = resource.get(key)
    if v is None:
        return ()
    out: list[Any] = []
    for node in v if isinstance(v, list) else (v,):
        if isinstance(node, dict):
            x = node.get(child)
            if x is not None:
                if isinstance(x, list):
                    out.extend(x)
                else:
                    out.append(x)
    return out


def _walk_present(
    key: str, steps: tuple[str | tuple[str, str], ...], resource: dict[str, Any]
) -> Sequence[Any]:
    return walk(resource, steps) if key in resource else ()


def _walk_from(steps: tuple[str | tuple[str, str], ...], resource: dict[str, Any]) -> Sequence[Any]:
    return walk(resource, steps)


# --- value converters: element value -> value tuples in index-table column order ---------------
# (the columns after res_type, res_id, param; see rhip.store.index_schema)


def _strings(v: Any, p: PathSpec) -> list[Vals]:
    if isinstance(v, str):
        return [(normalize(v), v[:MAX_INDEXED_CHARS])]
    if not isinstance(v, dict):
        return []
    out: list[Vals] = []
    for key in _NAME_PARTS if p.elem_type == "HumanName" else _ADDRESS_PARTS:
        part = v.get(key)
        if part is None:
            continue
        for s in part if isinstance(part, list) else (part,):
            if isinstance(s, str) and s:
                out.append((normalize(s), s[:MAX_INDEXED_CHARS]))
    return out


def _phonetic(v: Any, p: PathSpec) -> list[Vals]:
    return [(phonetic_key(exact), exact) for _norm, exact in _strings(v, p)]


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _coding(c: dict[str, Any], text: str | None) -> Vals:
    display = c.get("display")
    return (c.get("system"), c.get("code"), normalize(display) if isinstance(display, str) else text)


def _tokens(v: Any, p: PathSpec) -> list[Vals]:
    if p.const is not None:
        return [(None, p.const, None)]
    t = p.elem_type
    if isinstance(v, bool):
        return [(None, "true" if v else "false", None)]
    if isinstance(v, str):
        return [(None, v[:MAX_INDEXED_CHARS], None)]
    if not isinstance(v, dict):
        return []
    if t == "CodeableConcept":
        text = v.get("text")
        ntext = normalize(text) if isinstance(text, str) else None
        out = [_coding(c, ntext) for c in v.get("coding") or () if isinstance(c, dict)]
        if ntext is not None:
            out.append((None, None, ntext))
        return out
    if t == "Coding":
        return [_coding(v, None)]
    if t == "Identifier" and (v.get("value") is not None or v.get("type")):
        type_text = (v.get("type") or {}).get("text")
        ntype = normalize(type_text) if isinstance(type_text, str) else None
        return [(v.get("system"), v.get("value"), ntype)]
    if t == "ContactPoint" and isinstance(v.get("value"), str):
        return [(v.get("system"), v["value"], None)]
    return []


def _period(v: dict[str, Any]) -> tuple[float, float] | None:
    start, end = v.get("start"), v.get("end")
    lo = date_range(start) if isinstance(start, str) else None
    hi = date_range(end) if isinstance(end, str) else None
    if lo is None and hi is None:
        return None
    return (lo[0] if lo else TIME_MIN), (hi[1] if hi else TIME_MAX)


def _dates(v: Any, p: PathSpec) -> list[Vals]:
    rng: tuple[float, float] | None = None
    if isinstance(v, str):
        rng = date_range(v)
    elif isinstance(v, dict) and p.elem_type == "Period":
        rng = _period(v)
    elif isinstance(v, dict) and p.elem_type == "Timing":
        ranges = [r for r in (date_range(e) for e in v.get("event") or () if isinstance(e, str)) if r]
        bounds = (v.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict) and (b := _period(bounds)):
            ranges.append(b)
        if ranges:
            rng = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return [] if rng is None else [rng]


@lru_cache(maxsize=1)
def _own_base() -> str:
    from rhip.config import get_settings

    return get_settings().base_url.rstrip("/") + "/"


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """``(target_type, target_id, url)`` of a reference string.

    Relative references (and absolute ones under this server's base URL) give type and id;
    other absolute URLs and URNs give the url (and the type when the URL ends in ``Type/id``) but
    no id, so they never match a local resource that happens to share the id.
    """
    if ref.startswith("#"):
        return None, None, None
    if "://" in ref or ref.startswith("urn:"):
        base = _own_base()
        if not ref.startswith(base):
            parts = ref.split("/")
            if len(parts) >= 4 and parts[-2] == "_history":
                parts = parts[:-2]
            ttype = parts[-2] if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha() else None
            return ttype, None, ref
        ref = ref[len(base) :]
    parts = ref.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2:
        return parts[0], parts[1], None
    return None, None, ref


def _references(v: Any, p: PathSpec) -> list[Vals]:
    if isinstance(v, str):  # canonical / uri
        return [(None, None, v.split("|", 1)[0][:MAX_INDEXED_CHARS], None, None)]
    if not isinstance(v, dict):
        return []
    ref = v.get("reference")
    ttype, tid, url = parse_reference(ref) if isinstance(ref, str) else (None, None, None)
    if ttype is None and isinstance(v.get("type"), str) and tid is None:
        ttype = v["type"] if ref is None else None
    if p.is_type is not None and ttype != p.is_type:
        return []
    ident = v.get("identifier")
    isys = ival = None
    if isinstance(ident, dict):
        isys, ival = ident.get("system"), ident.get("value")
    if tid is None and url is None and ival is None:
        return []
    return [(ttype, tid, url[:MAX_INDEXED_CHARS] if url else None, isys, ival)]


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _quantities(v: Any, p: PathSpec) -> list[Vals]:
    if not isinstance(v, dict):
        return []
    if p.elem_type == "Range":
        low, high = v.get("low") or {}, v.get("high") or {}
        lo, hi = _num(low.get("value")), _num(high.get("value"))
        if lo is None and hi is None:
            return []
        unit = low or high
        return [
            (
                lo if lo is not None else float("-1e300"),
                hi if hi is not None else 1e300,
                unit.get("system"),
                unit.get("code"),
                unit.get("unit"),
            )
        ]
    val = _num(v.get("value"))
    if val is None:
        return []
    if p.elem_type == "Money":
        return [(val, val, "urn:iso:std:iso:4217", v.get("currency"), None)]
    return [(val, val, v.get("system"), v.get("code"), v.get("unit"))]


def _numbers(v: Any, p: PathSpec) -> list[Vals]:
    val = _num(v)
    return [] if val is None else [(val, val)]


def _uris(v: Any, p: PathSpec) -> list[Vals]:
    return [(v[:MAX_INDEXED_CHARS],)] if isinstance(v, str) else []


_CONVERT: dict[str, Convert] = {
    "string": _strings,
    "token": _tokens,
    "date": _dates,
    "reference": _references,
    "quantity": _quantities,
    "number": _numbers,
    "uri": _uris,
}


#: A composite's compiled context: its reader (None: the resource itself), the second component's
#: type, converter and path readers, and the first component's path readers.
_CompositeContext = tuple[
    Reader | None, str, Convert, tuple[tuple[Reader, PathSpec], ...], tuple[tuple[Reader, PathSpec], ...]
]


def _compile_composite(sp: SearchParamDef) -> tuple[_CompositeContext, ...]:
    return tuple(
        (
            _reader(ctx_steps) if ctx_steps else None,
            second.type,
            _CONVERT[second.type],
            tuple((_reader(p.steps), p) for p in second.paths),
            tuple((_reader(p.steps), p) for p in first.paths),
        )
        for ctx_steps, (first, second) in sp.contexts
    )


def _composite_rows(contexts: tuple[_CompositeContext, ...], resource: dict[str, Any]) -> list[Vals]:
    out: list[Vals] = []
    for ctx_of, kind, conv, second_reads, first_reads in contexts:
        for node in ctx_of(resource) if ctx_of is not None else (resource,):
            right = [r for v, p in _reached(second_reads, node) for r in conv(v, p)]
            if not right:
                continue
            left = [r for v, p in _reached(first_reads, node) for r in _token_codes(v, p)]
            for system1, code1 in left:
                if code1 is None:
                    continue
                out.extend(_composite_row(system1, code1, kind, r) for r in right)
    return out


def _reached(reads: tuple[tuple[Reader, PathSpec], ...], node: Any) -> list[tuple[Any, PathSpec]]:
    """(value, path) for every value the paths reach from a composite's context node.

    The compiled readers take an object; a context that is not one (malformed data) is walked
    generically, which is what the readers stand for.
    """
    if isinstance(node, dict):
        return [(v, p) for values_of, p in reads for v in values_of(node)]
    return [(v, p) for _values_of, p in reads for v in walk(node, p.steps)]


def _token_codes(v: Any, p: PathSpec) -> list[tuple[Any, Any]]:
    """(system, code) of the token rows of ``v``: what a composite's first component uses.

    Codings are read directly, so their display and text are not normalised only to be dropped.
    """
    if p.const is None and isinstance(v, dict):
        if p.elem_type == "CodeableConcept":
            return [(c.get("system"), c.get("code")) for c in v.get("coding") or () if isinstance(c, dict)]
        if p.elem_type == "Coding":
            return [(v.get("system"), v.get("code"))]
    return [(r[0], r[1]) for r in _tokens(v, p)]


def _composite_row(system1: Any, code1: Any, kind: str, r: Vals) -> Vals:
    """(system1, code1, system2, code2, low2, high2, text2) from the second component's values."""
    if kind == "token":  # (system, code, text)
        return (system1, code1, r[0], r[1], None, None, r[2])
    if kind == "quantity":  # (low, high, system, code, unit)
        return (system1, code1, r[2], r[3], r[0], r[1], r[4])
    if kind in ("date", "number"):  # (low, high)
        return (system1, code1, None, None, r[0], r[1], None)
    if kind == "string":  # (norm, exact)
        return (system1, code1, None, r[1], None, None, r[0])
    return (system1, code1, None, r[0], None, None, None)  # uri (uri,) / reference: first value


# --- compiled plans -------------------------------------------------------------------------------


def _rows_of(sp: SearchParamDef, conv: Convert | None) -> RowsOf:
    """The function giving ``sp``'s value tuples for a resource, specialised on the shape of its paths.

    One call per parameter and resource: a single top-level path converts the element directly,
    other paths go through their compiled readers, composites through :func:`_composite_rows`.
    """
    if conv is None:
        return partial(_composite_rows, _compile_composite(sp))
    paths = sp.paths
    if len(paths) == 1:
        p = paths[0]
        if len(p.steps) == 1 and isinstance(p.steps[0], str):
            return partial(_top_rows, p.steps[0], conv, p)
        return partial(_path_rows, _reader(p.steps), conv, p)
    return partial(_paths_rows, tuple((_reader(p.steps), p) for p in paths), conv)


def _top_rows(key: str, conv: Convert, p: PathSpec, resource: dict[str, Any]) -> Sequence[Vals]:
    v = resource.get(key)
    if v is None:
        return ()
    if isinstance(v, list):
        out: list[Vals] = []
        for value in v:
            out.extend(conv(value, p))
        return out
    return conv(v, p)


def _path_rows(values_of: Reader, conv: Convert, p: PathSpec, resource: dict[str, Any]) -> list[Vals]:
    out: list[Vals] = []
    for value in values_of(resource):
        out.extend(conv(value, p))
    return out


def _paths_rows(
    reads: tuple[tuple[Reader, PathSpec], ...], conv: Convert, resource: dict[str, Any]
) -> list[Vals]:
    out: list[Vals] = []
    for values_of, p in reads:
        for value in values_of(resource):
            out.extend(conv(value, p))
    return out


#: The value tuples one parameter gives for a resource (a compiled plan entry's work).
RowsOf = Callable[[dict[str, Any]], Sequence[Vals]]
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
            conv = _phonetic if sp.algorithm == "pinyin" else _CONVERT.get(sp.type)
            plan.append((name, _TABLE[sp.type], firsts, _rows_of(sp, conv)))
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
            bucket.extend(key_cols + v for v in dict.fromkeys(vals))
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
