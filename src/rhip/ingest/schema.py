"""Tables of the ingest pipeline: batches, delivered keys, quarantine and source event times.

They live on the store's ``METADATA`` so one database holds everything. They are created by the
platform's migrations (revision ``0002``); a change here needs a new revision.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from rhip.store.schema import METADATA

#: One row per ingest run of one source (file, directory member, listener session).
ingest_batch = Table(
    "ingest_batch",
    METADATA,
    Column("batch_id", String(40), primary_key=True),
    Column("facility", String(64), nullable=False),
    Column("connector", String(32), nullable=False),
    Column("location", String(512), nullable=False, default=""),
    Column("started", Float, nullable=False),
    Column("finished", Float, nullable=True),
    Column("received", Integer, nullable=False, default=0),
    Column("stored", Integer, nullable=False, default=0),
    Column("quarantined", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("stale", Integer, nullable=False, default=0),
)

#: Idempotency keys of delivered records (sha-256 of facility, connector and message key).
ingest_delivery = Table(
    "ingest_delivery",
    METADATA,
    Column("key", String(64), primary_key=True),
    Column("batch_id", String(40), nullable=False),
    Column("received_at", Float, nullable=False),
)

#: Records that could not be parsed, mapped or validated, verbatim, with their reasons.
ingest_quarantine = Table(
    "ingest_quarantine",
    METADATA,
    Column("q_id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("batch_id", String(40), nullable=False),
    Column("facility", String(64), nullable=False),
    Column("connector", String(32), nullable=False),
    Column("location", String(512), nullable=False),
    Column("position", String(512), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("context", Text, nullable=False),  # JSON
    Column("reasons", Text, nullable=False),  # JSON list of {rule, path, message}
    Column("created", Float, nullable=False),
    Column("status", String(16), nullable=False),  # open | replayed
    Column("resolved_at", Float, nullable=True),
    Index("ix_ingest_quarantine_status", "status", "facility"),
)

#: Source event time of the last applied update per resource, to refuse out-of-order updates.
ingest_source_time = Table(
    "ingest_source_time",
    METADATA,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("event_time", Float, nullable=False),
)

INGEST_TABLES: list[Table] = [ingest_batch, ingest_delivery, ingest_quarantine, ingest_source_time]


def ensure_schema(engine: Engine) -> None:
    """Make sure the database is at the newest migration, which holds the ingest tables.

    Cheap after the first call per engine (see :func:`rhip.store.migrations.ensure_head`), so
    ingest entry points call it freely, also on an engine that no ``Store`` opened.
    """
    from rhip.store.migrations import ensure_head

    ensure_head(engine)
