"""Ingest batches as operators see them: the recent batches, and which facilities ever sent one.

The HTTP API and the quality scores use :func:`facility_has_batches` to tell a facility that has
sent nothing (an unknown code, answered 404) from one whose filter simply matches nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

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
    for row in rows:  # the table keeps epoch seconds
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
