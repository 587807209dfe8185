"""The ingest fast path: create-or-update many resources by id, a batch per transaction.

Batches are pipelined: while one batch is written, a helper thread pre-reads the next batch's
current versions (one query per resource type) and computes index rows for the resources that
will change. The write transaction re-reads the versions, computes every new row (resource,
version, index) in Python and writes each table with one ``executemany`` (SQLite) or ``COPY``
(PostgreSQL). A resource whose content is identical to its current version is counted as
``unchanged`` and not written, which makes re-ingesting the same extract idempotent. Updates are
version-checked like single writes; if a concurrent writer changed one of the batch's resources
the whole batch is retried from a fresh read.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import ARRAY, Connection, Engine, LargeBinary, String, any_, bindparam, literal, select
from sqlalchemy.pool import StaticPool

from rhip.errors import InvalidRequest, RhipError, VersionConflict
from rhip.security.fields import PROTECTED_TYPES
from rhip.store import fastinsert, fieldcrypt, indexing
from rhip.store.engine import read_connection, write_transaction
from rhip.store.meta import check_id, check_type, new_id, next_timestamp, now, stamp
from rhip.store.ops import Current, dumps
from rhip.store.schema import resource as resource_table
from rhip.store.schema import resource_version

log = logging.getLogger(__name__)

#: Attempts per batch when concurrent writers keep changing the same resources.
BATCH_ATTEMPTS = 6

Key = tuple[str, str]


@dataclass
class BulkWriteResult:
    """Counts of a bulk write."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    batches: int = 0
    index_rows: int = 0

    @property
    def total(self) -> int:
        """Resources processed."""
        return self.created + self.updated + self.unchanged

    def add(self, other: BulkWriteResult) -> None:
        """Add another result's counts to this one."""
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.batches += other.batches
        self.index_rows += other.index_rows


def bulk_write(
    engine: Engine, resources: Iterable[dict[str, Any] | Ready], *, batch_size: int = 2000
) -> BulkWriteResult:
    """Write ``resources`` (create or update by ``resourceType``/``id``; ids assigned when absent).

    A resource may also come as a :class:`Ready` from :func:`prepare_resource` (called ahead, e.g.
    in an ingest producer process), whose index rows are then not computed again.

    Each batch of ``batch_size`` resources is one transaction; a resource appearing twice in a
    batch starts a new batch so the later one wins. Raises InvalidRequest (naming the position
    in the input) for a resource without a valid type or id; earlier batches stay written.
    With more than one batch, the index rows of the next batch are computed on a helper thread
    while the current batch is written (the database drivers release the GIL while the database
    works); a single batch is prepared and written on the caller's thread.
    """
    if batch_size < 1:
        raise InvalidRequest("bulk_write: batch_size must be at least 1")
    total = BulkWriteResult()
    batches = split_batches(resources, batch_size)
    first = next(batches, None)
    if first is None:
        return total
    try:
        second = next(batches, None)
    except RhipError:  # keep the promise: earlier batches stay written
        total.add(_write_with_retries(engine, prepare(engine, first)))
        raise
    if second is None or isinstance(engine.pool, StaticPool):
        # one batch (nothing to overlap) or one shared connection (in-memory SQLite): no helper thread
        for chunk in (first,) if second is None else itertools.chain((first, second), batches):
            total.add(_write_with_retries(engine, prepare(engine, chunk)))
        return total
    batches = itertools.chain((first, second), batches)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rhip-bulk-index") as pool:
        ahead: Future[Prepared] | None = None
        while True:
            try:
                batch = next(batches, None)
            except RhipError:
                if ahead is not None:  # keep the promise: earlier batches stay written
                    total.add(_write_with_retries(engine, ahead.result()))
                raise
            following = None if batch is None else pool.submit(prepare, engine, batch)
            if ahead is not None:
                total.add(_write_with_retries(engine, ahead.result()))
            if following is None:
                return total
            ahead = following


class Ready(NamedTuple):
    """A resource prepared for storage by :func:`prepare_resource`: its key, body and index rows.

    Plain tuples, dicts and strings, so a producer process can prepare resources and hand them to
    the writing process through a pipe.
    """

    key: Key
    resource: dict[str, Any]
    rows: indexing.TupleRows | None


def prepare_resource(resource: dict[str, Any], *, position: int = 0, rows: bool = True) -> Ready:
    """Prepare one resource for storage: the single per-resource step before comparison and encoding.

    Checks type and id (raises InvalidRequest naming ``resources[position]``; assigns an id when
    absent), and with ``rows`` computes the index rows — except for the person types whose
    fields the store encrypts: their rows must come from the encrypted body, which only the
    writer (holding the keys) builds. It is a pure function of the resource: an ingest producer
    process may run it ahead of the write transaction.
    """
    key = _key(resource, position)
    body = resource if resource.get("id") == key[1] else {**resource, "id": key[1]}
    ahead = rows and key[0] not in PROTECTED_TYPES
    return Ready(key, body, indexing.tuple_rows_for(body) if ahead else None)


class Item(NamedTuple):
    """One resource of a prepared batch.

    ``seen`` is the version the pre-read found (None: new); ``unchanged`` says its content equalled
    that version; ``rows`` are its index rows, computed only when it will probably be written.
    """

    key: Key
    resource: dict[str, Any]
    rows: indexing.TupleRows | None
    seen: int | None
    unchanged: bool


def prepare(engine: Engine, batch: list[Ready]) -> Prepared:
    """Pre-read the batch's current versions and compute index rows for what will change.

    The pre-read is outside the write transaction; :func:`write_batch` re-checks every version
    and recomputes what a concurrent writer invalidated. Index rows do not depend on the version
    stamps, so they can be computed before the versions are known.
    """
    with read_connection(engine) as conn:
        currents = _fetch_current(conn, [ready.key for ready in batch])
    crypt = fieldcrypt.of(engine)
    prepared: Prepared = []
    for key, resource, rows in batch:
        cur = currents.get(key)
        seen = None if cur is None else cur.version_id
        if cur is not None and not cur.deleted and crypt.same_content(cur.body, resource):
            prepared.append(Item(key, resource, None, seen, True))
        else:  # encrypted before the index rows are extracted: no plaintext reaches any table
            stored = crypt.protect(resource)
            rows = rows if stored is resource else None  # a producer's rows saw the plaintext
            prepared.append(Item(key, stored, _rows(stored, rows), seen, False))
    return prepared


def _rows(resource: dict[str, Any], rows: indexing.TupleRows | None) -> indexing.TupleRows:
    return rows if rows is not None else indexing.tuple_rows_for(resource)


#: A batch ready to write.
Prepared = list[Item]


def _write_with_retries(engine: Engine, batch: Prepared) -> BulkWriteResult:
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            with write_transaction(engine) as conn:
                return write_batch(conn, batch, lock=attempt > 1)
        except VersionConflict:
            if attempt == BATCH_ATTEMPTS:
                raise
            log.info("bulk batch lost a race with a concurrent writer; retrying (%d)", attempt)
            time.sleep(random.uniform(0, 0.02 * attempt))
    raise VersionConflict("bulk batch could not be written", status=409)  # not reached


def split_batches(resources: Iterable[dict[str, Any] | Ready], size: int = 2000) -> Iterator[list[Ready]]:
    """``resources`` as batches of distinct keys for :func:`prepare` and :func:`write_batch`.

    A key seen again starts a new batch, so writing the batches in order lets the later resource
    win. A caller that writes several batches in one transaction of its own (the ingest pipeline
    commits a chunk's resources with its bookkeeping rows) uses this with :func:`prepare` and
    :func:`write_batch`; :func:`bulk_write` commits each batch on its own.
    """
    batch: list[Ready] = []
    seen: set[Key] = set()
    for position, resource in enumerate(resources):
        ready = (
            resource
            if isinstance(resource, Ready)
            else prepare_resource(resource, position=position, rows=False)
        )
        if ready.key in seen:
            yield batch
            batch, seen = [], set()
        batch.append(ready)
        seen.add(ready.key)
        if len(batch) >= size:
            yield batch
            batch, seen = [], set()
    if batch:
        yield batch


def _key(resource: object, position: int) -> Key:
    where = f"resources[{position}]"
    if not isinstance(resource, dict):
        raise InvalidRequest(f"bulk_write: {where} is not a resource")
    res_type = check_type(resource.get("resourceType"), f"{where}.resourceType")
    res_id = resource.get("id")
    if res_id is None:
        return res_type, new_id()
    return res_type, check_id(res_id, f"{where}.id")


def write_batch(conn: Connection, batch: Prepared, *, lock: bool = False) -> BulkWriteResult:
    """Write one prepared batch of distinct resources in the caller's transaction.

    ``lock`` (PostgreSQL) takes row locks on the batch's existing rows while reading them; the
    first attempt relies on the version checks alone, a retry after a lost race locks.
    """
    currents = _fetch_current(conn, [item.key for item in batch], lock=lock, bodies=False)
    ts_now = now()
    plan = _Plan()
    counts = BulkWriteResult(batches=1)
    for item in batch:
        res_type, res_id = item.key
        cur = currents.get(item.key)
        if cur is not None and not cur.deleted:
            if cur.version_id == item.seen:
                unchanged = item.unchanged
            else:  # written by someone else since the pre-read: compare with what is there now
                unchanged = fieldcrypt.of(conn).same_content(_body(conn, item.key), item.resource)
            if unchanged:
                counts.unchanged += 1
                continue
        if cur is None:
            version, ts = 1, ts_now
        else:
            version, ts = cur.version_id + 1, next_timestamp(cur.last_updated, ts_now)
        # an item found unchanged by the pre-read was not encrypted then (rows None): encrypt it now
        resource = item.resource if item.rows is not None else fieldcrypt.of(conn).protect(item.resource)
        body = stamp(resource, res_id, version, ts)
        encoded = dumps(body)
        if cur is None:
            plan.inserts.append((res_type, res_id, 1, ts, False, encoded))
            plan.versions.append((res_type, res_id, 1, ts, "POST", False, encoded))
            counts.created += 1
        else:
            plan.updates.append((version, ts, False, encoded, res_type, res_id, cur.version_id))
            plan.versions.append((res_type, res_id, version, ts, "PUT", False, encoded))
            plan.reindex.setdefault(res_type, []).append(res_id)
            counts.updated += 1
        indexing.merge_rows(plan.index, _rows(resource, item.rows))
    _execute(conn, plan)
    counts.index_rows = sum(len(rows) for rows in plan.index.values())
    return counts


def _body(conn: Connection, key: Key) -> bytes:
    t = resource_table
    stmt = select(t.c.body).where(t.c.res_type == key[0], t.c.res_id == key[1])
    return bytes(conn.execute(stmt).scalar_one())


@dataclass
class _Plan:
    """Everything one batch writes, computed before any statement runs."""

    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    reindex: dict[str, list[str]] = field(default_factory=dict)
    index: indexing.TupleRows = field(default_factory=dict)


def _execute(conn: Connection, plan: _Plan) -> None:
    fastinsert.insert_rows(conn, resource_table, plan.inserts)
    if plan.updates:
        sql = fastinsert.update_current_sql(conn.dialect.paramstyle)
        if fastinsert.update_rows(conn, sql, plan.updates) != len(plan.updates):
            raise VersionConflict("a concurrent writer changed resources of this batch", status=409)
    fastinsert.insert_rows(conn, resource_version, plan.versions)
    for res_type, ids in plan.reindex.items():
        indexing.delete_index(conn, res_type, ids)
    indexing.insert_tuples(conn, plan.index)


def _fetch_current(
    conn: Connection, keys: list[Key], *, lock: bool = False, bodies: bool = True
) -> dict[Key, Current]:
    by_type: dict[str, list[str]] = {}
    for res_type, res_id in keys:
        by_type.setdefault(res_type, []).append(res_id)
    t = resource_table
    found: dict[Key, Current] = {}
    postgres = conn.dialect.name == "postgresql"
    for res_type, ids in by_type.items():
        if postgres:  # one array parameter instead of thousands of placeholders
            match = t.c.res_id == any_(bindparam("ids", type_=ARRAY(String)))
        else:
            match = t.c.res_id.in_(bindparam("ids", expanding=True))
        body = t.c.body if bodies else literal(b"", LargeBinary).label("body")
        stmt = select(t.c.res_id, t.c.version_id, t.c.last_updated, t.c.deleted, body).where(
            t.c.res_type == res_type, match
        )
        if postgres and lock:
            # lock the batch's existing rows in key order, so locking batches cannot deadlock
            stmt = stmt.order_by(t.c.res_id).with_for_update()
        for res_id, version, ts, deleted, body in conn.execute(stmt, {"ids": ids}):
            found[(res_type, res_id)] = Current(int(version), float(ts), bool(deleted), bytes(body))
    return found
