"""Benchmark of ``Store.bulk_write`` against the raw insert limit of the same machine and database.

For each back end the script loads N synthetic resources (Patient, Encounter, Observation) with
``bulk_write`` into a fresh database, then re-writes them unchanged (the idempotent re-ingest path)
and changed (the update path). Baselines, in the same run: the raw limit, one plain
``executemany`` per batch of the same encoded bodies into a bare three-column table through the
driver; and the index-row limit, only the search-index rows of the same resources written into
the store's index tables.

    .venv/bin/python benchmarks/store_bulk.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

BARE_SQL = "CREATE TABLE bare (res_type TEXT, res_id TEXT, body {blob}, PRIMARY KEY (res_type, res_id))"
PG_ADMIN = os.environ.get("RHIP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def make_resources(n: int, tag: str = "a") -> list[dict[str, Any]]:
    """N resources: one Patient, then its Encounter and Observations, in a 1:1:3 mix."""
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        pid, eid = f"pat-{i}", f"enc-{i}"
        out.append(
            {
                "resourceType": "Patient",
                "id": pid,
                "identifier": [{"system": "urn:oid:2.16.156.10011.1.19", "value": f"H{i:09d}"}],
                "name": [{"family": "王", "given": ["小明"], "text": f"王小明{tag}"}],
                "gender": "male" if i % 2 else "female",
                "birthDate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
                "address": [{"city": "杭州市", "district": "西湖区"}],
            }
        )
        out.append(
            {
                "resourceType": "Encounter",
                "id": eid,
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{pid}"},
                "period": {"start": "2026-03-01T08:00:00+08:00", "end": "2026-03-01T09:00:00+08:00"},
            }
        )
        for k, (code, value) in enumerate((("8480-6", 120 + i % 40), ("8462-4", 80), ("2345-7", 5.4))):
            out.append(
                {
                    "resourceType": "Observation",
                    "id": f"obs-{i}-{k}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "encounter": {"reference": f"Encounter/{eid}"},
                    "effectiveDateTime": "2026-03-01T08:30:00+08:00",
                    "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org"},
                    "note": [{"text": tag}],
                }
            )
        i += 1
    return out[:n]


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh, empty database URL for ``backend``; removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        return
    import psycopg

    name = f"rhip_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_limit(url: str, resources: list[dict[str, Any]], batch: int) -> float:
    """Seconds for plain executemany inserts of the encoded bodies into a bare table."""
    rows = [(r["resourceType"], r["id"], orjson.dumps(r)) for r in resources]
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE bare (res_type TEXT, res_id TEXT, body BLOB, PRIMARY KEY (res_type, res_id))"
        )
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO bare VALUES (?, ?, ?)", rows[i : i + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return elapsed
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as pg:
        pg.execute(
            "CREATE TABLE bare (res_type TEXT, res_id TEXT, body BYTEA, PRIMARY KEY (res_type, res_id))"
        )
        pg.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            with pg.cursor() as cur:
                cur.executemany("INSERT INTO bare VALUES (%s, %s, %s)", rows[i : i + batch])
            pg.commit()
        return time.perf_counter() - start


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once; return (seconds, result)."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def index_insert_limit(url: str, resources: list[dict[str, Any]], batch: int) -> float:
    """Seconds to insert just the index rows of ``resources`` into the store's index tables."""
    from rhip.store import Store, write_transaction
    from rhip.store.indexing import insert_index, merge_rows, rows_for

    store = Store(url)
    try:
        batches = []
        for i in range(0, len(resources), batch):
            rows: dict[str, list[dict[str, Any]]] = {}
            for resource in resources[i : i + batch]:
                merge_rows(rows, rows_for(resource))
            batches.append(rows)
        start = time.perf_counter()
        for rows in batches:
            with write_transaction(store.engine) as conn:
                insert_index(conn, rows)
        return time.perf_counter() - start
    finally:
        store.close()


def run_backend(backend: str, n: int, batch: int) -> dict[str, float]:
    """Resources per second of each case on one back end (one fresh database per measurement)."""
    from rhip.store import Store

    resources = make_resources(n)
    changed = make_resources(n, tag="b")
    rates: dict[str, float] = {}
    with database(backend) as url:
        rates["raw executemany (bare table)"] = n / raw_limit(url, resources, batch)
    with database(backend) as url:
        rates["raw index-row inserts alone"] = n / index_insert_limit(url, resources, batch)
    with database(backend) as url:
        store = Store(url)
        try:
            for case, data in (
                ("bulk_write create", resources),
                ("bulk_write unchanged", resources),
                ("bulk_write update", changed),
            ):
                cpu = time.process_time()
                seconds, result = timed(lambda data=data: store.bulk_write(data, batch_size=batch))
                cpu = time.process_time() - cpu
                if result.total != n:
                    raise SystemExit(f"{backend} {case}: wrote {result.total} of {n}")
                rates[case] = n / seconds
                rates[f"{case} (per CPU-s)"] = n / cpu  # this process only, both its threads
        finally:
            store.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="resources per case (default 20000)")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list: sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=1, help="runs per back end; the best rate is kept")
    args = parser.parse_args(argv)
    from rhip.store.index_schema import index_rows

    sample = make_resources(min(args.n, 5000))
    for r in sample[:50]:  # warm up: one-time costs (pinyin dictionary, Unicode tables) are not per row
        index_rows(r)
    seconds, _ = timed(lambda: [index_rows(r) for r in sample])
    rows_per = sum(sum(len(v) for v in index_rows(r).values()) for r in sample) / len(sample)
    print(
        f"index_rows alone: {len(sample) / seconds:,.0f} resources/s ({rows_per:.1f} index rows per resource)"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'backend':<11} {'case':<36} {'resources/s':>12} {'x raw':>7}")
    for backend in (b.strip() for b in args.backends.split(",")):
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            for case, rate in run_backend(backend, args.n, args.batch_size).items():
                best[case] = max(rate, best.get(case, 0.0))
        raw = best["raw executemany (bare table)"]
        for case, rate in best.items():
            print(f"{backend:<11} {case:<36} {rate:>12,.0f} {rate / raw:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
