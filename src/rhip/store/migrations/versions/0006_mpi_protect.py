"""No plaintext citizen ID or phone in the MPI's tables (see :mod:`rhip.mpi.protect`).

``mpi_record.cid`` and ``phone`` now hold HMAC-SM3 pseudonyms (64 hex), ``cid_raw`` an SM4 token;
``phone_sm4`` keeps the phone SM4-encrypted for the golden Patient and ``key_version`` the HMAC
key version of a row's pseudonyms. A migration holds no keys, so the plaintext of existing rows is
cleared (with the citizen-ID and phone blocking keys and the citizen-ID cards) and their
``key_version`` left NULL: links and residents are kept, and ``rhip link --all`` rebuilds those
rows protected. Downgrading clears the protected values the same way. A database whose ``0001``
built the newer table shape already has the two columns; they are added only when missing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from rhip.store.migrations.guards import column_missing

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_CITIZEN_ID = "urn:oid:2.16.156.10011.1.3"  # rhip.fhir.systems.CITIZEN_ID, frozen here


def upgrade() -> None:
    """Widen the columns for pseudonyms and tokens, add phone_sm4 and key_version, clear plaintext."""
    _clear()
    with op.batch_alter_table("mpi_record") as batch:
        batch.alter_column("cid", type_=sa.String(64), existing_type=sa.String(18))
        batch.alter_column("cid_raw", type_=sa.Text, existing_type=sa.String(32))
        batch.alter_column("phone", type_=sa.String(64), existing_type=sa.String(16))
        if column_missing("mpi_record", "phone_sm4"):
            batch.add_column(sa.Column("phone_sm4", sa.Text))
        if column_missing("mpi_record", "key_version"):
            batch.add_column(sa.Column("key_version", sa.Integer, nullable=True))


def downgrade() -> None:
    """Back to plaintext-sized columns; the protected values are cleared (``rhip link --all`` refills)."""
    _clear()
    with op.batch_alter_table("mpi_record") as batch:
        batch.drop_column("key_version")
        batch.drop_column("phone_sm4")
        batch.alter_column("phone", type_=sa.String(16), existing_type=sa.String(64))
        batch.alter_column("cid_raw", type_=sa.String(32), existing_type=sa.Text)
        batch.alter_column("cid", type_=sa.String(18), existing_type=sa.String(64))


def _clear() -> None:
    op.execute("UPDATE mpi_record SET cid = NULL, cid_raw = NULL, phone = NULL")
    op.execute("DELETE FROM mpi_key WHERE bkey LIKE 'c:%' OR bkey LIKE 'p:%'")
    op.execute(sa.text("DELETE FROM mpi_card WHERE system = :s").bindparams(s=_CITIZEN_ID))
