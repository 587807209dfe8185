"""Database engines for the store: one configuration for SQLite and PostgreSQL.

SQLite is the embedded default: one file in WAL mode so readers never block the single writer, a
busy timeout so concurrent writers queue instead of failing, and ``BEGIN IMMEDIATE`` for write
transactions so a transaction that reads and then writes cannot be overtaken between the two (the
driver's own implicit transactions are switched off). PostgreSQL runs at READ COMMITTED; writers
are kept correct by version-checked updates (``UPDATE ... WHERE version_id = :expected``).
Both are used from many threads (the API serves sync endpoints from a thread pool), so every
operation takes its own pooled connection.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool

from rhip.errors import RhipError, VersionConflict

log = logging.getLogger(__name__)

#: How long a SQLite writer waits for the write lock before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Page cache per SQLite connection (KiB; the default 2 MB makes index B-trees spill to the OS).
#: It fills as the database is used: memory grows by up to this much per pooled connection.
SQLITE_CACHE_KIB = 16_384
#: Execution option that marks a connection's transaction as a write transaction.
WRITE_OPTION = "rhip_write"
#: Rows per executemany call of :func:`bulk_insert`.
INSERT_CHUNK = 5000
#: A WAL larger than this after a bulk load is truncated (about what SQLite's default
#: autocheckpoint of 1,000 pages of 4 KiB lets it reach).
WAL_TRUNCATE_BYTES = 4 * 1024 * 1024


class StoreBusy(RhipError):
    """The database stayed locked or overloaded for longer than the busy timeout (503)."""

    def __init__(self, diagnostics: str = "the store is busy; retry later"):
        super().__init__(diagnostics, code="transient", status=503)


def make_engine(url: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """Create the engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    For a SQLite file the parent directory is created if missing; ``busy_timeout_ms`` is how long
    a SQLite writer waits for the lock before StoreBusy.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RhipError(  # the text may hold a password: not echoed
            "the database URL (RHIP_DATABASE_URL or --database-url) is not a URL: use "
            "sqlite:///path/to/rhip.sqlite or postgresql+psycopg://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, int(busy_timeout_ms))
    if parsed.drivername in ("postgresql", "postgres"):  # plain URL: use psycopg 3, the driver we ship
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=16)
    raise RhipError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite or postgresql")


def _cheap_sqlite_binding() -> None:
    """Let the sqlite3 module bind ``None``, ``bytes`` and ``bool`` without its failing look-ups.

    The module binds only exact ``int``, ``float``, ``str`` and ``bytearray`` directly; any other
    parameter goes through its adaptation protocol, which finds no adapter, raises and clears an
    ``AttributeError`` with a formatted message (``PrepareProtocol.__adapt__``), and then binds the
    value as it is. The index rows are full of NULLs and every body is a blob, so the bulk path paid
    that ≈ 16 times a resource (≈ 3 % of its machine instructions; docs/benchmarks.md). An adapter
    registered for the type is found first, by one dict look-up; each of these returns a value the
    module binds exactly as before: the same ``bytes`` object, ``None`` (``{}.get(None)``), and a
    bool as the integer SQLite stored for it anyway (0 or 1). Process-wide, like the module's table.
    """
    sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b itself
    as_null: Callable[[None], None] = dict[None, None]().get  # a C call answering None
    sqlite3.register_adapter(type(None), as_null)
    sqlite3.register_adapter(bool, int)


_cheap_sqlite_binding()


def _sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    parsed = make_url(url)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
    }
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        kwargs["pool_size"] = 8
        kwargs["max_overflow"] = 16
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size={-SQLITE_CACHE_KIB:d}")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    """True when the engine or connection talks to SQLite."""
    return engine_or_conn.dialect.name == "sqlite"


@contextlib.contextmanager
def write_transaction(engine: Engine, *, wal_pages: int = 0) -> Iterator[Connection]:
    """A connection inside a write transaction, committed on success and rolled back on error.

    Database-level contention (deadlock, serialization failure, duplicate key from a concurrent
    writer, SQLite lock timeout) is turned into VersionConflict (409) or StoreBusy (503) so callers
    see a platform error rather than a driver one. ``wal_pages`` (SQLite, bulk loads): the WAL
    autocheckpoint of this transaction's connection, restored after the commit.
    """
    try:
        with engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with _wal_autocheckpoint(conn, wal_pages), conn.begin():
                yield conn
    except IntegrityError as exc:
        log.info("write conflict: %s", type(exc.orig).__name__)
        raise VersionConflict("a concurrent write changed the same resource; retry", status=409) from exc
    except OperationalError as exc:
        translated = _translate_operational(exc)
        if translated is None:
            raise
        raise translated from exc


@contextlib.contextmanager
def _wal_autocheckpoint(conn: Connection, pages: int) -> Iterator[None]:
    """Checkpoint the WAL every ``pages`` pages on this connection only, for one transaction.

    A bulk writer's commits touch the same index pages again and again; checkpointing less often
    writes each of them to the database file fewer times. The pooled connection goes back with its
    setting restored, so other writers keep SQLite's default. Set on the driver connection: a
    statement through SQLAlchemy would open the transaction before ``BEGIN IMMEDIATE``.
    """
    if not pages or not is_sqlite(conn):
        yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    before = raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    raw.execute(f"PRAGMA wal_autocheckpoint={int(pages):d}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA wal_autocheckpoint={int(before):d}")


def truncate_wal(engine: Engine, *, timeout_ms: int = 2_000) -> bool:
    """Checkpoint a SQLite file's WAL and truncate it, when it grew past WAL_TRUNCATE_BYTES.

    Called after a bulk load that checkpointed rarely: SQLite reuses a WAL file without shrinking
    it, so it would otherwise keep the load's size. Waits at most ``timeout_ms`` for readers (the
    API's); returns whether the WAL was emptied (False: small, not SQLite, or readers in the way).
    """
    wal = Path(f"{engine.url.database or ''}-wal") if is_sqlite(engine) else None
    if wal is None or not wal.is_file() or wal.stat().st_size <= WAL_TRUNCATE_BYTES:
        return False
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        wait = raw.execute("PRAGMA busy_timeout").fetchone()[0]
        raw.execute(f"PRAGMA busy_timeout={int(timeout_ms):d}")
        try:
            busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            raw.execute(f"PRAGMA busy_timeout={int(wait):d}")
    if busy:
        log.info("WAL of %s not truncated after a bulk load: readers were busy", engine.url.database)
    return not busy


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection for reading (a plain deferred transaction, rolled back at the end)."""
    with engine.connect() as conn:
        yield conn


def _translate_operational(exc: DBAPIError) -> RhipError | None:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    text = str(exc.orig).lower()
    if sqlstate in ("40001", "40P01"):
        return VersionConflict("a concurrent transaction conflicted with this one; retry", status=409)
    if "database is locked" in text or "database is busy" in text:
        return StoreBusy()
    return None


def bulk_insert(conn: Connection, table: Table, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """executemany with positional tuples (several times faster than dict rows through Core)."""
    if not rows:
        return
    mark = param_mark(conn)
    cols = ", ".join(table.c[c].name for c in columns)  # names from the table: an allow-list
    sql = f"INSERT INTO {table.name} ({cols}) VALUES ({', '.join([mark] * len(columns))})"
    for start in range(0, len(rows), INSERT_CHUNK):
        conn.exec_driver_sql(sql, rows[start : start + INSERT_CHUNK])


def param_mark(conn: Connection) -> str:
    """The positional parameter marker of the connection's driver (SQLite ``?``, psycopg ``%s``)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"
