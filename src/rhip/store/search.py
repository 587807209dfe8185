"""FHIR search over the store: one SQL SELECT per page, built from the index tables.

Each search parameter becomes a sub-select on its index table. The most selective one drives the
query as ``res_id IN (...)`` and the others are correlated ``EXISTS`` checks, a shape that both
SQLite and PostgreSQL execute from the index. Results are sorted by the requested keys and then by
id, so paging by offset is stable. ``_include``/``_revinclude`` are answered from the reference
index for the resources of the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, false, func, not_, or_, select
from sqlalchemy.sql.expression import FromClause

from rhip.errors import InvalidRequest, NotSupported
from rhip.fhir.search_params import SUPPORTED_MODIFIERS, SearchParamDef, get_search_param, search_params_for
from rhip.store import fieldcrypt
from rhip.store.index_schema import idx_reference, table_for_type
from rhip.store.schema import resource
from rhip.store.search_includes import collect_includes, parse_includes
from rhip.store.search_sql import (
    any_of,
    composite_clause,
    date_clause,
    number_clause,
    param_clause,
    quantity_clause,
    reference_clause,
    split_prefix,
    split_values,
    string_clause,
    token_clause,
    uri_clause,
)

__all__ = ["SearchResult", "execute_search", "matching_ids", "where_clauses"]

log = logging.getLogger(__name__)

#: Parameters the API consumes; ignored here if they are passed along anyway.
_IGNORED = frozenset({"_count", "_offset", "_format", "_elements", "_pretty", "_summary", "_contained"})
_RANK: dict[str, float] = {
    "_id": 0,
    "reference": 1,
    "token": 2,
    "composite": 3,
    "string": 4,
    "uri": 4,
    "quantity": 5,
    "number": 5,
    "date": 6,
    "chain": 7,
}
_MAX_CHAIN = 3


@dataclass
class SearchResult:
    """One page of a search: matches, included resources, total and paging facts."""

    total: int | None
    matches: list[dict[str, Any]] = field(default_factory=list)
    includes: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0
    count: int = 0
    has_next: bool = False


@dataclass
class _Filter:
    """One parameter's condition: rows of ``table`` where ``clauses`` hold, for the target id."""

    rank: float
    table: FromClause | None = None
    clauses: list[ColumnElement[bool]] = field(default_factory=list)
    id_col: str = "res_id"
    negate: bool = False
    direct: ColumnElement[bool] | None = None  # a condition on the resource row itself

    def exists_for(self, type_col: Any, id_col: Any) -> ColumnElement[bool]:
        """The condition as a correlated EXISTS on the resource (type, id) given."""
        if self.direct is not None:
            return self.direct
        t = self._table()
        link = [t.c[self.id_col] == id_col]
        if self.id_col == "res_id" and not isinstance(type_col, str):  # system-wide search
            link.append(t.c.res_type == type_col)
        cond = exists().where(*link, *self.clauses)
        return not_(cond) if self.negate else cond

    def in_for(self, id_col: Any) -> ColumnElement[bool]:
        """The condition as ``id IN (SELECT ...)``, for the filter that drives the query."""
        if self.negate or self.direct is not None:
            raise RuntimeError("a negated or direct filter cannot drive the query")
        t = self._table()
        return id_col.in_(select(t.c[self.id_col]).where(*self.clauses))

    def _table(self) -> FromClause:
        if self.table is None:
            raise RuntimeError("filter without an index table")
        return self.table


def _param_def(res_type: str, name: str) -> SearchParamDef:
    sp = get_search_param(res_type, name)
    if sp is None:
        raise InvalidRequest(f"unknown search parameter {name!r} for {res_type}", expression=(name,))
    return sp


def _value_clause(
    t: FromClause, sp: SearchParamDef, modifier: str | None, raw: str, base_url: str
) -> ColumnElement[bool]:
    kind = sp.type
    if kind == "string":
        return string_clause(t, modifier, raw, phonetic=sp.algorithm == "pinyin")
    if kind == "token":
        return token_clause(t, modifier, raw)
    if kind == "date":
        return date_clause(t, raw)
    if kind == "reference":
        return reference_clause(t, modifier, raw, base_url)
    if kind == "quantity":
        return quantity_clause(t, raw)
    if kind == "number":
        return number_clause(t, raw)
    if kind == "uri":
        return uri_clause(t, modifier, raw)
    if kind == "composite":
        second = sp.contexts[0][1][1].type if sp.contexts else "token"
        return composite_clause(t, second, raw)
    raise NotSupported(f"search parameter type {kind}")


def _check_modifier(res_type: str, sp: SearchParamDef, modifier: str | None) -> None:
    if modifier is None:
        return
    allowed = SUPPORTED_MODIFIERS.get(sp.type, frozenset())
    if sp.type == "reference" and modifier not in allowed:
        if modifier[:1].isupper() and (not sp.targets or modifier in sp.targets):
            return
        raise InvalidRequest(f"modifier :{modifier} is not valid on {res_type}.{sp.name}")
    if modifier not in allowed:
        known = {
            "in",
            "not-in",
            "below",
            "above",
            "of-type",
            "text",
            "exact",
            "contains",
            "not",
            "missing",
            "identifier",
            "type",
        }
        if modifier in known:
            raise NotSupported(f"modifier :{modifier} on {sp.type} parameter {sp.name} is not supported")
        raise InvalidRequest(f"unknown modifier :{modifier} on {res_type}.{sp.name}")


def _missing(t: FromClause, res_type: str, name: str, raw: str) -> _Filter:
    if raw not in ("true", "false"):
        raise InvalidRequest(f"{name}:missing takes true or false")
    return _Filter(
        rank=9,
        table=t,
        clauses=[t.c.res_type == res_type, param_clause(t, res_type, name)],
        negate=raw == "true",
    )


def _simple_filter(res_type: str, name: str, modifier: str | None, raw: str, base_url: str) -> _Filter:
    sp = _param_def(res_type, name)
    _check_modifier(res_type, sp, modifier)
    t = table_for_type(sp.type).alias()
    if modifier == "missing":
        return _missing(t, res_type, name, raw)
    inner_mod = None if modifier == "not" else modifier
    alts = [_value_clause(t, sp, inner_mod, v, base_url) for v in split_values(raw)]
    clauses = [
        t.c.res_type == res_type,
        param_clause(t, res_type, name),
        any_of(alts),
    ]
    return _Filter(rank=_rank(sp.type, modifier, raw), table=t, clauses=clauses, negate=modifier == "not")


def _rank(kind: str, modifier: str | None, raw: str) -> float:
    """How selective a parameter probably is (lower drives the query); a cheap heuristic."""
    if kind == "string" and modifier != "exact" and min(len(v) for v in split_values(raw)) < 4:
        return 5.5  # a short prefix matches many names; a day or year of birth usually fewer
    if kind == "date" and all(split_prefix(v)[0] == "eq" for v in split_values(raw)):
        return 5.0
    return _RANK.get(kind, 8)


def _chain_filter(res_type: str, name: str, raw: str, base_url: str, depth: int) -> _Filter:
    head, rest = name.split(".", 1)
    ref_name, _, target = head.partition(":")
    sp = _param_def(res_type, ref_name)
    if sp.type != "reference":
        raise InvalidRequest(f"chained parameter {ref_name!r} of {res_type} is not a reference")
    chained_name = rest.split(".", 1)[0].split(":", 1)[0]
    types = (
        [target]
        if target
        else [
            t
            for t in sp.targets
            if chained_name in search_params_for(t) or chained_name in ("_id", "_lastUpdated")
        ]
    )
    if not types:
        raise InvalidRequest(f"chain {name!r}: no target type of {ref_name} has {chained_name!r}")
    ref = idx_reference.alias()
    alts = []
    for ttype in types:
        inner = _filter(ttype, rest, raw, base_url, depth + 1)
        alts.append(and_(ref.c.target_type == ttype, inner.exists_for(ttype, ref.c.target_id)))
    clauses = [ref.c.res_type == res_type, param_clause(ref, res_type, ref_name), or_(*alts)]
    return _Filter(rank=_RANK["chain"], table=ref, clauses=clauses)


def _has_filter(res_type: str, name: str, raw: str, base_url: str, depth: int) -> _Filter:
    parts = name.split(":", 3)
    if len(parts) != 4 or not parts[1] or not parts[2] or not parts[3]:
        raise InvalidRequest(f"_has must be _has:Type:reference:parameter, got {name!r}")
    _, src_type, ref_name, inner_name = parts
    sp = _param_def(src_type, ref_name)
    if sp.type != "reference":
        raise InvalidRequest(f"_has: {src_type}.{ref_name} is not a reference parameter")
    ref = idx_reference.alias()
    inner = _filter(src_type, inner_name, raw, base_url, depth + 1)
    clauses = [
        ref.c.res_type == src_type,
        param_clause(ref, src_type, ref_name),
        ref.c.target_type == res_type,
        inner.exists_for(src_type, ref.c.res_id),
    ]
    return _Filter(rank=_RANK["chain"], table=ref, clauses=clauses, id_col="target_id")


def _filter(res_type: str, name: str, raw: str, base_url: str, depth: int = 0) -> _Filter:
    if depth > _MAX_CHAIN:
        raise NotSupported(f"chains deeper than {_MAX_CHAIN} levels are not supported")
    if name.startswith("_has:"):
        return _has_filter(res_type, name, raw, base_url, depth)
    if "." in name:
        return _chain_filter(res_type, name, raw, base_url, depth)
    base, _, modifier = name.partition(":")
    if base == "_id":
        ids = split_values(raw)
        if depth == 0:
            return _Filter(rank=0, direct=resource.c.res_id.in_(ids))
        return _id_filter(res_type, ids)
    if base == "_lastUpdated":
        return _last_updated_filter(res_type, raw, depth)
    return _simple_filter(res_type, base, modifier or None, raw, base_url)


def _id_filter(res_type: str, ids: list[str]) -> _Filter:
    r = resource.alias()
    return _Filter(
        rank=0, table=r, clauses=[r.c.res_type == res_type, r.c.res_id.in_(ids), r.c.deleted == false()]
    )


def _last_updated_filter(res_type: str, raw: str, depth: int) -> _Filter:
    r = resource.alias() if depth else resource
    alts = []
    for v in split_values(raw):
        fake = _LastUpdatedView(r)
        alts.append(date_clause(fake, v))  # type: ignore[arg-type]
    cond = any_of(alts)
    if depth == 0:
        return _Filter(rank=_RANK["date"], direct=cond)
    return _Filter(rank=_RANK["date"], table=r, clauses=[r.c.res_type == res_type, cond])


class _LastUpdatedView:
    """Lets date_clause compare meta.lastUpdated (a millisecond instant) as a range."""

    def __init__(self, r: FromClause) -> None:
        self.c = {"low": r.c.last_updated, "high": r.c.last_updated + 0.001}


def where_clauses(res_type: str | None, params: list[tuple[str, str]], base_url: str = "") -> list[Any]:
    """Conditions on the ``resource`` table selecting current resources that match ``params``.

    Result-shaping parameters (``_sort``, ``_include``...) are skipped. Raises InvalidRequest for
    an unknown parameter or bad value, NotSupported for a valid but unimplemented feature.
    """
    conds: list[Any] = [resource.c.deleted == false()]
    filters: list[_Filter] = []
    types: list[str] | None = None
    for name, raw in params:
        base = name.split(":", 1)[0]
        if base in _IGNORED or base in ("_sort", "_include", "_revinclude", "_total"):
            continue
        if "\x00" in raw:  # no stored value holds one (PostgreSQL text cannot), and it is a split mark here
            raise InvalidRequest(f"{name}: a search value cannot contain a NUL character", expression=(name,))
        if base == "_type":
            types = [t for v in split_values(raw) for t in v.split(",")]
            continue
        if res_type is None:
            filters.append(_system_filter(name, raw, base_url))
        else:
            filters.append(_filter(res_type, name, raw, base_url))
    if res_type is not None:
        conds.append(resource.c.res_type == res_type)
    elif types is not None:
        conds.append(resource.c.res_type.in_(types))
    driver = _pick_driver(filters) if res_type is not None else None
    for f in filters:
        if f is driver:
            conds.append(f.in_for(resource.c.res_id))
        else:
            conds.append(
                f.exists_for(resource.c.res_type if res_type is None else res_type, resource.c.res_id)
            )
    return conds


def _pick_driver(filters: list[_Filter]) -> _Filter | None:
    candidates = [f for f in filters if not f.negate and f.direct is None and f.table is not None]
    return min(candidates, key=lambda f: f.rank) if candidates else None


def _system_filter(name: str, raw: str, base_url: str) -> _Filter:
    base, _, modifier = name.partition(":")
    if base == "_id":
        return _Filter(rank=0, direct=resource.c.res_id.in_(split_values(raw)))
    if base == "_lastUpdated":
        return _last_updated_filter("", raw, 0)
    common = get_search_param("Patient", base)
    if common is None or not common.url.startswith("http://hl7.org/fhir/SearchParameter/Resource-"):
        raise InvalidRequest(f"parameter {name!r} is not supported in a search across all types")
    t = table_for_type(common.type).alias()
    if modifier == "missing":
        return _Filter(rank=9, table=t, clauses=[t.c.param == base], negate=raw == "true")
    alts = [_value_clause(t, common, modifier or None, v, base_url) for v in split_values(raw)]
    return _Filter(rank=2, table=t, clauses=[t.c.param == base, any_of(alts)])


_SORT_COLUMN = {
    "string": "norm",
    "token": "code",
    "reference": "target_id",
    "uri": "uri",
    "number": "low",
    "quantity": "low",
}


def _sort_keys(res_type: str | None, params: list[tuple[str, str]]) -> list[Any]:
    keys: list[Any] = []
    for name, raw in params:
        if name != "_sort":
            continue
        for key in (k.strip() for k in raw.split(",") if k.strip()):
            desc = key.startswith("-")
            key = key.lstrip("-")
            if key == "_id":
                col: Any = resource.c.res_id
            elif key == "_lastUpdated":
                col = resource.c.last_updated
            else:
                if res_type is None:
                    raise InvalidRequest(f"_sort={key} needs a resource type")
                sp = _param_def(res_type, key)
                if sp.type == "composite":
                    raise NotSupported(f"_sort on composite parameter {key}")
                t = table_for_type(sp.type).alias()
                if sp.type == "date":
                    col_name, agg = ("high", func.max) if desc else ("low", func.min)
                else:
                    col_name, agg = _SORT_COLUMN[sp.type], (func.max if desc else func.min)
                col = (
                    select(agg(t.c[col_name]))
                    .where(
                        t.c.res_type == res_type,
                        t.c.res_id == resource.c.res_id,
                        param_clause(t, res_type, key),
                    )
                    .scalar_subquery()
                )
            keys.append(col.desc().nulls_last() if desc else col.asc().nulls_last())
    if res_type is None:
        keys.append(resource.c.res_type)
    keys.append(resource.c.res_id)
    return keys


def _plan_per_call(conn: Connection) -> None:
    """On PostgreSQL, plan each search for its own values.

    psycopg prepares a statement after a few runs and PostgreSQL may then switch to a generic plan
    that ignores how selective the bound patient or code is; for search that costs 10-50x.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")


def _total_mode(params: list[tuple[str, str]]) -> tuple[str, bool]:
    mode, summary_count = "accurate", False
    for name, raw in params:
        if name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise InvalidRequest("_total must be none, estimate or accurate")
            mode = raw
        elif name == "_summary" and raw == "count":
            summary_count = True
    return mode, summary_count


def execute_search(
    conn: Connection,
    res_type: str | None,
    params: list[tuple[str, str]],
    *,
    count: int,
    offset: int,
    base_url: str | None = None,
) -> SearchResult:
    """Run a FHIR search and return one page.

    ``params`` are the raw (name, value) pairs of the request, modifiers in the name; ``count`` and
    ``offset`` are the page the API asks for. ``base_url`` (default: the configured one) lets an
    absolute reference to this server match like a relative one. Raises InvalidRequest for unknown
    parameters, bad values or bad modifiers, NotSupported for valid but unimplemented features.
    """
    if base_url is None:
        from rhip.config import get_settings

        base_url = get_settings().base_url
    if count < 0 or offset < 0:
        raise InvalidRequest("_count and offset must not be negative")
    crypt = fieldcrypt.of(conn)
    params = crypt.search_params(res_type, params)
    conds = where_clauses(res_type, params, base_url)
    includes = parse_includes(res_type, params)
    _plan_per_call(conn)
    mode, summary_count = _total_mode(params)
    count_query = select(func.count()).select_from(resource).where(*conds)
    total: int | None = None
    if summary_count or count == 0:
        if summary_count or mode != "none":
            total = int(conn.execute(count_query).scalar_one())
        return SearchResult(total=total, offset=offset, count=0, has_next=False)
    want_total = mode != "none"
    cols: list[Any] = [resource.c.res_type, resource.c.res_id, resource.c.body]
    if want_total:  # the total rides along with the page: one query instead of two
        cols.append(func.count().over().label("total"))
    stmt = select(*cols).where(*conds).order_by(*_sort_keys(res_type, params)).limit(count + 1).offset(offset)
    rows = conn.execute(stmt).all()
    if want_total:
        total = int(rows[0].total) if rows else (int(conn.execute(count_query).scalar_one()) if offset else 0)
    has_next = len(rows) > count
    rows = rows[:count]
    matches = [crypt.loads(r.body) for r in rows]
    included = collect_includes(conn, includes, [(r.res_type, r.res_id) for r in rows]) if includes else []
    log.debug(
        "search %s: %d params, %d matches, %d included", res_type, len(params), len(matches), len(included)
    )
    return SearchResult(
        total=total, matches=matches, includes=included, offset=offset, count=len(matches), has_next=has_next
    )


def matching_ids(conn: Connection, res_type: str, params: list[tuple[str, str]]) -> list[str]:
    """Ids of the current resources of ``res_type`` matching ``params`` (conditional operations).

    Result-shaping parameters are ignored. An empty ``params`` list matches nothing.
    """
    if not [p for p in params if p[0].split(":", 1)[0] not in _IGNORED]:
        return []
    from rhip.config import get_settings

    params = fieldcrypt.of(conn).search_params(res_type, params)
    conds = where_clauses(res_type, params, get_settings().base_url)
    _plan_per_call(conn)
    stmt = select(resource.c.res_id).where(*conds).order_by(resource.c.res_id)
    return [r[0] for r in conn.execute(stmt)]
