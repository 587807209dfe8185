"""Initial schema: resources, versions and the search index tables.

Creates every table registered on ``rhip.store.schema.METADATA`` at the time this package version
was written (the store tables and the index tables of ``rhip.store.index_schema``). Later schema
changes must be new migrations with explicit operations, never edits to this one.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

import rhip.store.index_schema  # noqa: F401  (registers the index tables)
from rhip.store.schema import METADATA

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create all tables and indexes of the store (existing ones are left alone)."""
    METADATA.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    """Drop all tables of the store."""
    METADATA.drop_all(op.get_bind(), checkfirst=True)
