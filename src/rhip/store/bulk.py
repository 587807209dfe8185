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

import orjson
from sqlalchemy import ARRAY, Connection, Engine, LargeBinary, String, any_, bindparam, literal, select
from sqlalchemy.pool import StaticPool

from rhip.errors import InvalidRequest, RhipError, VersionConflict
from rhip.security.fields import PROTECTED_TYPES
from rhip.store import fastinsert, fieldcrypt, indexing
from rhip.store.engine import read_connection, write_transaction
from rhip.store.meta import check_id, check_type, format_instant, new_id, next_timestamp, now, stamp
from rhip.store.ops import Current, WriteResult, dumps
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
    #: the resources found unchanged (nothing written), so a caller can credit what was written
    unchanged_keys: set[Key] = field(default_factory=set)

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
        self.unchanged_keys |= other.unchanged_keys


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


class Encoded(NamedTuple):
    """A resource encoded ahead of its write transaction, by :func:`encode_resource`.

    The stored body is ``head``, the version stamps, ``tail``: the writer only inserts
    ``"versionId":"<n>","lastUpdated":"<instant>"`` and hands the bytes and ``rows`` to the driver.
    An ingest producer process sends this instead of the resource: two byte strings and the
    index tuples cost a fraction of a nested dict to pickle and unpickle, and the writer never
    builds the dict again. ``head`` and ``tail`` are of the body as stored (person types already
    encrypted), and so are the ``rows``. ``rows`` is None when the writer is to compute them
    itself, from :meth:`content` (an ingest producer leaves a share of them to its writer: see
    ``rhip.ingest.producer.Balance``).
    """

    key: Key
    head: bytes
    tail: bytes
    rows: indexing.TupleRows | None

    def body(self, version_id: int, instant: str) -> bytes:
        """The stored body of version ``version_id`` written at ``instant`` (``format_instant``)."""
        stamps = f'"versionId":"{version_id}","lastUpdated":"{instant}"'.encode()
        return b"".join((self.head, stamps, self.tail))

    def resource(self) -> dict[str, Any]:
        """The stored resource as a dict (for comparing with a stored version; rarely needed)."""
        decoded: dict[str, Any] = orjson.loads(self.body(0, format_instant(0.0)))
        return decoded

    def content(self) -> dict[str, Any]:
        """The body as stored without version stamps: what :func:`encode_resource` computed the
        index rows of (a resource with no ``meta`` comes back with an empty one, which no search
        parameter reads anything from)."""
        head = self.head[:-1] if self.head.endswith(b",") else self.head
        decoded: dict[str, Any] = orjson.loads(head + self.tail)
        return decoded

    def index_rows(self) -> indexing.TupleRows:
        """``rows``, or the rows of :meth:`content` when they were left to the writer."""
        return self.rows if self.rows is not None else indexing.tuple_rows_for(self.content())


def encode_resource(
    resource: dict[str, Any], crypt: fieldcrypt.FieldCrypt, *, rows: bool = True
) -> Encoded | None:
    """The resource as :class:`Encoded` for a store whose field encryption is ``crypt``.

    Gives the bytes :func:`write_batch` would give (``dumps(stamp(...))``: type, id and meta
    first, the stamps after the other meta elements) and, with ``rows``, the rows it would
    compute (without: :meth:`Encoded.index_rows` computes them later from the bytes), without
    the version, which only the write transaction knows. None when the resource must go the plain
    way: its ``meta`` already holds version stamps (they are replaced in place) or is not an object.
    Raises InvalidRequest / InvalidResource like the write would.
    """
    key, plain, _ = prepare_resource(resource, rows=False)
    stored = crypt.protect(plain)
    meta = stored.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or "versionId" in meta or "lastUpdated" in meta:
        return None
    head = dumps({"resourceType": key[0], "id": key[1], "meta": meta})[:-2] + (b"," if meta else b"")
    rest = {k: v for k, v in stored.items() if k not in ("resourceType", "id", "meta")}
    tail = b"}," + dumps(rest)[1:] if rest else b"}}"
    return Encoded(key, head, tail, indexing.tuple_rows_for(stored) if rows else None)


class Item(NamedTuple):
    """One resource of a prepared batch.

    ``seen`` is the version the pre-read found (None: new); ``unchanged`` says its content equalled
    that version; ``rows`` are its index rows, computed only when it will probably be written.
    """

    key: Key
    resource: dict[str, Any] | Encoded
    rows: indexing.TupleRows | None
    seen: int | None
    unchanged: bool


def prepare(engine: Engine, batch: list[Ready | Encoded], alike: fieldcrypt.Alike | None = None) -> Prepared:
    """Pre-read the batch's current versions and compute index rows for what will change.

    The pre-read is outside the write transaction; :func:`write_batch` re-checks every version
    and recomputes what a concurrent writer invalidated. Index rows do not depend on the version
    stamps, so they can be computed before the versions are known. ``alike`` lets the caller count
    a resource whose content differs from the current version as unchanged (see
    :meth:`rhip.store.fieldcrypt.FieldCrypt.same_content`); should a concurrent writer change the
    resource before the write, it is compared as usual again.
    """
    with read_connection(engine) as conn:
        currents = _fetch_current(conn, [ready.key for ready in batch])
    crypt = fieldcrypt.of(engine)
    prepared: Prepared = []
    for ready in batch:
        cur = currents.get(ready.key)
        seen = None if cur is None else cur.version_id
        if isinstance(ready, Encoded):
            unchanged = (
                cur is not None and not cur.deleted and crypt.same_content(cur.body, ready.resource(), alike)
            )
            rows = ready.rows if unchanged else ready.index_rows()
            prepared.append(Item(ready.key, ready, rows, seen, unchanged))
            continue
        key, resource, rows = ready
        if cur is not None and not cur.deleted and crypt.same_content(cur.body, resource, alike):
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


def split_batches(
    resources: Iterable[dict[str, Any] | Ready | Encoded], size: int = 2000
) -> Iterator[list[Ready | Encoded]]:
    """``resources`` as batches of distinct keys for :func:`prepare` and :func:`write_batch`.

    A key seen again starts a new batch, so writing the batches in order lets the later resource
    win. A caller that writes several batches in one transaction of its own (the ingest pipeline
    commits a chunk's resources with its bookkeeping rows) uses this with :func:`prepare` and
    :func:`write_batch`; :func:`bulk_write` commits each batch on its own.
    """
    batch: list[Ready | Encoded] = []
    seen: set[Key] = set()
    for position, resource in enumerate(resources):
        ready = (
            resource
            if isinstance(resource, (Ready, Encoded))
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


def write_batch(
    conn: Connection, batch: Prepared, *, lock: bool = False, at: float | None = None
) -> BulkWriteResult:
    """Write one prepared batch of distinct resources in the caller's transaction.

    ``lock`` (PostgreSQL) takes row locks on the batch's existing rows while reading them; the
    first attempt relies on the version checks alone, a retry after a lost race locks. ``at``
    (epoch seconds, default now) is the write time of the resources created.
    """
    currents = _fetch_current(conn, [item.key for item in batch], lock=lock, bodies=False)
    ts_now = now() if at is None else at
    instants: dict[float, str] = {}
    plan = _Plan()
    counts = BulkWriteResult(batches=1)
    for item in batch:
        res_type, res_id = item.key
        cur = currents.get(item.key)
        if cur is not None and not cur.deleted:
            if cur.version_id == item.seen:
                unchanged = item.unchanged
            else:  # written by someone else since the pre-read: compare with what is there now
                unchanged = fieldcrypt.of(conn).same_content(_body(conn, item.key), _resource(item))
            if unchanged:
                counts.unchanged += 1
                counts.unchanged_keys.add(item.key)
                continue
        if cur is None:
            version, ts = 1, ts_now
        else:
            version, ts = cur.version_id + 1, next_timestamp(cur.last_updated, ts_now)
        if isinstance(item.resource, Encoded):
            instant = instants.get(ts) or instants.setdefault(ts, format_instant(ts))
            encoded = item.resource.body(version, instant)
            rows = item.rows if item.rows is not None else item.resource.index_rows()
        else:
            # an item found unchanged by the pre-read was not encrypted then (rows None): encrypt it now
            resource = item.resource if item.rows is not None else fieldcrypt.of(conn).protect(item.resource)
            encoded, rows = dumps(stamp(resource, res_id, version, ts)), _rows(resource, item.rows)
        if cur is None:
            plan.inserts.append((res_type, res_id, 1, ts, False, encoded))
            plan.versions.append((res_type, res_id, 1, ts, "POST", False, encoded))
            counts.created += 1
        else:
            plan.updates.append((version, ts, False, encoded, res_type, res_id, cur.version_id))
            plan.versions.append((res_type, res_id, version, ts, "PUT", False, encoded))
            plan.reindex.setdefault(res_type, []).append(res_id)
            counts.updated += 1
        indexing.merge_rows(plan.index, rows)
    _execute(conn, plan)
    counts.index_rows = sum(len(rows) for rows in plan.index.values())
    return counts


def _resource(item: Item) -> dict[str, Any]:
    return item.resource.resource() if isinstance(item.resource, Encoded) else item.resource


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
    if conn.dialect.name == "sqlite":
        return _fetch_current_sqlite(conn, by_type, bodies=bodies)
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


def _fetch_current_sqlite(
    conn: Connection, by_type: dict[str, list[str]], *, bodies: bool
) -> dict[Key, Current]:
    """:func:`_fetch_current` on SQLite: the ids as one JSON array parameter, on the driver's cursor.

    A thousand-id ``IN`` list built and bound by SQLAlchemy cost ≈ 11 µs per id; ``json_each``
    over one parameter ≈ 4.5 µs (the bulk path reads every batch's versions twice).
    """
    body = "body" if bodies else "x''"
    sql = (
        f"SELECT res_id, version_id, last_updated, deleted, {body} FROM resource "
        "WHERE res_type = ? AND res_id IN (SELECT value FROM json_each(?))"
    )
    found: dict[Key, Current] = {}
    cursor = conn.connection.cursor()
    try:
        for res_type, ids in by_type.items():
            for res_id, version, ts, deleted, data in cursor.execute(
                sql, (res_type, orjson.dumps(ids).decode())
            ):
                found[(res_type, res_id)] = Current(int(version), float(ts), bool(deleted), bytes(data))
    finally:
        cursor.close()
    return found


def create_new(engine: Engine, resources: list[dict[str, Any]]) -> list[WriteResult]:
    """Create each resource under a new server-assigned id, all in one transaction.

    Stores what as many ``Store.create(resource, assign_id=True)`` calls would store (version 1,
    a ``POST`` history row, index rows of the body as stored, person fields encrypted) and returns
    what they would return, with one commit for all. Nothing is read before or after: the ids are
    new, and the answers are built from what was written. If an id turns out to exist already the
    transaction is rolled back and VersionConflict (409) raised, so nothing is overwritten.
    """
    crypt = fieldcrypt.of(engine)
    items: Prepared = []
    plain: list[dict[str, Any]] = []
    for position, resource in enumerate(resources):
        res_type = check_type(resource.get("resourceType"), f"resources[{position}].resourceType")
        body = {**resource, "id": new_id()}
        stored = crypt.protect(body)
        items.append(Item((res_type, body["id"]), stored, indexing.tuple_rows_for(stored), None, False))
        plain.append(body)
    with write_transaction(engine) as conn:
        ts = now()
        counts = write_batch(conn, items, at=ts)
        if counts.created != len(items):
            raise VersionConflict("a server-assigned id exists already; nothing was written", status=409)
    return [WriteResult(stamp(body, body["id"], 1, ts), True, 1, ts, "created") for body in plain]
