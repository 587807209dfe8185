"""The progress of an interrupted ``rhip db reindex``, so that the next run resumes there.

One row at most: the run's parameters, the fingerprint of the index definitions it started with
and the last (type, id) whose page committed, written in the same transaction as that page.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import table_missing

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``reindex_progress``."""
    if not table_missing("reindex_progress"):
        return
    op.create_table(
        "reindex_progress",
        sa.Column("run", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("definitions", sa.String(64), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=True),
        sa.Column("after_id", sa.String(64), nullable=False),
        sa.Column("type_done", sa.Boolean, nullable=False),
        sa.Column("walked", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    """Drop ``reindex_progress`` (an interrupted run then starts over)."""
    op.drop_table("reindex_progress")
