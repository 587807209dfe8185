"""The operational FHIR resource store: the one object every other module writes and reads through.

A :class:`Store` wraps a SQLAlchemy engine (SQLite file by default, PostgreSQL by URL), brings the
schema to the newest migration when it opens, and offers the FHIR interactions (create, read,
vread, update, patch, delete, their conditional forms, history, search, batch/transaction bundles)
plus the fast bulk path used by ingest and the incremental scan used by the lake. Each call runs in
its own transaction on its own pooled connection, so one Store is shared by all threads of a
process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Engine, func, select

from rhip.config import Settings, get_settings
from rhip.errors import InvalidRequest, ResourceNotFound
from rhip.store import fieldcrypt
from rhip.store.engine import SQLITE_BUSY_TIMEOUT_MS, make_engine, read_connection, write_transaction
from rhip.store.fieldcrypt import FieldCrypt
from rhip.store.guard import WriteGuard
from rhip.store.meta import check_id, check_type
from rhip.store.ops import Ops, Params, WriteResult
from rhip.store.schema import resource as resource_table
from rhip.store.schema import resource_version

if TYPE_CHECKING:
    from rhip.store.bulk import BulkWriteResult
    from rhip.store.search import SearchResult

log = logging.getLogger(__name__)


class HistoryEntry(NamedTuple):
    """One version in a history: ``body`` is None for a delete."""

    body: dict[str, Any] | None
    method: str
    version_id: int
    last_updated: float
    res_type: str
    res_id: str


@dataclass
class HistoryPage:
    """A page of history, newest first."""

    entries: list[HistoryEntry]
    total: int
    offset: int
    count: int
    has_next: bool = field(default=False)


class Store:
    """Versioned FHIR resources in SQLite or PostgreSQL.

    Args:
        url: SQLAlchemy URL, ``sqlite:///path/rhip.sqlite`` or ``postgresql+psycopg://...``.
        migrate: run ``alembic upgrade head`` on open (default True).
        busy_timeout_ms: how long a SQLite writer waits for the write lock (then StoreBusy, 503).
        fields: encryption at rest of citizen IDs and phone numbers; default: as the settings say
            (``RHIP_FIELD_ENCRYPTION``, keys under ``<data_dir>/keys``); ``fieldcrypt.PLAIN`` for none.
    """

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        fields: FieldCrypt | None = None,
    ) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
        self.fields = fields if fields is not None else FieldCrypt.from_settings(get_settings())
        fieldcrypt.bind(self.engine, self.fields)
        if migrate:
            from rhip.store.migrations import upgrade

            upgrade(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Store:
        """The store configured by ``RHIP_DATABASE_URL`` (default: SQLite file in the data dir)."""
        settings = settings or get_settings()
        return cls(settings.resolved_database_url, fields=FieldCrypt.from_settings(settings))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # --- reads ---------------------------------------------------------------------------------
    def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        """Current body of ``res_type/res_id``.

        Raises ResourceNotFound (404) if it never existed and ResourceGone (410) if deleted.
        """
        check_type(res_type, "type")
        check_id(res_id)
        with read_connection(self.engine) as conn:
            return Ops(conn).read(res_type, res_id)

    def vread(self, res_type: str, res_id: str, version_id: int) -> dict[str, Any]:
        """Body of one version; ResourceNotFound if there is no such version, ResourceGone for a delete."""
        check_type(res_type, "type")
        check_id(res_id)
        with read_connection(self.engine) as conn:
            return Ops(conn).vread(res_type, res_id, int(version_id))

    def history(
        self,
        res_type: str | None = None,
        res_id: str | None = None,
        *,
        since: float | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> HistoryPage:
        """Versions newest first: of one resource, of a type, or of the whole system.

        ``since`` (epoch seconds) keeps versions written at or after that instant. An instance
        history of an id that never existed raises ResourceNotFound.
        """
        if res_id is not None and res_type is None:
            raise InvalidRequest("instance history needs a resource type")
        if res_type is not None:
            check_type(res_type, "type")
        if res_id is not None:
            check_id(res_id)
        if count < 0 or offset < 0:
            raise InvalidRequest("history: _count and offset must not be negative")
        with read_connection(self.engine) as conn:
            return _history(conn, res_type, res_id, since, count, offset)

    def search(
        self, res_type: str | None, params: Params, *, count: int = 50, offset: int = 0
    ) -> SearchResult:
        """Search current resources; see :func:`rhip.store.search.execute_search`."""
        from rhip.store.search import execute_search

        if res_type is not None:
            check_type(res_type, "type")
        with read_connection(self.engine) as conn:
            return execute_search(conn, res_type, params, count=count, offset=offset)

    def matching_ids(self, res_type: str, params: Params) -> list[str]:
        """Ids of current resources of ``res_type`` matching ``params`` (for conditional requests)."""
        with read_connection(self.engine) as conn:
            return Ops(conn).matching_ids(res_type, params)

    def iter_current(
        self, res_type: str, *, since: float | None = None, include_deleted: bool = False
    ) -> Iterator[tuple[dict[str, Any] | None, str, float, bool]]:
        """Stream ``(body, id, last_updated, deleted)`` of current resources of one type, oldest first.

        ``since`` keeps resources last written at or after that instant (the lake's incremental
        export). Deleted resources come only with ``include_deleted``, with body None.
        """
        check_type(res_type, "type")
        t = resource_table
        stmt = select(t.c.body, t.c.res_id, t.c.last_updated, t.c.deleted).where(t.c.res_type == res_type)
        if since is not None:
            stmt = stmt.where(t.c.last_updated >= since)
        if not include_deleted:
            stmt = stmt.where(t.c.deleted.is_(False))
        stmt = stmt.order_by(t.c.last_updated, t.c.res_id)
        with read_connection(self.engine) as conn:
            result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
            for body, res_id, last_updated, deleted in result:
                plain = None if deleted else self.fields.loads(bytes(body))
                yield plain, res_id, float(last_updated), bool(deleted)

    def count(self, res_type: str | None = None, *, include_deleted: bool = False) -> int:
        """Number of current resources (of one type, or all)."""
        t = resource_table
        stmt = select(func.count()).select_from(t)
        if res_type is not None:
            stmt = stmt.where(t.c.res_type == res_type)
        if not include_deleted:
            stmt = stmt.where(t.c.deleted.is_(False))
        with read_connection(self.engine) as conn:
            return int(conn.execute(stmt).scalar_one())

    def count_by_type(self) -> dict[str, int]:
        """Current (not deleted) resources per type, most numerous first (``rhip status``)."""
        t = resource_table
        n = func.count().label("n")
        stmt = select(t.c.res_type, n).where(t.c.deleted.is_(False)).group_by(t.c.res_type)
        with read_connection(self.engine) as conn:
            rows = conn.execute(stmt.order_by(n.desc(), t.c.res_type)).all()
        return {str(res_type): int(count) for res_type, count in rows}

    def last_write(self) -> float | None:
        """Epoch seconds of the newest write (a delete included); None for an empty store.

        What the lake's watermark is compared with to tell whether an export is due.
        """
        with read_connection(self.engine) as conn:
            newest = conn.execute(select(func.max(resource_table.c.last_updated))).scalar_one()
        return None if newest is None else float(newest)

    # --- writes --------------------------------------------------------------------------------
    def create(
        self,
        resource: dict[str, Any],
        *,
        if_none_exist: Params | None = None,
        assign_id: bool = False,
        guard: WriteGuard | None = None,
    ) -> WriteResult:
        """Create a resource as version 1.

        The resource keeps a valid ``id`` it carries (VersionConflict 409 if that id exists) unless
        ``assign_id`` is set (FHIR POST semantics: the API passes True); without an id a new one is
        assigned. ``if_none_exist`` (search parameters) makes the create conditional: one match
        returns that resource with ``created=False``, several raise MultipleMatches (412).
        ``guard`` (here and in the other writes) may refuse the write; see :mod:`rhip.store.guard`.
        """
        with write_transaction(self.engine) as conn:
            return Ops(conn, guard).create(resource, if_none_exist=if_none_exist, assign_id=assign_id)

    def update(
        self,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        guard: WriteGuard | None = None,
    ) -> WriteResult:
        """Write a new version of ``res_type/res_id`` (creating it with that id if new).

        ``if_match`` is the version the client last saw: VersionConflict (412) if it is not the
        current one. The body's resourceType and id (if present) must match the URL (InvalidRequest).
        """
        with write_transaction(self.engine) as conn:
            return Ops(conn, guard).update(res_type, res_id, resource, if_match=if_match)

    def conditional_update(
        self, res_type: str, params: Params, resource: dict[str, Any], *, guard: WriteGuard | None = None
    ) -> WriteResult:
        """Update the one resource matching ``params``, create if none, MultipleMatches (412) if several."""
        with write_transaction(self.engine) as conn:
            return Ops(conn, guard).conditional_update(res_type, params, resource)

    def patch(
        self,
        res_type: str,
        res_id: str,
        operations: list[dict[str, Any]],
        *,
        if_match: int | None = None,
        guard: WriteGuard | None = None,
    ) -> WriteResult:
        """Apply an RFC 6902 JSON Patch to the current version and store the result as a new version.

        Raises InvalidRequest (400) for a malformed patch, InvalidResource (422) when it does not
        apply (failed ``test``, missing path) and the usual not-found/gone/conflict errors.
        """
        check_type(res_type, "type")
        check_id(res_id)
        with write_transaction(self.engine) as conn:
            return Ops(conn, guard).patch(res_type, res_id, operations, if_match=if_match)

    def delete(
        self, res_type: str, res_id: str, *, if_match: int | None = None, guard: WriteGuard | None = None
    ) -> WriteResult:
        """Logically delete a resource: a new version marked deleted; reads then raise ResourceGone.

        Deleting an already-deleted resource changes nothing (outcome ``already-deleted``); an id
        that never existed raises ResourceNotFound.
        """
        check_type(res_type, "type")
        check_id(res_id)
        with write_transaction(self.engine) as conn:
            return Ops(conn, guard).delete(res_type, res_id, if_match=if_match)

    def conditional_delete(
        self,
        res_type: str,
        params: Params,
        *,
        allow_multiple: bool = False,
        guard: WriteGuard | None = None,
    ) -> int:
        """Delete the resources matching ``params``; return the number deleted (0 if none matched).

        More than one match raises MultipleMatches (412) unless ``allow_multiple``.
        """
        with write_transaction(self.engine) as conn:
            return Ops(conn, guard).conditional_delete(res_type, params, allow_multiple=allow_multiple)

    def process_bundle(
        self, bundle: dict[str, Any], *, base_url: str | None = None, guard: WriteGuard | None = None
    ) -> dict[str, Any]:
        """Process a ``batch`` or ``transaction`` Bundle and return the response Bundle.

        See :mod:`rhip.store.bundles`: a transaction is atomic (any failing entry raises and
        nothing is written), a batch processes each entry on its own. With ``base_url`` the
        response entries carry absolute ``fullUrl`` values. ``guard`` is asked about every version an
        entry writes: a refusal fails the whole transaction, or just that entry of a batch.
        """
        from rhip.store.bundles import process_bundle

        return process_bundle(self, bundle, base_url=base_url, guard=guard)

    def create_new(self, resources: list[dict[str, Any]]) -> list[WriteResult]:
        """Create under new server-assigned ids in one transaction (:func:`rhip.store.bulk.create_new`)."""
        from rhip.store.bulk import create_new

        return create_new(self.engine, resources)

    def bulk_write(self, resources: Iterable[dict[str, Any]], *, batch_size: int = 2000) -> BulkWriteResult:
        """Create-or-update many resources by id, fast; see :func:`rhip.store.bulk.bulk_write`."""
        from rhip.store.bulk import bulk_write

        return bulk_write(self.engine, resources, batch_size=batch_size)


def _history(
    conn: Any, res_type: str | None, res_id: str | None, since: float | None, count: int, offset: int
) -> HistoryPage:
    v = resource_version
    conditions = []
    if res_type is not None:
        conditions.append(v.c.res_type == res_type)
    if res_id is not None:
        conditions.append(v.c.res_id == res_id)
    if since is not None:
        conditions.append(v.c.last_updated >= since)
    total = int(conn.execute(select(func.count()).select_from(v).where(*conditions)).scalar_one())
    if (
        res_type is not None
        and res_id is not None
        and total == 0
        and Ops(conn).current(res_type, res_id) is None
    ):
        raise ResourceNotFound(f"{res_type}/{res_id} is not known")
    stmt = (
        select(v.c.body, v.c.method, v.c.version_id, v.c.last_updated, v.c.res_type, v.c.res_id, v.c.deleted)
        .where(*conditions)
        .order_by(v.c.last_updated.desc(), v.c.res_type, v.c.res_id, v.c.version_id.desc())
        .limit(count)
        .offset(offset)
    )
    crypt = fieldcrypt.of(conn)
    entries = [
        HistoryEntry(
            None if deleted or body is None else crypt.loads(bytes(body)),
            str(method),
            int(version),
            float(ts),
            str(rtype),
            str(rid),
        )
        for body, method, version, ts, rtype, rid, deleted in conn.execute(stmt)
    ]
    return HistoryPage(entries, total, offset, len(entries), has_next=offset + len(entries) < total)
