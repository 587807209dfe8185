"""The ingest fast path: create-or-update many resources by id, a batch per transaction.

Per batch the current rows of all its ids are fetched with one query per resource type, every new
row (resource, version, index) is computed in Python, and each table is then written with one
``executemany`` (SQLite) or ``COPY`` (PostgreSQL, for pure inserts). A resource whose content is
identical to its current version is counted as ``unchanged`` and not written, which makes
re-ingesting the same extract idempotent. Updates are version-checked like single writes; if a
concurrent writer changed one of the batch's resources the whole batch is retried from a fresh read.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ARRAY, Connection, Engine, String, any_, bindparam, select

from rhip.errors import InvalidRequest, VersionConflict
from rhip.store import fastinsert, indexing
from rhip.store.engine import write_transaction
from rhip.store.meta import check_id, check_type, content_of, new_id, next_timestamp, now, stamp
from rhip.store.ops import Current, dumps, loads
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
    engine: Engine, resources: Iterable[dict[str, Any]], *, batch_size: int = 2000
) -> BulkWriteResult:
    """Write ``resources`` (create or update by ``resourceType``/``id``; ids assigned when absent).

    Each batch of ``batch_size`` resources is one transaction; a resource appearing twice in a
    batch starts a new batch so the later one wins. Raises InvalidRequest (naming the position
    in the input) for a resource without a valid type or id; earlier batches stay written.
    """
    if batch_size < 1:
        raise InvalidRequest("bulk_write: batch_size must be at least 1")
    total = BulkWriteResult()
    for batch in _batches(resources, batch_size):
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                with write_transaction(engine) as conn:
                    counts = write_batch(conn, batch, lock=attempt > 1)
                break
            except VersionConflict:
                if attempt == BATCH_ATTEMPTS:
                    raise
                log.info("bulk batch lost a race with a concurrent writer; retrying (%d)", attempt)
                time.sleep(random.uniform(0, 0.02 * attempt))
        total.add(counts)
    return total


def _batches(resources: Iterable[dict[str, Any]], size: int) -> Iterator[list[tuple[Key, dict[str, Any]]]]:
    batch: list[tuple[Key, dict[str, Any]]] = []
    seen: set[Key] = set()
    for position, resource in enumerate(resources):
        key = _key(resource, position)
        if key in seen:
            yield batch
            batch, seen = [], set()
        batch.append((key, resource))
        seen.add(key)
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
    conn: Connection, batch: list[tuple[Key, dict[str, Any]]], *, lock: bool = False
) -> BulkWriteResult:
    """Write one batch of distinct resources in the caller's transaction.

    ``lock`` (PostgreSQL) takes row locks on the batch's existing rows while reading them; the
    first attempt relies on the version checks alone, a retry after a lost race locks.
    """
    currents = _fetch_current(conn, [key for key, _ in batch], lock=lock)
    ts_now = now()
    plan = _Plan()
    counts = BulkWriteResult(batches=1)
    for (res_type, res_id), resource in batch:
        cur = currents.get((res_type, res_id))
        if cur is None:
            version, ts = 1, ts_now
        elif not cur.deleted and content_of(loads(cur.body)) == content_of(resource):
            counts.unchanged += 1
            continue
        else:
            version, ts = cur.version_id + 1, next_timestamp(cur.last_updated, ts_now)
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
        indexing.merge_rows(plan.index, indexing.rows_for(body))
    _execute(conn, plan)
    counts.index_rows = sum(len(rows) for rows in plan.index.values())
    return counts


@dataclass
class _Plan:
    """Everything one batch writes, computed before any statement runs."""

    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    reindex: dict[str, list[str]] = field(default_factory=dict)
    index: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _execute(conn: Connection, plan: _Plan) -> None:
    fastinsert.insert_rows(conn, resource_table, plan.inserts)
    if plan.updates:
        sql = fastinsert.update_current_sql(conn.dialect.paramstyle)
        if fastinsert.update_rows(conn, sql, plan.updates) != len(plan.updates):
            raise VersionConflict("a concurrent writer changed resources of this batch", status=409)
    fastinsert.insert_rows(conn, resource_version, plan.versions)
    for res_type, ids in plan.reindex.items():
        indexing.delete_index(conn, res_type, ids)
    indexing.insert_index(conn, plan.index)


def _fetch_current(conn: Connection, keys: list[Key], *, lock: bool = False) -> dict[Key, Current]:
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
        stmt = select(t.c.res_id, t.c.version_id, t.c.last_updated, t.c.deleted, t.c.body).where(
            t.c.res_type == res_type, match
        )
        if postgres and lock:
            # lock the batch's existing rows in key order, so locking batches cannot deadlock
            stmt = stmt.order_by(t.c.res_id).with_for_update()
        for res_id, version, ts, deleted, body in conn.execute(stmt, {"ids": ids}):
            found[(res_type, res_id)] = Current(int(version), float(ts), bool(deleted), bytes(body))
    return found
