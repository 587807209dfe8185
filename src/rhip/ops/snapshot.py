"""A consistent copy of the operational database while the platform runs, and its way back.

SQLite: a WAL database is never copied as a file (the file alone lacks what the WAL holds, and
the two change independently); the copy goes through SQLite's online backup API from a connection
that holds one read transaction for the whole copy, so every page comes from one snapshot while
writers go on. PostgreSQL: ``pg_dump`` in custom format, run on a snapshot exported from a
REPEATABLE READ transaction in which the facts of the manifest (schema revision, audit head,
counts) are read, so the facts and the dump describe the same moment.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from rhip.ops.archive import BackupError, OnProgress
from rhip.security.schema import GENESIS
from rhip.store.engine import make_engine
from rhip.store.migrations import current_revision

#: Pages the SQLite backup copies per step (4 MiB of 4 KiB pages): one progress tick each.
SQLITE_STEP_PAGES = 1024
#: Tables whose row counts the manifest records (what an operator reconciles after a restore).
COUNTED_TABLES = ("resource", "resource_version", "audit_log")


@dataclass
class SnapshotFacts:
    """What a snapshot says about itself: schema revision, audit chain head, row counts."""

    schema_revision: str | None
    audit_seq: int
    audit_hash: str
    counts: dict[str, int]


def read_facts(conn: sa.Connection) -> SnapshotFacts:
    """The facts of the database behind ``conn`` (read, never migrated)."""
    tables = set(sa.inspect(conn).get_table_names())
    counts = {
        name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())  # names: allow-list
        for name in COUNTED_TABLES
        if name in tables
    }
    seq, digest = 0, GENESIS
    if "audit_head" in tables:
        row = conn.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).first()
        if row is not None:
            seq, digest = int(row[0]), str(row[1])
    return SnapshotFacts(current_revision(conn), seq, digest, counts)


def sqlite_facts(path: Path) -> SnapshotFacts:
    """The facts of a SQLite snapshot file."""
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return read_facts(conn)
    finally:
        engine.dispose()


def snapshot_sqlite(db_path: Path, out: Path, on_progress: OnProgress) -> SnapshotFacts:
    """Copy the SQLite store at ``db_path`` to ``out`` as of one moment, writers going on meanwhile.

    The copy is left in rollback-journal mode: one self-contained file, no ``-wal`` beside it.
    """
    if not db_path.is_file():
        raise BackupError(f"{db_path}: no SQLite store there (check RHIP_DATA_DIR or RHIP_DATABASE_URL)")
    source = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    target = sqlite3.connect(out, isolation_level=None)
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read snapshot starts here
        page = int(source.execute("PRAGMA page_size").fetchone()[0])
        source.backup(
            target,
            pages=SQLITE_STEP_PAGES,
            progress=lambda _status, left, total: on_progress(
                "snapshot", (total - left) * page, total * page
            ),
        )
        source.execute("ROLLBACK")
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()
    return sqlite_facts(out)


def integrity_problem(path: Path) -> str | None:
    """None when SQLite's ``PRAGMA integrity_check`` finds a snapshot file sound, else its first finding."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            result = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if result == "ok" else result


def _tool(name: str) -> str:
    """The path of a PostgreSQL client program; BackupError naming what to install when absent."""
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} is not on PATH: install the PostgreSQL client programs of the server's major "
            "version (Debian/Ubuntu: apt-get install postgresql-client) and run again"
        )
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL for the client programs and their environment; the password goes in PGPASSWORD.

    Never on the command line, where any user of the machine could read it in the process list.
    """
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    """Run a client program; BackupError with its last lines of output when it fails."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BackupError(f"{Path(cmd[0]).name} failed (exit {done.returncode}): {said}")


def snapshot_postgres(url: str, out: Path) -> SnapshotFacts:
    """``pg_dump --format=custom`` of the database at ``url`` into ``out``, with its facts."""
    pg_dump = _tool("pg_dump")
    conninfo, env = _libpq(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot_id = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
                facts = read_facts(conn)
                cmd = [pg_dump, "--format=custom", f"--snapshot={snapshot_id}", f"--file={out}"]
                _run([*cmd, f"--dbname={conninfo}"], env)
    finally:
        engine.dispose()
    return facts


def check_postgres_dump(dump: Path) -> None:
    """BackupError when ``pg_restore`` cannot read the dump's table of contents."""
    _run([_tool("pg_restore"), "--list", str(dump)], dict(os.environ))


def restore_postgres(dump: Path, url: str) -> None:
    """Restore a dump into the empty database at ``url``; BackupError when it holds tables already."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if tables:
        where = make_url(url).render_as_string(hide_password=True)
        raise BackupError(
            f"{where}: the database is not empty ({len(tables)} tables); restore into a new one"
        )
    conninfo, env = _libpq(url)
    cmd = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error"]
    _run([*cmd, f"--dbname={conninfo}", str(dump)], env)
