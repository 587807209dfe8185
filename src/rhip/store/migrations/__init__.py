"""The platform's one Alembic history, shipped inside the package and run programmatically.

Every table of the operational database is created by a revision here: the store and its search
index (``0001``), ingest and quality (``0002``), the MPI (``0003``), security (``0004``),
surveillance (``0005``), the MPI's protected columns (``0006``) and the progress of an interrupted
reindex (``0007``). Revisions use explicit operations, so a revision never changes meaning
when the code's tables change; a table change is a new revision, and
``tests/store/test_store_migrations_drift.py`` fails until it exists.

Operators never need an ``alembic.ini``: :func:`upgrade` builds the Alembic configuration in code,
points it at this folder and runs ``upgrade head`` on a connection of the store's engine. The run
is serialised (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``) so several processes opening
the same new database at once apply each migration exactly once. A database already at head is
detected with one query and left alone, and :func:`ensure_head` remembers engines it has seen at
head, so the modules' ``ensure_schema`` calls cost nothing after the first.
"""

from __future__ import annotations

import logging
import threading
import weakref
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, MetaData, inspect, text

from rhip.store.engine import WRITE_OPTION

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent
#: Arbitrary constant key of the PostgreSQL advisory lock held while migrating.
_PG_LOCK_KEY = 0x5248_4950  # "RHIP"
#: Engines whose database this process has brought to (or found at) head.
_AT_HEAD: weakref.WeakSet[Engine] = weakref.WeakSet()
_AT_HEAD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration revision shipped with this package."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"store migrations must have exactly one head, found {len(heads)}")
    return str(heads[0])


def revisions() -> list[tuple[str, str]]:
    """Every shipped revision, oldest first, with the first line of its description."""
    from alembic.script import ScriptDirectory

    scripts = reversed(list(ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()))
    return [(str(s.revision), s.doc.splitlines()[0] if s.doc else "") for s in scripts]


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, or None for a database never migrated."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database behind ``engine`` to ``revision`` (default: head); return the new revision."""
    if revision == "head":
        with engine.connect() as conn:
            if current_revision(conn) == head_revision():
                _mark_at_head(engine)
                return head_revision()
    new = _migrate(engine, "upgrade", revision)
    if new == head_revision():
        _mark_at_head(engine)
    return new


def downgrade(engine: Engine, revision: str) -> str | None:
    """Take the database back to ``revision`` (``"base"``: no tables); return the new revision.

    Dropping a revision's tables drops their data: this is for rolling back an upgrade, not for
    routine use.
    """
    with _AT_HEAD_LOCK:
        _AT_HEAD.discard(engine)
    return _migrate(engine, "downgrade", revision)


def ensure_head(engine: Engine) -> None:
    """Make sure the database behind ``engine`` is at head, checking it once per engine and process.

    This is what the modules' ``ensure_schema`` functions call: the first call per engine upgrades
    (or finds the database at head with one query); later calls return at once. A downgrade run by
    another process is not noticed until the engine is recreated (restart after downgrading).
    """
    if engine in _AT_HEAD:
        return
    upgrade(engine)


def platform_metadata() -> list[MetaData]:
    """The SQLAlchemy metadata of every table the migrations create, for autogenerate and drift tests.

    Imports the module schemas lazily: the store itself does not depend on them.
    """
    import rhip.ingest.schema
    import rhip.mpi.schema
    import rhip.quality.schema
    import rhip.store.index_schema
    import rhip.surveillance.definitions  # noqa: F401  (registers its table on the alerts metadata)
    from rhip.security.schema import SECURITY_METADATA
    from rhip.store.schema import METADATA
    from rhip.surveillance.alerts import METADATA as SURVEILLANCE_METADATA

    return [METADATA, SECURITY_METADATA, SURVEILLANCE_METADATA]


def _mark_at_head(engine: Engine) -> None:
    with _AT_HEAD_LOCK:
        _AT_HEAD.add(engine)


def _migrate(engine: Engine, command_name: str, revision: str) -> str | None:
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()
        try:
            with conn.begin():
                _run_alembic(conn, command_name, revision)
            with conn.begin():
                new = current_revision(conn)
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                conn.commit()
    log.info("store schema at revision %s", new)
    return new


def _run_alembic(conn: Connection, command_name: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    getattr(command, command_name)(config, revision)


__all__ = [
    "MIGRATIONS_DIR",
    "current_revision",
    "downgrade",
    "ensure_head",
    "head_revision",
    "platform_metadata",
    "revisions",
    "upgrade",
]
