"""Driver-level multi-row inserts: ``executemany`` on SQLite, ``COPY`` on PostgreSQL.

The bulk path writes hundreds of thousands of rows a second, where SQLAlchemy's per-row parameter
processing would cost more than the database. Rows are therefore plain tuples in table column
order and go straight to the DBAPI cursor of the caller's connection (so they are part of its
transaction). SQL text comes from pure functions over the Table definitions: identifiers from the
schema only, values always bound or streamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table

from rhip.errors import VersionConflict

#: Below this many rows PostgreSQL gets an executemany instead of a COPY.
COPY_MIN_ROWS = 50


@lru_cache(maxsize=64)
def columns(table: Table) -> tuple[str, ...]:
    """Column names of ``table`` in definition order (the order of the tuples written)."""
    return tuple(column.name for column in table.columns)


def insert_sql(table: Table, paramstyle: str) -> str:
    """``INSERT INTO t (c1, ...) VALUES (?, ...)`` for a DBAPI paramstyle (``qmark`` or ``format``)."""
    names = columns(table)
    mark = "?" if paramstyle == "qmark" else "%s"
    return f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(mark for _ in names)})"


def copy_sql(table: Table) -> str:
    """``COPY t (c1, ...) FROM STDIN`` for PostgreSQL."""
    return f"COPY {table.name} ({', '.join(columns(table))}) FROM STDIN"


def update_current_sql(paramstyle: str) -> str:
    """Version-checked replacement of current rows: parameters (version_id, last_updated, body,
    res_type, res_id, expected_version)."""
    mark = "?" if paramstyle == "qmark" else "%s"
    return (
        f"UPDATE resource SET version_id = {mark}, last_updated = {mark}, deleted = {mark}, body = {mark} "
        f"WHERE res_type = {mark} AND res_id = {mark} AND version_id = {mark}"
    )


def placeholder(conn: Connection) -> str:
    """The driver's positional parameter mark for hand-written SQL: ``?`` (SQLite) or ``%s``."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def update_rows(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """Run ``sql`` once per tuple with the driver's executemany; return the total rows changed."""
    if not rows:
        return 0
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, list(rows))
        return int(cursor.rowcount)
    finally:
        cursor.close()


def fetch_rows(conn: Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    """One read on the driver's cursor: no statement compiled or parameters bound by SQLAlchemy."""
    cursor = conn.connection.cursor()
    try:
        return list(cursor.execute(sql, tuple(args)).fetchall())
    finally:
        cursor.close()


def as_tuples(table: Table, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Dict rows to tuples in column order (missing keys become NULL)."""
    names = columns(table)
    return [tuple(map(row.get, names)) for row in rows]


def insert_rows(conn: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert tuple ``rows`` into ``table`` inside the connection's current transaction."""
    if not rows:
        return
    dbapi = conn.connection
    duplicate = conn.dialect.loaded_dbapi.IntegrityError
    try:
        if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
            with dbapi.driver_connection.cursor() as cursor, cursor.copy(copy_sql(table)) as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
            return
        cursor = dbapi.cursor()
        try:
            cursor.executemany(insert_sql(table, conn.dialect.paramstyle), list(rows))
        finally:
            cursor.close()
    except duplicate as exc:
        # a concurrent writer inserted one of these keys first; the caller retries from a fresh read
        raise VersionConflict(f"a concurrent writer inserted rows of {table.name} first", status=409) from exc
