"""The quality tally table: per facility, day and rule, how many checks ran and how many failed.

Scores are computed from these counts on read, so adding data only increments integers.
"""

from __future__ import annotations

from sqlalchemy import Column, Engine, Float, Integer, String, Table

from rhip.store.schema import METADATA

quality_tally = Table(
    "quality_tally",
    METADATA,
    Column("facility", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD in the platform time zone
    Column("rule", String(64), primary_key=True),
    Column("checked", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("delay_sum", Float, nullable=False, default=0.0),  # seconds, timeliness rule only
)


def ensure_schema(engine: Engine) -> None:
    """Create the quality table if missing (idempotent)."""
    METADATA.create_all(engine, tables=[quality_tally], checkfirst=True)
