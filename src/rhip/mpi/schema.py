"""Tables of the master patient index, on the store's ``METADATA``.

``mpi_resident`` is the resident (one per person, the golden Patient of the same id in the store);
``mpi_record`` holds every source Patient's comparison features and the resident it belongs to (the
link table the lake reads); ``mpi_key`` indexes records under blocking keys for real-time lookup;
``mpi_card`` resolves any card to its source record; ``mpi_review`` is the possible-match queue;
``mpi_change`` keeps every link change with its before/after state so that each is reversible.
The tables and the ``mpi_lock`` row are created by the platform's migrations (revision ``0003``;
``0006`` made citizen IDs and phones pseudonyms or SM4 tokens, see :mod:`rhip.mpi.protect`);
a change here needs a new revision.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Engine, Float, Index, Integer, String, Table, Text

from rhip.store.schema import METADATA

mpi_resident = Table(
    "mpi_resident",
    METADATA,
    Column("resident_id", String(64), primary_key=True),
    Column("vhc", String(32), nullable=False, unique=True),  # virtual resident health card number
    Column("status", String(16), nullable=False, default="active"),  # active | merged
    Column("merged_into", String(64), nullable=True),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

mpi_record = Table(
    "mpi_record",
    METADATA,
    Column("record_id", String(64), primary_key=True),  # source Patient id
    Column("resident_id", String(64), nullable=False),
    Column("link_source", String(16), nullable=False),  # deterministic | probabilistic | new | manual | batch
    Column("link_weight", Float, nullable=True),
    Column("name", Text),
    Column("family", Text),
    Column("name_py", Text),
    Column("family_py", Text),
    Column("dob", String(10)),
    Column("dob_swap", String(10)),
    Column("sex", String(8)),
    Column("phone", String(64)),  # HMAC-SM3 pseudonym (rhip.mpi.protect)
    Column("district", Text),
    Column("address", Text),
    Column("name_a", Text),
    Column("address_a", Text),
    Column("cid", String(64)),  # HMAC-SM3 pseudonym of the trusted citizen ID
    Column("cid_raw", Text),  # SM4 token of the raw citizen ID (compared approximately)
    Column("cid_problems", Text),
    Column("deceased", Boolean, nullable=False, default=False),
    Column("updated", Float, nullable=False),
    Column("phone_sm4", Text),  # SM4 token of the phone, for the golden Patient
    Column("key_version", Integer, nullable=True),  # HMAC key version of the pseudonyms; NULL: rebuild
    Index("ix_mpi_record_resident", "resident_id"),
)

mpi_key = Table(
    "mpi_key",
    METADATA,
    Column("bkey", String(255), nullable=False),
    Column("record_id", String(64), nullable=False),
    Index("ix_mpi_key_bkey", "bkey"),
    Index("ix_mpi_key_record", "record_id"),
)

mpi_card = Table(
    "mpi_card",
    METADATA,
    Column("system", String(255), nullable=False),
    Column("value", String(128), nullable=False),
    Column("record_id", String(64), nullable=False),
    Index("ix_mpi_card_value", "value", "system"),
    Index("ix_mpi_card_record", "record_id"),
)

mpi_review = Table(
    "mpi_review",
    METADATA,
    Column("review_id", Integer, primary_key=True, autoincrement=True),
    Column("record_id", String(64), nullable=False),
    Column("candidate_resident_id", String(64), nullable=False),
    Column("weight", Float, nullable=False),
    Column("probability", Float, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: comparison -> [level, weight]
    Column("status", String(16), nullable=False, default="open"),  # open | accepted | rejected | closed
    Column("created", Float, nullable=False),
    Column("resolved", Float, nullable=True),
    Column("resolved_by", String(128), nullable=True),
    Index("ix_mpi_review_status", "status"),
    Index("ix_mpi_review_record", "record_id"),
)

mpi_change = Table(
    "mpi_change",
    METADATA,
    Column("change_id", Integer, primary_key=True, autoincrement=True),
    Column("action", String(32), nullable=False),  # link | unlink | merge | unmerge | accept | reject
    Column("actor", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Column("details", Text, nullable=False),  # JSON: moved records, residents before/after
    Column("reverted_by", Integer, nullable=True),
)

#: Serialises MPI writers on SQLite (the first statement of a link transaction is a write).
mpi_lock = Table(
    "mpi_lock",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("n", Integer, nullable=False, default=0),
)

MPI_TABLES: list[Table] = [mpi_resident, mpi_record, mpi_key, mpi_card, mpi_review, mpi_change, mpi_lock]


def ensure_schema(engine: Engine) -> None:
    """Make sure the database is at the newest migration (cheap after the first call per engine)."""
    from rhip.store.migrations import ensure_head

    ensure_head(engine)
