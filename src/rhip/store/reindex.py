"""Rebuilding the search index of stored resources from their current bodies (``rhip db reindex``).

Every write indexes a body with the extraction code of the release that wrote it; an upgrade that
changes a search parameter, its extraction or the way a reference is read leaves the rows of
older writes as they were. :func:`reindex` walks the ``resource`` table by type in keyset pages
of ``(res_type, res_id)`` and, one transaction per page, deletes the index rows of the page's
resources and writes the rows :func:`rhip.store.indexing.tuple_rows_for` gives for each live
body, the very function every write path calls, on the body as stored (field-encrypted values
stay sealed, as a write indexes them; no keys are needed). A page replaces every index row of its
id range, so deleted resources, and ids with index rows but no resource (left by a tool
interrupted, or edited by hand), end with no rows. A page either commits whole or not at all, so
a run killed half-way leaves each resource with either its old or its new rows. Each page also
moves the run's cursor (:mod:`rhip.store.reindex_progress`) in its own transaction, so running
again resumes after the last page that committed. A run over every type finally removes the index
rows of types with no ``resource`` row at all (left by a type whose resources were purged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, exists, func, select

from rhip.errors import InvalidRequest
from rhip.fhir.model import is_resource_type
from rhip.store import indexing
from rhip.store import reindex_progress as progress
from rhip.store.engine import read_connection, write_transaction
from rhip.store.index_schema import INDEX_TABLES
from rhip.store.reindex_lock import single_run
from rhip.store.schema import resource

__all__ = [
    "MAX_BATCH_SIZE",
    "ReindexPlan",
    "ReindexResult",
    "index_row_count",
    "prepare_reindex",
    "reindex",
    "resources_to_reindex",
    "run_reindex",
    "stored_types",
    "types_to_reindex",
]

#: The largest page: a page's ids are bound one parameter each (SQLite allows 32,766 per statement).
MAX_BATCH_SIZE = 10_000


@dataclass
class ReindexResult:
    """What a reindex did: types, pages and resources walked, index rows before and after.

    ``resources``, ``deleted`` and ``pages`` count this run's walk only (a resumed run skips
    what the interrupted one did); ``orphan_rows`` are the rows removed of types with no
    resource, counted in neither ``rows_before`` nor ``rows_after``.
    """

    types: list[str] = field(default_factory=list)
    resources: int = 0
    deleted: int = 0
    pages: int = 0
    rows_before: int = 0
    rows_after: int = 0
    orphan_rows: int = 0
    orphan_types: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReindexPlan:
    """A run ready to go: the types, page size, the saved cursor and what is left to walk."""

    types: list[str]
    batch_size: int
    sweep_orphans: bool
    cursor: progress.Progress
    resumed: bool
    remaining: int

    def resume_note(self) -> str:
        """``resuming reindex started <UTC> at <type>/<id>, N % done`` for the operator."""
        total = self.cursor.walked + self.remaining
        done = 100 * self.cursor.walked // total if total else 100
        return f"resuming reindex started {self.cursor.started()} at {self.cursor.where()}, {done} % done"


def stored_types(engine: Engine) -> list[str]:
    """The resource types the store holds (live or deleted), sorted."""
    with read_connection(engine) as conn:
        return sorted(str(t) for (t,) in conn.execute(select(resource.c.res_type).distinct()))


def resources_to_reindex(engine: Engine, types: Sequence[str]) -> int:
    """How many ``resource`` rows (tombstones included) :func:`reindex` walks, for a progress bar."""
    with read_connection(engine) as conn:
        stmt = select(func.count()).select_from(resource).where(resource.c.res_type.in_(list(types)))
        return int(conn.execute(stmt).scalar_one())


def index_row_count(engine: Engine, types: Sequence[str]) -> int:
    """Index rows of the given types, over every index table."""
    total = 0
    with read_connection(engine) as conn:
        for table in INDEX_TABLES:
            stmt = select(func.count()).select_from(table).where(table.c.res_type.in_(list(types)))
            total += int(conn.execute(stmt).scalar_one())
    return total


def reindex(
    engine: Engine,
    types: Sequence[str] | None = None,
    *,
    batch_size: int = 1000,
    on_rows: Callable[[int], None] | None = None,
    restart: bool = False,
) -> ReindexResult:
    """Rebuild the index rows of every stored resource of ``types`` (default: all stored types).

    Resumes an interrupted run of the same types (see :func:`prepare_reindex`), then
    walks what is left (see :func:`run_reindex`).

    Args:
        engine: the store's engine (``Store.engine``); its schema must be upgraded.
        types: resource types to rebuild; a type the store does not hold is walked as empty.
        batch_size: resources per page, each page its own write transaction.
        on_rows: told the number of resources of each page once its transaction has committed.
        restart: forget an interrupted run and start from the beginning.

    Raises InvalidRequest when ``batch_size`` is outside 1..:data:`MAX_BATCH_SIZE`, a type is
    neither an R4 resource type nor one the store holds (a misspelt ``--type`` must not pass as
    an empty type), an interrupted run had other types or index definitions, or another reindex
    of the database is running (:func:`rhip.store.reindex_lock.single_run`).
    """
    with single_run(engine):
        plan = prepare_reindex(engine, types, batch_size=batch_size, restart=restart)
        return run_reindex(engine, plan, on_rows)


def prepare_reindex(
    engine: Engine, types: Sequence[str] | None = None, *, batch_size: int = 1000, restart: bool = False
) -> ReindexPlan:
    """Check the request and load the interrupted run to resume, or record a new one.

    A saved run is resumed only with the same types (any batch size) and under the same index
    definitions, since only then does finishing it give exactly a fresh run's rows; otherwise
    InvalidRequest names the difference and ``--restart``. Same errors as :func:`reindex`.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidRequest(f"reindex: batch_size must be between 1 and {MAX_BATCH_SIZE}")
    chosen = types_to_reindex(engine, types)
    params = {"types": sorted(set(types)) if types else None, "batch_size": batch_size}
    definitions = progress.definitions_fingerprint()
    with write_transaction(engine) as conn:
        saved = None if restart else progress.load(conn)
        if saved is not None:
            progress.refuse_if_changed(saved, params, definitions)
        cursor = saved or progress.begin(conn, params, definitions)
    return ReindexPlan(
        types=chosen,
        batch_size=batch_size,
        sweep_orphans=not types,
        cursor=cursor,
        resumed=saved is not None,
        remaining=_remaining(engine, chosen, cursor),
    )


def run_reindex(
    engine: Engine, plan: ReindexPlan, on_rows: Callable[[int], None] | None = None
) -> ReindexResult:
    """Walk what ``plan`` has left, sweep orphan types (a run over every type), forget the run."""
    result = ReindexResult(types=plan.types, rows_before=index_row_count(engine, plan.types))
    for res_type in plan.types:
        after = plan.cursor.start_after(res_type)
        if after is not None:
            _reindex_type(engine, res_type, after, plan.batch_size, result, on_rows)
    with write_transaction(engine) as conn:
        if plan.sweep_orphans:
            _sweep_orphans(conn, result)
        progress.clear(conn)
    result.rows_after = index_row_count(engine, plan.types)
    return result


def _remaining(engine: Engine, types: Sequence[str], cursor: progress.Progress) -> int:
    """``resource`` rows of ``types`` the walk from ``cursor`` still has ahead (for the bar and the %)."""
    if cursor.res_type is None:
        return resources_to_reindex(engine, types)
    later = [t for t in types if t > cursor.res_type]
    total = resources_to_reindex(engine, later) if later else 0
    if cursor.res_type in types and not cursor.type_done:
        ahead = [resource.c.res_type == cursor.res_type, resource.c.res_id > cursor.after_id]
        stmt = select(func.count()).select_from(resource).where(*ahead)
        with read_connection(engine) as conn:
            total += int(conn.execute(stmt).scalar_one())
    return total


def _sweep_orphans(conn: Connection, result: ReindexResult) -> None:
    """Delete the index rows of types that have no ``resource`` row at all, and count them.

    Each delete re-checks in the same statement that the type still has no resource, so a
    writer storing the type's first resource meanwhile keeps its rows.
    """
    stored = set(str(t) for (t,) in conn.execute(select(resource.c.res_type).distinct()))
    orphans = sorted(_indexed_types(conn) - stored)
    for res_type in orphans:
        none_stored = ~exists().where(resource.c.res_type == res_type)
        for table in INDEX_TABLES:
            gone = conn.execute(delete(table).where(table.c.res_type == res_type, none_stored))
            result.orphan_rows += max(gone.rowcount or 0, 0)
    result.orphan_types = orphans


def _indexed_types(conn: Connection) -> set[str]:
    """Every type with index rows, one index seek per type and table (``res_type`` leads each index)."""
    found: set[str] = set()
    for table in INDEX_TABLES:
        previous: str | None = None
        while True:
            stmt = select(func.min(table.c.res_type))
            if previous is not None:
                stmt = stmt.where(table.c.res_type > previous)
            previous = conn.execute(stmt).scalar()
            if previous is None:
                break
            found.add(str(previous))
    return found


def types_to_reindex(engine: Engine, types: Sequence[str] | None) -> list[str]:
    """The sorted types :func:`reindex` walks: ``types`` when given (checked), else every stored type.

    Raises InvalidRequest for a type that is neither an R4 resource type nor one the store holds.
    """
    stored = stored_types(engine)
    if not types:
        return stored
    unknown = sorted(t for t in set(types) if not is_resource_type(t) and t not in stored)
    if unknown:
        named = ", ".join(repr(t[:64]) for t in unknown)
        raise InvalidRequest(f"reindex: unknown resource type {named} (not an R4 type, none stored)")
    return sorted(set(types))


def _reindex_type(
    engine: Engine,
    res_type: str,
    after: str,
    batch_size: int,
    result: ReindexResult,
    on_rows: Callable[[int], None] | None,
) -> None:
    """One type from just after id ``after``, keyset page by page, each page in one transaction.

    A page owns the ids from just after the previous page's last id to its own last id, so index
    rows of ids with no ``resource`` row in between go with it, and the empty page that ends the
    walk takes those after the last id (see :func:`_delete_range`). Each page's transaction also
    moves the saved cursor past it.
    """
    while True:
        with write_transaction(engine) as conn:
            rows = conn.execute(_page_sql(conn, res_type, after, batch_size)).all()
            ids = [str(row[0]) for row in rows]
            _delete_range(conn, res_type, after, ids[-1] if ids else None, ids)
            if not rows:
                progress.advance(conn, res_type, after, 0, type_done=True)
                return
            _rebuild_page(conn, rows, result)
            progress.advance(conn, res_type, ids[-1], len(rows))
        after = ids[-1]
        result.pages += 1
        if on_rows is not None:
            on_rows(len(rows))


def _page_sql(conn: Connection, res_type: str, after: str, batch_size: int) -> Any:
    """The next page of ``res_type`` after id ``after``: (res_id, deleted, body).

    On PostgreSQL the rows are locked until the page commits, so that a concurrent update cannot
    write its rows between this read and the rewrite, only to have them replaced by the old body's
    (SQLite's write transaction holds the database lock from its start).
    """
    stmt = (
        select(resource.c.res_id, resource.c.deleted, resource.c.body)
        .where(resource.c.res_type == res_type, resource.c.res_id > after)
        .order_by(resource.c.res_id)
        .limit(batch_size)
    )
    return stmt if conn.dialect.name == "sqlite" else stmt.with_for_update()


def _rebuild_page(conn: Connection, rows: Sequence[Any], result: ReindexResult) -> None:
    """Write the index rows of the page's live bodies (its range's old rows are gone already)."""
    fresh: indexing.TupleRows = {}
    for _res_id, deleted, body in rows:
        if deleted:
            result.deleted += 1
            continue
        indexing.merge_rows(fresh, indexing.tuple_rows_for(orjson.loads(body)))
        result.resources += 1
    indexing.insert_tuples(conn, fresh)


def _delete_range(conn: Connection, res_type: str, after: str, last: str | None, ids: list[str]) -> None:
    """Delete the index rows of ``res_type`` with ``after < res_id <= last`` (no upper bound: None),
    except those of resources in the range that are not among the page's ``ids``.

    Such a resource can only be one created after the page was read (PostgreSQL; SQLite's write
    lock excludes it), and its writer indexed it. The exception is one uncorrelated sub-select,
    evaluated once per statement and almost always empty.
    """
    in_range = [resource.c.res_type == res_type, resource.c.res_id > after]
    if last is not None:
        in_range.append(resource.c.res_id <= last)
    if ids:
        in_range.append(resource.c.res_id.not_in(ids))
    newer = select(resource.c.res_id).where(*in_range)
    for table in INDEX_TABLES:
        cond = [table.c.res_type == res_type, table.c.res_id > after, table.c.res_id.not_in(newer)]
        if last is not None:
            cond.append(table.c.res_id <= last)
        conn.execute(delete(table).where(*cond))
