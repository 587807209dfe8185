"""Alembic migrations shipped inside the package and run programmatically when a store opens.

Operators never need an ``alembic.ini``: :func:`upgrade` builds the Alembic configuration in code,
points it at this folder and runs ``upgrade head`` on a connection of the store's engine. The run
is serialised (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``) so several processes opening
the same new database at once apply each migration exactly once. A database already at head is
detected with one query and left alone, so opening a store is cheap.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from rhip.store.engine import WRITE_OPTION

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent
#: Arbitrary constant key of the PostgreSQL advisory lock held while migrating.
_PG_LOCK_KEY = 0x5248_4950  # "RHIP"


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest migration revision shipped with this package."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"store migrations must have exactly one head, found {len(heads)}")
    return str(heads[0])


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, or None for a database never migrated."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database behind ``engine`` to ``revision`` (default: head); return the new revision."""
    with engine.connect() as conn:
        if revision == "head" and current_revision(conn) == head_revision():
            return head_revision()
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()
        try:
            with conn.begin():
                _run_alembic(conn, revision)
            with conn.begin():
                new = current_revision(conn)
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                conn.commit()
    log.info("store schema at revision %s", new)
    return new


def _run_alembic(conn: Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "upgrade"]
