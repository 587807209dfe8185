"""Store tables: resources, their versions and the search index.

Explicit operations, so this revision means the same thing whatever the code's tables become; a
later change to a table is a new revision. A table that already exists is left alone (see
:mod:`rhip.store.migrations.guards`): before these operations were written out, ``0001`` ran
``create_all`` on the store's metadata and databases built that way are at this revision already.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import table_missing

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Index text compared byte-wise (collation "C") on PostgreSQL, so prefix ranges are exact.
_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")

_INDEX_TABLES = (
    "idx_string",
    "idx_token",
    "idx_date",
    "idx_reference",
    "idx_quantity",
    "idx_number",
    "idx_uri",
    "idx_composite",
)


def _key_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(100), nullable=False),
    ]


def _res_index(table: str) -> None:
    op.create_index(f"ix_{table}_res", table, ["res_type", "res_id", "param"])


def upgrade() -> None:
    """Create the resource tables and the eight index tables with their B-tree indexes."""
    _create_resource_tables()
    _create_string_token_date()
    _create_reference_quantity()
    _create_number_uri_composite()


def downgrade() -> None:
    """Drop every store table (and with them their indexes and data)."""
    for table in reversed(_INDEX_TABLES):
        op.drop_table(table)
    op.drop_table("resource_version")
    op.drop_table("resource")


def _create_resource_tables() -> None:
    if table_missing("resource"):
        op.create_table(
            "resource",
            sa.Column("res_type", sa.String(64), primary_key=True),
            sa.Column("res_id", sa.String(64), primary_key=True),
            sa.Column("version_id", sa.Integer, nullable=False),
            sa.Column("last_updated", sa.Float, nullable=False),
            sa.Column("deleted", sa.Boolean, nullable=False),
            sa.Column("body", sa.LargeBinary, nullable=False),
        )
        op.create_index("ix_resource_last_updated", "resource", ["last_updated"])
    if table_missing("resource_version"):
        op.create_table(
            "resource_version",
            sa.Column("res_type", sa.String(64), primary_key=True),
            sa.Column("res_id", sa.String(64), primary_key=True),
            sa.Column("version_id", sa.Integer, primary_key=True),
            sa.Column("last_updated", sa.Float, nullable=False),
            sa.Column("method", sa.String(8), nullable=False),
            sa.Column("deleted", sa.Boolean, nullable=False),
            sa.Column("body", sa.LargeBinary, nullable=True),
        )
        op.create_index("ix_resource_version_last_updated", "resource_version", ["last_updated"])


def _create_string_token_date() -> None:
    if table_missing("idx_string"):
        op.create_table(
            "idx_string",
            *_key_columns(),
            sa.Column("norm", _TEXT, nullable=False),
            sa.Column("exact", _TEXT, nullable=False),
        )
        op.create_index("ix_idx_string_value", "idx_string", ["res_type", "param", "norm", "res_id"])
        _res_index("idx_string")
    if table_missing("idx_token"):
        op.create_table(
            "idx_token",
            *_key_columns(),
            sa.Column("system", _TEXT),
            sa.Column("code", _TEXT),
            sa.Column("text", _TEXT),
        )
        op.create_index("ix_idx_token_value", "idx_token", ["res_type", "param", "code", "system", "res_id"])
        _res_index("idx_token")
    if table_missing("idx_date"):
        op.create_table(
            "idx_date",
            *_key_columns(),
            sa.Column("low", sa.Float, nullable=False),
            sa.Column("high", sa.Float, nullable=False),
        )
        op.create_index("ix_idx_date_value", "idx_date", ["res_type", "param", "low", "high"])
        _res_index("idx_date")


def _create_reference_quantity() -> None:
    if table_missing("idx_reference"):
        op.create_table(
            "idx_reference",
            *_key_columns(),
            sa.Column("target_type", sa.String(64)),
            sa.Column("target_id", sa.String(64)),
            sa.Column("url", _TEXT),
            sa.Column("ident_system", _TEXT),
            sa.Column("ident_value", _TEXT),
        )
        op.create_index(
            "ix_idx_reference_value",
            "idx_reference",
            ["res_type", "param", "target_id", "target_type", "res_id"],
        )
        op.create_index("ix_idx_reference_target", "idx_reference", ["target_type", "target_id"])
        _res_index("idx_reference")
    if table_missing("idx_quantity"):
        op.create_table(
            "idx_quantity",
            *_key_columns(),
            sa.Column("low", sa.Float, nullable=False),
            sa.Column("high", sa.Float, nullable=False),
            sa.Column("system", _TEXT),
            sa.Column("code", _TEXT),
            sa.Column("unit", _TEXT),
        )
        op.create_index("ix_idx_quantity_value", "idx_quantity", ["res_type", "param", "code", "low"])
        _res_index("idx_quantity")


def _create_number_uri_composite() -> None:
    if table_missing("idx_number"):
        op.create_table(
            "idx_number",
            *_key_columns(),
            sa.Column("low", sa.Float, nullable=False),
            sa.Column("high", sa.Float, nullable=False),
        )
        op.create_index("ix_idx_number_value", "idx_number", ["res_type", "param", "low"])
        _res_index("idx_number")
    if table_missing("idx_uri"):
        op.create_table("idx_uri", *_key_columns(), sa.Column("uri", _TEXT, nullable=False))
        op.create_index("ix_idx_uri_value", "idx_uri", ["res_type", "param", "uri"])
        _res_index("idx_uri")
    if table_missing("idx_composite"):
        op.create_table(
            "idx_composite",
            *_key_columns(),
            sa.Column("system1", _TEXT),
            sa.Column("code1", _TEXT),
            sa.Column("system2", _TEXT),
            sa.Column("code2", _TEXT),
            sa.Column("low2", sa.Float),
            sa.Column("high2", sa.Float),
            sa.Column("text2", _TEXT),
        )
        op.create_index("ix_idx_composite_value", "idx_composite", ["res_type", "param", "code1", "code2"])
        _res_index("idx_composite")
