"""Ingest and quality tables: batches, delivered keys, quarantine, source times, quality tallies.

Until this revision :func:`rhip.ingest.ensure_schema` and :func:`rhip.quality.schema.ensure_schema`
created these tables on first use, and ``0001`` created them too when the modules had been
imported; tables that already exist are left alone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import table_missing

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TABLES = ("ingest_batch", "ingest_delivery", "ingest_quarantine", "ingest_source_time", "quality_tally")


def upgrade() -> None:
    """Create the four ingest tables and the quality tally table."""
    _create_batch_and_delivery()
    _create_quarantine()
    _create_source_time_and_tally()


def downgrade() -> None:
    """Drop the ingest and quality tables."""
    for table in reversed(_TABLES):
        op.drop_table(table)


def _create_batch_and_delivery() -> None:
    if table_missing("ingest_batch"):
        op.create_table(
            "ingest_batch",
            sa.Column("batch_id", sa.String(40), primary_key=True),
            sa.Column("facility", sa.String(64), nullable=False),
            sa.Column("connector", sa.String(32), nullable=False),
            sa.Column("location", sa.String(512), nullable=False),
            sa.Column("started", sa.Float, nullable=False),
            sa.Column("finished", sa.Float, nullable=True),
            sa.Column("received", sa.Integer, nullable=False),
            sa.Column("stored", sa.Integer, nullable=False),
            sa.Column("quarantined", sa.Integer, nullable=False),
            sa.Column("duplicates", sa.Integer, nullable=False),
            sa.Column("stale", sa.Integer, nullable=False),
        )
    if table_missing("ingest_delivery"):
        op.create_table(
            "ingest_delivery",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("batch_id", sa.String(40), nullable=False),
            sa.Column("received_at", sa.Float, nullable=False),
        )


def _create_quarantine() -> None:
    if not table_missing("ingest_quarantine"):
        return
    op.create_table(
        "ingest_quarantine",
        sa.Column("q_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("facility", sa.String(64), nullable=False),
        sa.Column("connector", sa.String(32), nullable=False),
        sa.Column("location", sa.String(512), nullable=False),
        sa.Column("position", sa.String(512), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resolved_at", sa.Float, nullable=True),
    )
    op.create_index("ix_ingest_quarantine_status", "ingest_quarantine", ["status", "facility"])


def _create_source_time_and_tally() -> None:
    if table_missing("ingest_source_time"):
        op.create_table(
            "ingest_source_time",
            sa.Column("res_type", sa.String(64), primary_key=True),
            sa.Column("res_id", sa.String(64), primary_key=True),
            sa.Column("event_time", sa.Float, nullable=False),
        )
    if table_missing("quality_tally"):
        op.create_table(
            "quality_tally",
            sa.Column("facility", sa.String(64), primary_key=True),
            sa.Column("day", sa.String(10), primary_key=True),
            sa.Column("rule", sa.String(64), primary_key=True),
            sa.Column("checked", sa.Integer, nullable=False),
            sa.Column("failed", sa.Integer, nullable=False),
            sa.Column("delay_sum", sa.Float, nullable=False),
        )
