"""Security tables: accounts, the SM3-chained audit log, its patient index and the chain head.

Until this revision :func:`rhip.security.ensure_schema` created these tables and the genesis head
row on first use; tables that already exist are left alone and the head row is added only when
absent (an existing chain keeps its head).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import insert_row_once, table_missing

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TABLES = ("rhip_user", "audit_log", "audit_patient", "audit_head")
#: Hash before the first audit entry (``rhip.security.schema.GENESIS``).
_GENESIS = "0" * 64


def upgrade() -> None:
    """Create the account and audit tables and seed the chain head at the genesis hash."""
    _create_user()
    _create_audit()
    head = sa.table(
        "audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.Integer), sa.column("hash", sa.String)
    )
    insert_row_once(head, "id", {"id": 1, "seq": 0, "hash": _GENESIS})


def downgrade() -> None:
    """Drop the account and audit tables (the audit trail goes with them)."""
    for table in reversed(_TABLES):
        op.drop_table(table)


def _create_user() -> None:
    if table_missing("rhip_user"):
        op.create_table(
            "rhip_user",
            sa.Column("username", sa.String(128), primary_key=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("role", sa.String(32), nullable=False),
            sa.Column("secret_hash", sa.String(256), nullable=False),
            sa.Column("patient_id", sa.String(64)),
            sa.Column("practitioner_id", sa.String(64)),
            sa.Column("organization_id", sa.String(64)),
            sa.Column("area", sa.String(64)),
            sa.Column("public_key", sa.String(160)),
            sa.Column("active", sa.Boolean, nullable=False),
        )


def _create_audit() -> None:
    if table_missing("audit_log"):
        op.create_table(
            "audit_log",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("recorded", sa.Float, nullable=False),
            sa.Column("entry", sa.Text, nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
        )
    if table_missing("audit_patient"):
        op.create_table(
            "audit_patient",
            sa.Column("patient_id", sa.String(64), primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True),
        )
    if table_missing("audit_head"):
        op.create_table(
            "audit_head",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
        )
