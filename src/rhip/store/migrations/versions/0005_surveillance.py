"""Surveillance tables: alerts, the officers' actions on them and a region's case definitions.

Until this revision :func:`rhip.surveillance.alerts.ensure_schema` created these tables on first
use (the case-definition table only when its module had been imported first); tables that
already exist are left alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import table_missing

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLES = ("surveillance_alert", "surveillance_alert_action", "surveillance_case_definition")


def upgrade() -> None:
    """Create the alert, alert-action and case-definition tables."""
    _create_alert()
    if table_missing("surveillance_alert_action"):
        op.create_table(
            "surveillance_alert_action",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("alert_id", sa.String(64), nullable=False),
            sa.Column("action", sa.String(16), nullable=False),
            sa.Column("actor", sa.String(128), nullable=False),
            sa.Column("note", sa.Text),
            sa.Column("at", sa.Float, nullable=False),
        )
        op.create_index("ix_surveillance_alert_action_alert_id", "surveillance_alert_action", ["alert_id"])
    if table_missing("surveillance_case_definition"):
        op.create_table(
            "surveillance_case_definition",
            sa.Column("code", sa.String(128), primary_key=True),
            sa.Column("body", sa.LargeBinary, nullable=False),
        )


def downgrade() -> None:
    """Drop the surveillance tables (alerts and their history go with them)."""
    for table in reversed(_TABLES):
        op.drop_table(table)


def _create_alert() -> None:
    if not table_missing("surveillance_alert"):
        return
    op.create_table(
        "surveillance_alert",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("disease", sa.String(128), nullable=False),
        sa.Column("area_kind", sa.String(16), nullable=False),
        sa.Column("area", sa.String(128), nullable=False),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("first_period", sa.String(10), nullable=False),
        sa.Column("last_period", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("max_score", sa.Float),
        sa.Column("evidence", sa.LargeBinary, nullable=False),
        sa.Column("cases", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_surveillance_alert_signal",
        "surveillance_alert",
        ["disease", "area_kind", "area", "method", "unit"],
    )
