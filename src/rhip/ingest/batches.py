"""Ingest batches as operators see them: the recent batches, and which facilities ever sent one.

The HTTP API and the quality scores use :func:`facility_has_batches` to tell a facility that has
sent nothing (an unknown code, answered 404) from one whose filter simply matches nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from rhip.ingest.schema import ensure_schema, ingest_batch
from rhip.store.meta import format_instant


def list_batches(engine: Engine, facility: str | None, limit: int) -> list[dict[str, Any]]:
    """Recent batches with their reconciliation counts, newest first, instants in UTC."""
    ensure_schema(engine)
    stmt = select(ingest_batch).order_by(ingest_batch.c.started.desc()).limit(limit)
    if facility:
        stmt = stmt.where(ingest_batch.c.facility == facility)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    return _with_instants(rows)


def latest_per_facility(engine: Engine) -> list[dict[str, Any]]:
    """The newest batch of every facility with its counts, facilities in code order.

    What an operator scans first: a facility whose last batch is old, or mostly quarantined, is
    a source to call.
    """
    ensure_schema(engine)
    newest = (
        select(ingest_batch.c.facility, func.max(ingest_batch.c.started).label("started"))
        .group_by(ingest_batch.c.facility)
        .subquery()
    )
    on_newest = (ingest_batch.c.facility == newest.c.facility) & (ingest_batch.c.started == newest.c.started)
    stmt = (
        select(ingest_batch)
        .join(newest, on_newest)
        .order_by(ingest_batch.c.facility, ingest_batch.c.batch_id)
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    by_facility = {row["facility"]: row for row in reversed(rows)}  # one per facility on a tie
    return _with_instants(sorted(by_facility.values(), key=lambda row: str(row["facility"])))


def _with_instants(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with ``started`` and ``finished`` as UTC instants (the table keeps epoch seconds)."""
    for row in rows:
        for name in ("started", "finished"):
            if row[name] is not None:
                row[name] = format_instant(row[name])
    return rows


def facility_has_batches(engine: Engine, facility: str) -> bool:
    """Whether ``facility`` has ever sent a batch (any connector, any outcome)."""
    ensure_schema(engine)
    stmt = select(ingest_batch.c.batch_id).where(ingest_batch.c.facility == facility).limit(1)
    with engine.connect() as conn:
        return conn.execute(stmt).first() is not None
