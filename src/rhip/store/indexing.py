"""Keeping the search index in step with the current body of every resource.

The index tables and the pure function that derives rows from a resource belong to the search
side (:mod:`rhip.store.index_schema`); this module only writes them, in the caller's transaction,
so that a reader never sees a body and an index that disagree. Rows are written with one
``executemany`` per table, which is what lets the bulk path keep its rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete

from rhip.security.fields import PROTECTED_TYPES, TOKEN_PREFIX
from rhip.store import fastinsert
from rhip.store.index_extract import index_tuples, params_reading
from rhip.store.index_schema import INDEX_TABLES

TABLES_BY_NAME: dict[str, Table] = {table.name: table for table in INDEX_TABLES}
#: Column names of each index table, in the order of the tuple rows.
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    table.name: tuple(c.name for c in table.columns) for table in INDEX_TABLES
}
_DELETE_ONE = {
    table.name: delete(table).where(
        table.c.res_type == bindparam("k_type"), table.c.res_id == bindparam("k_id")
    )
    for table in INDEX_TABLES
}


def rows_for(resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Index rows (table name -> rows) for the current body of ``resource``.

    The rows of :func:`tuple_rows_for` keyed by column name, so that re-encryption and the bulk
    path index a record alike.
    """
    return {
        table: [dict(zip(INDEX_COLUMNS[table], row, strict=True)) for row in rows]
        for table, rows in tuple_rows_for(resource).items()
    }


#: The top-level elements of a protected resource where :func:`rhip.security.fields.protect` puts
#: SM4 tokens (citizen-ID identifiers, phone numbers, a Patient's contacts' phone numbers). Only
#: parameters read from these can index a token, so only their rows are checked for one.
SEALED_ELEMENTS = frozenset({"identifier", "telecom", "contact"})


def _sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def _unsealed(table: str, row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """An index row without SM4 tokens (random per write, so useless to search and to keep).

    A token row keeps its system with no code, so ``identifier=<system>|`` still finds the record;
    a row of another table holding a token is dropped. The searchable HMAC pseudonyms of those
    fields are indexed in rows of their own.
    """
    for value in row:  # a plain loop rather than any() over a generator: it runs for every such row
        if isinstance(value, str) and value.startswith(TOKEN_PREFIX):
            break
    else:
        return row
    if table != "idx_token":
        return None
    return tuple(None if _sealed(v) else v for v in row)


def delete_index(conn: Connection, res_type: str, res_ids: Sequence[str]) -> None:
    """Remove every index row of the given resources of one type."""
    if not res_ids:
        return
    for table in INDEX_TABLES:
        if len(res_ids) == 1:
            conn.execute(_DELETE_ONE[table.name], {"k_type": res_type, "k_id": res_ids[0]})
        else:
            stmt = delete(table).where(
                table.c.res_type == res_type, table.c.res_id.in_(bindparam("ids", expanding=True))
            )
            conn.execute(stmt, {"ids": list(res_ids)})


def insert_index(conn: Connection, rows_by_table: dict[str, list[dict[str, Any]]]) -> int:
    """Insert index rows (table name -> rows), one executemany or COPY per table; return the row count."""
    written = 0
    for name, rows in rows_by_table.items():
        if not rows:
            continue
        table = TABLES_BY_NAME.get(name)
        if table is None:
            raise KeyError(f"index_rows produced rows for unknown index table {name!r}")
        fastinsert.insert_rows(conn, table, fastinsert.as_tuples(table, rows))
        written += len(rows)
    return written


#: Index rows of one or more resources as tuples in table column order: table name -> rows.
TupleRows = dict[str, list[tuple[Any, ...]]]


def tuple_rows_for(resource: dict[str, Any]) -> TupleRows:
    """Index rows of ``resource`` as tuples in column order, ready for :func:`insert_tuples`.

    The bulk path computes these ahead of its write transaction, so the transaction itself only
    concatenates lists and hands them to the driver.
    """
    rows = index_tuples(resource)
    res_type = resource.get("resourceType")
    if res_type not in PROTECTED_TYPES:
        return rows
    sealable = params_reading(res_type, SEALED_ELEMENTS)
    out: TupleRows = {}
    for name, table_rows in rows.items():
        params = sealable.get(name)
        out[name] = table_rows if params is None else _without_tokens(name, table_rows, params)
    return out


def _without_tokens(
    table: str, rows: list[tuple[Any, ...]], sealable: frozenset[str]
) -> list[tuple[Any, ...]]:
    """``rows`` through :func:`_unsealed`, looking only at rows of parameters that can hold a token."""
    out: list[tuple[Any, ...]] = []
    for row in rows:
        if row[2] in sealable:
            kept = _unsealed(table, row)
            if kept is None:
                continue
            row = kept
        out.append(row)
    return out


def insert_tuples(conn: Connection, rows_by_table: TupleRows) -> int:
    """Insert tuple rows (table name -> rows), one executemany or COPY per table; return the row count."""
    written = 0
    for name, rows in rows_by_table.items():
        if rows:
            fastinsert.insert_rows(conn, TABLES_BY_NAME[name], rows)
            written += len(rows)
    return written


def merge_rows(target: dict[str, list[Any]], rows: dict[str, list[Any]]) -> None:
    """Append ``rows`` (table name -> rows) to ``target`` in place."""
    for name, table_rows in rows.items():
        if table_rows:
            target.setdefault(name, []).extend(table_rows)
