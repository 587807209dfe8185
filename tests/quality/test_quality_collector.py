"""The collector's counts in the database: each chunk's tallies are added to the day's rows."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from rhip.ingest.model import Mapped, Record, SourceInfo
from rhip.quality.collector import QualityCollector
from rhip.store import Store

DAY = 1_795_000_000.0  # an arrival time; the event an hour before it


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url)


def _tallies(store: Store) -> dict[str, tuple[int, int, float]]:
    """Per rule, summed over days (a quarantined record counts on its arrival day)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT rule, sum(checked), sum(failed), sum(delay_sum) FROM quality_tally "
                "WHERE facility = 'H1' GROUP BY rule"
            )
        )
        return {r: (int(c), int(f), float(d)) for r, c, f, d in rows}


def test_chunks_add_to_the_same_rows(store: Store) -> None:
    collector = QualityCollector(store.engine)
    source = SourceInfo("H1", "test", "here")
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-05-06"}
    for _chunk in range(2):
        collector.on_stored(Record(b"", "1"), Mapped([dict(patient)], event_time=DAY - 3600), source, DAY)
        collector.on_quarantined(Record(b"", "2"), [{"rule": "required"}], source)
        with store.engine.begin() as conn:
            collector.flush_into(conn)
    tallies = _tallies(store)
    assert tallies["conformance.record-accepted"][:2] == (4, 2)
    assert tallies["timeliness.arrival-24h"] == (2, 0, 7200.0)
    collector.flush_into(None)  # nothing pending: no statement
    store.close()
