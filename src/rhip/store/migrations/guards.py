"""Checks the revisions use so they also apply to databases built before the migrations were explicit.

Until revision ``0005``, module tables were created outside Alembic (``create_all`` on first use)
and ``0001`` created whatever tables the code of the day registered. So a database at ``0001`` (or
at no revision at all) may already hold any subset of the tables a revision creates, each of the
shape this revision gives it. A revision therefore creates a table only when it is missing and
inserts a seed row only when it is absent. These functions must keep their meaning: revisions
written against them never change.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op


def table_missing(name: str) -> bool:
    """True when the database has no table ``name`` yet (a fresh inspector, so no stale cache)."""
    return not sa.inspect(op.get_bind()).has_table(name)


def insert_row_once(table: sa.TableClause, key: str, row: dict[str, Any]) -> None:
    """Insert ``row`` into ``table`` unless a row with the same value in column ``key`` exists."""
    found = op.get_bind().execute(sa.select(table.c[key]).where(table.c[key] == row[key])).first()
    if found is None:
        op.bulk_insert(table, [row])


def column_missing(table: str, column: str) -> bool:
    """True when ``table`` has no column ``column`` yet (a database whose ``0001`` built the newer shape)."""
    return column not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
