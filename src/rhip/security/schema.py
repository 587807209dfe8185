"""Tables of the security module: users and clients, and the SM3-chained audit log.

They live in the operational database next to the store's tables but on their own ``MetaData``.
The tables and the genesis row of ``audit_head`` are created by the platform's migrations
(revision ``0004``); a change here needs a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa

SECURITY_METADATA = sa.MetaData()

#: People and systems that may obtain tokens. ``secret_hash`` is scrypt; no secret is stored.
rhip_user = sa.Table(
    "rhip_user",
    SECURITY_METADATA,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # person | system
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("secret_hash", sa.String(256), nullable=False),
    sa.Column("patient_id", sa.String(64)),
    sa.Column("practitioner_id", sa.String(64)),
    sa.Column("organization_id", sa.String(64)),
    sa.Column("area", sa.String(64)),
    sa.Column("public_key", sa.String(160)),  # SM2 public key for document signatures
    sa.Column("active", sa.Boolean, nullable=False, default=True),
)

#: The append-only audit log; each row's ``hash`` = SM3(prev_hash || canonical entry).
audit_log = sa.Table(
    "audit_log",
    SECURITY_METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("recorded", sa.Float, nullable=False),
    sa.Column("entry", sa.Text, nullable=False),  # canonical JSON of the event
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

#: Which residents each audit entry concerns (for "who read my records").
audit_patient = sa.Table(
    "audit_patient",
    SECURITY_METADATA,
    sa.Column("patient_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
)

#: One row: the head of the chain, locked while appending so concurrent writers stay in order.
audit_head = sa.Table(
    "audit_head",
    SECURITY_METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

GENESIS = "0" * 64


def ensure_schema(engine: sa.Engine) -> None:
    """Make sure the database is at the newest migration (cheap after the first call per engine)."""
    from rhip.store.migrations import ensure_head

    ensure_head(engine)
