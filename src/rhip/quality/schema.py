"""The quality tally table: per facility, day and rule, how many checks ran and how many failed.

Scores are computed from these counts on read, so adding data only increments integers. The table is
created by the platform's migrations (revision ``0002``); a change here needs a new revision.
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
    """Make sure the database is at the newest migration (cheap after the first call per engine)."""
    from rhip.store.migrations import ensure_head

    ensure_head(engine)
