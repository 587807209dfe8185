"""One ingest chunk's transaction: its prepared writes, the SQL of its bookkeeping rows, a test hook.

The pipeline (:mod:`rhip.ingest.pipeline`) commits a chunk's resources, their Provenance and its
delivery, quarantine, source-time and count rows in one transaction, so a process killed at any
moment leaves the chunk wholly committed or not at all. What that transaction writes is prepared
here before it opens (version pre-reads, index rows), keeping the transaction short.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select

from rhip.ingest.model import Record, SourceInfo
from rhip.ingest.schema import ingest_delivery, ingest_quarantine, ingest_source_time
from rhip.store import bulk, fastinsert
from rhip.store.engine import is_sqlite
from rhip.store.fieldcrypt import Alike

_DELIVERY_SQL = (
    "INSERT INTO ingest_delivery (key, batch_id, received_at) VALUES ({m}, {m}, {m}) ON CONFLICT DO NOTHING"
)
_SOURCE_TIME_SQL = (
    "INSERT INTO ingest_source_time (res_type, res_id, event_time) VALUES ({m}, {m}, {m}) "
    "ON CONFLICT (res_type, res_id) DO UPDATE SET event_time = excluded.event_time"
)
_COUNTS_SQL = (
    "UPDATE ingest_batch SET received = {m}, stored = {m}, quarantined = {m}, duplicates = {m}, "
    "stale = {m} WHERE batch_id = {m}"
)
#: Ids per look-up statement.
LOOKUP_PART = 400
_DELIVERED_SQLITE = "SELECT key FROM ingest_delivery WHERE key IN (SELECT value FROM json_each(?))"
_SOURCE_TIMES_SQLITE = (
    "SELECT res_id, event_time FROM ingest_source_time "
    "WHERE res_type = ? AND res_id IN (SELECT value FROM json_each(?))"
)


def insert_ignore(engine: Engine, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def write_deliveries(conn: Connection, rows: list[tuple[str, str, float]]) -> None:
    """Record delivery keys (key, batch id, time received); a key already there is kept."""
    fastinsert.update_rows(conn, _DELIVERY_SQL.format(m=fastinsert.placeholder(conn)), rows)


def quarantine_row(
    batch_id: str, rec: Record, key: str, source: SourceInfo, reasons: list[dict[str, str]], now: float
) -> dict[str, Any]:
    """The ``ingest_quarantine`` row of a record: verbatim bytes, context, reasons, status open."""
    return {
        "key": key,
        "batch_id": batch_id,
        "facility": source.facility,
        "connector": source.connector,
        "location": source.location[:512],
        "position": rec.position[:512],
        "raw": rec.raw,
        "context": orjson.dumps({**rec.context, "_key": rec.key}).decode(),
        "reasons": orjson.dumps(reasons).decode(),
        "created": now,
        "status": "open",
        "resolved_at": None,
    }


def write_quarantine(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert quarantine rows; returns the keys that already had an entry (kept as they were)."""
    stmt = insert_ignore(conn.engine, ingest_quarantine).returning(ingest_quarantine.c.key)
    return {row["key"] for row in rows} - set(conn.execute(stmt, rows).scalars())


def write_counts(conn: Connection, row: tuple[int, int, int, int, int, str]) -> None:
    """Set a batch's counts: (received, stored, quarantined, duplicates, stale, batch id)."""
    fastinsert.update_rows(conn, _COUNTS_SQL.format(m=fastinsert.placeholder(conn)), [row])


def write_source_times(conn: Connection, rows: list[tuple[str, str, float]]) -> None:
    """Set the latest source event time of resources (type, id, time), inserted or replaced.

    Both statements go to the driver's executemany with tuples: SQLAlchemy's per-row parameter
    processing cost more than SQLite's own work on these rows (docs/benchmarks.md).
    """
    fastinsert.update_rows(conn, _SOURCE_TIME_SQL.format(m=fastinsert.placeholder(conn)), rows)


@dataclass
class ChunkWrite:
    """A chunk's prepared writes: resources with per-record Provenance, then the chunk's Provenance.

    ``chunk_provenance`` (bulk loads) is written only when the chunk changed something or is
    tracked, so re-loading an unchanged file rewrites nothing.
    """

    batches: list[bulk.Prepared]
    provenances: int
    chunk_provenance: list[bulk.Prepared]


#: Test hook for the crash test: "<chunk number>:<file>" makes the given chunk (1-based, counted
#: per process) create the file and sleep after its resources are written but before its
#: transaction commits, so a kill lands between the two writes deterministically.
PAUSE_ENV = "RHIP_INGEST_TEST_PAUSE"
_chunks_written = 0


def pause_point() -> None:
    """Sleep here when :data:`PAUSE_ENV` names this chunk (crash test only; unset: a counter)."""
    global _chunks_written
    _chunks_written += 1
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    at, _, marker = spec.partition(":")
    if at.isdigit() and int(at) == _chunks_written and marker:
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
        time.sleep(600)


def prepare_chunk(
    engine: Engine,
    resources: list[Any],
    provenances: int,
    chunk_provenance: list[dict[str, Any]],
    alike: Alike | None = None,
) -> ChunkWrite:
    """Pre-read and prepare a chunk's writes (``resources`` ends with its ``provenances``).

    ``alike``: see :func:`rhip.store.bulk.prepare` (applied to the resources, not the Provenance).
    """
    return ChunkWrite(
        [bulk.prepare(engine, b, alike) for b in bulk.split_batches(resources)],
        provenances,
        [bulk.prepare(engine, b) for b in bulk.split_batches(chunk_provenance)],
    )


def write_resources(conn: Connection, plan: ChunkWrite, *, lock: bool) -> bulk.BulkWriteResult:
    """Write the chunk's resources and per-record Provenance in the caller's transaction."""
    result = bulk.BulkWriteResult()
    for batch in plan.batches:
        result.add(bulk.write_batch(conn, batch, lock=lock))
    pause_point()
    return result


def write_chunk_provenance(conn: Connection, plan: ChunkWrite, *, lock: bool) -> None:
    """Write the chunk's own Provenance (bulk loads) in the caller's transaction."""
    for batch in plan.chunk_provenance:
        bulk.write_batch(conn, batch, lock=lock)


def delivered_keys(engine: Engine, keys: list[str]) -> set[str]:
    """Which of ``keys`` an earlier chunk already committed (its delivery keys)."""
    found: set[str] = set()
    with engine.connect() as conn:
        for part in _parts(keys):
            rows: Iterable[Any]
            if is_sqlite(conn):
                rows = fastinsert.fetch_rows(conn, _DELIVERED_SQLITE, (orjson.dumps(part).decode(),))
            else:
                rows = conn.execute(select(ingest_delivery.c.key).where(ingest_delivery.c.key.in_(part)))
            found.update(r[0] for r in rows)
    return found


def source_times(engine: Engine, ids: dict[str, set[str]]) -> dict[tuple[str, str], float]:
    """The applied source event time of each (type, id) of ``ids`` (per type) that has one.

    One ``res_type = ? AND res_id IN (...)`` per type, which the primary key answers: a
    row-value ``(res_type, res_id) IN (VALUES ...)`` made SQLite scan the whole table for every
    chunk. On SQLite the ids are one JSON parameter on the driver's cursor, as in the store's
    version pre-read (an ``IN`` list bound by SQLAlchemy costs ≈ 11 µs per id).
    """
    col = ingest_source_time.c
    known: dict[tuple[str, str], float] = {}
    with engine.connect() as conn:
        for res_type, found in sorted(ids.items()):
            for part in _parts(sorted(found)):
                rows: Iterable[Any]
                if is_sqlite(conn):
                    rows = fastinsert.fetch_rows(
                        conn, _SOURCE_TIMES_SQLITE, (res_type, orjson.dumps(part).decode())
                    )
                else:
                    match = (col.res_type == res_type, col.res_id.in_(part))
                    rows = conn.execute(select(col.res_id, col.event_time).where(*match))
                known.update({(res_type, res_id): t for res_id, t in rows})
    return known


def _parts(values: list[str]) -> list[list[str]]:
    return [values[start : start + LOOKUP_PART] for start in range(0, len(values), LOOKUP_PART)]
