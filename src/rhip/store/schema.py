"""Tables of the operational store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

``resource`` holds the current version of every resource (deleted ones stay as tombstones so that
reads answer 410 and ids are never reused); ``resource_version`` keeps every version ever written,
which is what history and vread read. ``reindex_progress`` remembers how far an interrupted
``rhip db reindex`` got, so the next run resumes there. Search index tables live in
:mod:`rhip.store.index_schema` on the same ``METADATA``; the index is always rebuilt from the
current body.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

METADATA = MetaData()

#: Current version of each resource, one row per (type, id); ``deleted`` rows are tombstones.
resource = Table(
    "resource",
    METADATA,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", Float, nullable=False),  # epoch seconds, UTC
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=False),  # orjson-encoded resource incl. meta
    Index("ix_resource_last_updated", "last_updated"),
)

#: Every version ever written (create, update, delete), for history and vread.
resource_version = Table(
    "resource_version",
    METADATA,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", Float, nullable=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=True),  # NULL for a delete
    Index("ix_resource_version_last_updated", "last_updated"),
)

#: The run of ``rhip db reindex`` in progress, at most one row (``run`` = 1): its parameters, the
#: fingerprint of the index definitions it started with, and the last (type, id) whose page
#: committed, written in that page's transaction (see :mod:`rhip.store.reindex_progress`).
reindex_progress = Table(
    "reindex_progress",
    METADATA,
    Column("run", Integer, primary_key=True, autoincrement=False),
    Column("started_at", Float, nullable=False),  # epoch seconds, UTC
    Column("params", Text, nullable=False),  # JSON: {"types": [...] | null, "batch_size": n}
    Column("definitions", String(64), nullable=False),  # sha256 hex of the index definitions
    Column("res_type", String(64), nullable=True),  # the type being walked (NULL: none begun)
    Column("after_id", String(64), nullable=False),  # last id of res_type done ("": none)
    Column("type_done", Boolean, nullable=False),  # res_type walked to its end
    Column("walked", Integer, nullable=False),  # resource rows walked so far, for the percentage
)
