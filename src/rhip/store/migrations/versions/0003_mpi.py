"""Master patient index tables, and the one lock row that serialises MPI writers.

Until this revision :func:`rhip.mpi.ensure_schema` created these tables (and the lock row) on first
use, and ``0001`` created the tables too when the module had been imported; tables that already
exist are left alone and the lock row is added only when absent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import insert_row_once, table_missing

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = ("mpi_resident", "mpi_record", "mpi_key", "mpi_card", "mpi_review", "mpi_change", "mpi_lock")


def upgrade() -> None:
    """Create the seven MPI tables and seed the lock row."""
    _create_resident()
    _create_record()
    _create_key_and_card()
    _create_review_and_change()
    if table_missing("mpi_lock"):
        op.create_table(
            "mpi_lock",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("n", sa.Integer, nullable=False),
        )
    lock = sa.table("mpi_lock", sa.column("id", sa.Integer), sa.column("n", sa.Integer))
    insert_row_once(lock, "id", {"id": 1, "n": 0})


def downgrade() -> None:
    """Drop the MPI tables."""
    for table in reversed(_TABLES):
        op.drop_table(table)


def _create_resident() -> None:
    if table_missing("mpi_resident"):
        op.create_table(
            "mpi_resident",
            sa.Column("resident_id", sa.String(64), primary_key=True),
            sa.Column("vhc", sa.String(32), nullable=False, unique=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("merged_into", sa.String(64), nullable=True),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("updated", sa.Float, nullable=False),
        )


def _create_record() -> None:
    if not table_missing("mpi_record"):
        return
    op.create_table(
        "mpi_record",
        sa.Column("record_id", sa.String(64), primary_key=True),
        sa.Column("resident_id", sa.String(64), nullable=False),
        sa.Column("link_source", sa.String(16), nullable=False),
        sa.Column("link_weight", sa.Float, nullable=True),
        sa.Column("name", sa.Text),
        sa.Column("family", sa.Text),
        sa.Column("name_py", sa.Text),
        sa.Column("family_py", sa.Text),
        sa.Column("dob", sa.String(10)),
        sa.Column("dob_swap", sa.String(10)),
        sa.Column("sex", sa.String(8)),
        sa.Column("phone", sa.String(16)),
        sa.Column("district", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("name_a", sa.Text),
        sa.Column("address_a", sa.Text),
        sa.Column("cid", sa.String(18)),
        sa.Column("cid_raw", sa.String(32)),
        sa.Column("cid_problems", sa.Text),
        sa.Column("deceased", sa.Boolean, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("ix_mpi_record_resident", "mpi_record", ["resident_id"])


def _create_key_and_card() -> None:
    if table_missing("mpi_key"):
        op.create_table(
            "mpi_key",
            sa.Column("bkey", sa.String(255), nullable=False),
            sa.Column("record_id", sa.String(64), nullable=False),
        )
        op.create_index("ix_mpi_key_bkey", "mpi_key", ["bkey"])
        op.create_index("ix_mpi_key_record", "mpi_key", ["record_id"])
    if table_missing("mpi_card"):
        op.create_table(
            "mpi_card",
            sa.Column("system", sa.String(255), nullable=False),
            sa.Column("value", sa.String(128), nullable=False),
            sa.Column("record_id", sa.String(64), nullable=False),
        )
        op.create_index("ix_mpi_card_value", "mpi_card", ["value", "system"])
        op.create_index("ix_mpi_card_record", "mpi_card", ["record_id"])


def _create_review_and_change() -> None:
    if table_missing("mpi_review"):
        op.create_table(
            "mpi_review",
            sa.Column("review_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("record_id", sa.String(64), nullable=False),
            sa.Column("candidate_resident_id", sa.String(64), nullable=False),
            sa.Column("weight", sa.Float, nullable=False),
            sa.Column("probability", sa.Float, nullable=False),
            sa.Column("evidence", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("resolved", sa.Float, nullable=True),
            sa.Column("resolved_by", sa.String(128), nullable=True),
        )
        op.create_index("ix_mpi_review_status", "mpi_review", ["status"])
        op.create_index("ix_mpi_review_record", "mpi_review", ["record_id"])
    if table_missing("mpi_change"):
        op.create_table(
            "mpi_change",
            sa.Column("change_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("action", sa.String(32), nullable=False),
            sa.Column("actor", sa.String(128), nullable=False),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("details", sa.Text, nullable=False),
            sa.Column("reverted_by", sa.Integer, nullable=True),
        )
