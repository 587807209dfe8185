"""``_include`` and ``_revinclude``: resources referenced by, or referencing, the page of matches.

Both are answered from the reference index for the ids of the page only, never for the whole
result set. ``:iterate`` repeats the step on what was just included, up to a fixed depth, and
every resource appears once (matches are never repeated as includes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, false, select

from rhip.errors import InvalidRequest
from rhip.fhir.search_params import get_search_param
from rhip.store import fieldcrypt
from rhip.store.index_schema import idx_reference
from rhip.store.schema import resource
from rhip.store.search_sql import param_clause

__all__ = ["MAX_ITERATE", "IncludeSpec", "collect_includes", "parse_includes"]

#: How many rounds ``:iterate`` runs at most.
MAX_ITERATE = 4
_CHUNK = 500


@dataclass(frozen=True)
class IncludeSpec:
    """One ``_include``/``_revinclude`` value: source type, reference parameter, optional target."""

    reverse: bool
    source_type: str  # the type holding the reference ("*" for any)
    param: str  # reference parameter name ("*" for all)
    target_type: str | None
    iterate: bool


def parse_includes(res_type: str | None, params: list[tuple[str, str]]) -> list[IncludeSpec]:
    """Parse and check every ``_include``/``_revinclude`` value (``Type:param[:Target]`` or ``*``)."""
    out = []
    for name, raw in params:
        base, _, modifier = name.partition(":")
        if base not in ("_include", "_revinclude"):
            continue
        if modifier not in ("", "iterate", "recurse"):
            raise InvalidRequest(f"unknown modifier :{modifier} on {base}")
        iterate = modifier in ("iterate", "recurse")
        for value in raw.split(","):
            out.append(_parse_one(base == "_revinclude", value.strip(), iterate))
    return out


def _parse_one(reverse: bool, value: str, iterate: bool) -> IncludeSpec:
    if value == "*":
        return IncludeSpec(reverse, "*", "*", None, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InvalidRequest(f"include value must be Type:parameter[:targetType], got {value[:60]!r}")
    src, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if param != "*":
        sp = get_search_param(src, param)
        if sp is None or sp.type != "reference":
            raise InvalidRequest(f"{src}:{param} is not a reference search parameter")
    return IncludeSpec(reverse, src, param, target, iterate)


def _forward(conn: Connection, spec: IncludeSpec, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    by_type: dict[str, list[str]] = {}
    for t, i in keys:
        if spec.source_type in ("*", t):
            by_type.setdefault(t, []).append(i)
    ref = idx_reference
    for t, ids in by_type.items():
        for chunk in _chunks(ids):
            stmt = select(ref.c.target_type, ref.c.target_id).where(
                ref.c.res_type == t, ref.c.res_id.in_(chunk), ref.c.target_id.is_not(None)
            )
            if spec.param != "*":
                stmt = stmt.where(param_clause(ref, spec.source_type, spec.param))
            if spec.target_type:
                stmt = stmt.where(ref.c.target_type == spec.target_type)
            found.update((r[0], r[1]) for r in conn.execute(stmt) if r[0])
    return found


def _reverse(conn: Connection, spec: IncludeSpec, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    by_type: dict[str, list[str]] = {}
    for t, i in keys:
        if spec.target_type in (None, t):
            by_type.setdefault(t, []).append(i)
    ref = idx_reference
    for t, ids in by_type.items():
        for chunk in _chunks(ids):
            stmt = select(ref.c.res_type, ref.c.res_id).where(
                ref.c.target_type == t, ref.c.target_id.in_(chunk)
            )
            if spec.source_type != "*":
                stmt = stmt.where(ref.c.res_type == spec.source_type)
            if spec.param != "*":
                stmt = stmt.where(param_clause(ref, spec.source_type, spec.param))
            found.update((r[0], r[1]) for r in conn.execute(stmt))
    return found


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _fetch(conn: Connection, keys: set[tuple[str, str]]) -> list[dict[str, Any]]:
    by_type: dict[str, list[str]] = {}
    for t, i in sorted(keys):
        by_type.setdefault(t, []).append(i)
    out: list[dict[str, Any]] = []
    crypt = fieldcrypt.of(conn)
    for t, ids in by_type.items():
        for chunk in _chunks(ids):
            stmt = (
                select(resource.c.body)
                .where(resource.c.res_type == t, resource.c.res_id.in_(chunk), resource.c.deleted == false())
                .order_by(resource.c.res_id)
            )
            out.extend(crypt.loads(r[0]) for r in conn.execute(stmt))
    return out


def collect_includes(conn: Connection, specs: list[IncludeSpec], page: list[tuple[str, str]]) -> list[dict]:
    """Bodies pulled in by ``specs`` for the page ``(type, id)`` keys, de-duplicated, page excluded."""
    seen = set(page)
    result: list[dict[str, Any]] = []
    frontier = list(page)
    for round_no in range(MAX_ITERATE):
        active = [s for s in specs if round_no == 0 or s.iterate]
        if not active or not frontier:
            break
        new: set[tuple[str, str]] = set()
        for spec in active:
            keys = list(frontier) if round_no else list(page)
            new |= _reverse(conn, spec, keys) if spec.reverse else _forward(conn, spec, keys)
        new -= seen
        if not new:
            break
        bodies = _fetch(conn, new)
        result.extend(bodies)
        seen |= new
        frontier = [(b["resourceType"], b["id"]) for b in bodies]
    return result
