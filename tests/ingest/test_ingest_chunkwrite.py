"""The chunk transaction's look-ups: delivery keys and source event times, on both back ends."""

from __future__ import annotations

from sqlalchemy import insert, text

from rhip.ingest import chunkwrite
from rhip.ingest.chunkwrite import (
    LOOKUP_PART,
    delivered_keys,
    source_times,
    write_counts,
    write_deliveries,
    write_source_times,
)
from rhip.ingest.schema import ingest_batch, ingest_delivery, ingest_source_time
from rhip.store import Store

COUNT = LOOKUP_PART * 2 + 7  # more ids than one statement takes


def _fill(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(ingest_delivery),
            [{"key": f"k{i}", "batch_id": "b", "received_at": 1.0} for i in range(COUNT)],
        )
        conn.execute(
            insert(ingest_source_time),
            [
                {"res_type": t, "res_id": f"r{i}", "event_time": float(i)}
                for t in ("Patient", "Encounter")
                for i in range(COUNT)
            ],
        )


def test_lookups_return_exactly_what_is_stored(store: Store) -> None:
    _fill(store)
    asked = [f"k{i}" for i in range(0, COUNT * 2, 3)]  # every third, half of them absent
    assert delivered_keys(store.engine, asked) == {k for k in asked if int(k[1:]) < COUNT}
    ids = {"Patient": {f"r{i}" for i in range(0, COUNT + 50, 2)}, "Encounter": {"r1", "r999999"}}
    expected = {("Patient", f"r{i}"): float(i) for i in range(0, COUNT, 2)} | {("Encounter", "r1"): 1.0}
    assert source_times(store.engine, ids) == expected
    assert delivered_keys(store.engine, []) == set() and source_times(store.engine, {}) == {}


def test_sqlite_lookups_search_the_primary_key(sqlite_store: Store) -> None:
    """Neither read scans its table (a row-value IN over (res_type, res_id) did, every chunk)."""
    _fill(sqlite_store)
    with sqlite_store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for sql, args in (
            (chunkwrite._DELIVERED_SQLITE, ('["k1"]',)),
            (chunkwrite._SOURCE_TIMES_SQLITE, ("Patient", '["r1"]')),
        ):
            plan = " / ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert "SEARCH ingest_" in plan and "SCAN ingest_" not in plan, plan
        assert conn.execute(text("SELECT count(*) FROM ingest_source_time")).scalar_one() == 2 * COUNT


def test_a_delivery_key_is_kept_and_a_source_time_replaced(store: Store) -> None:
    with store.engine.begin() as conn:
        write_deliveries(conn, [("k1", "first", 1.0), ("k2", "first", 1.0)])
        write_source_times(conn, [("Patient", "p1", 10.0)])
    with store.engine.begin() as conn:
        write_deliveries(conn, [("k1", "second", 2.0), ("k3", "second", 2.0)])
        write_source_times(conn, [("Patient", "p1", 5.0), ("Encounter", "e1", 7.0)])
    with store.engine.connect() as conn:
        keys = sorted(
            map(tuple, conn.execute(text("SELECT key, batch_id, received_at FROM ingest_delivery")))
        )
        times = sorted(
            map(tuple, conn.execute(text("SELECT res_type, res_id, event_time FROM ingest_source_time")))
        )
    assert keys == [("k1", "first", 1.0), ("k2", "first", 1.0), ("k3", "second", 2.0)]
    assert times == [("Encounter", "e1", 7.0), ("Patient", "p1", 5.0)]  # the caller decides what is newer


def test_a_batchs_counts_are_set(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(ingest_batch).values(
                batch_id="b1", facility="F", connector="hl7v2", location="", started=1.0
            )
        )
        conn.execute(
            insert(ingest_batch).values(
                batch_id="b2", facility="F", connector="hl7v2", location="", started=1.0
            )
        )
    with store.engine.begin() as conn:
        write_counts(conn, (7, 3, 2, 1, 1, "b1"))
    counts = "batch_id, received, stored, quarantined, duplicates, stale"
    with store.engine.connect() as conn:
        rows = sorted(map(tuple, conn.execute(text(f"SELECT {counts} FROM ingest_batch"))))
    assert rows == [("b1", 7, 3, 2, 1, 1), ("b2", 0, 0, 0, 0, 0)]
