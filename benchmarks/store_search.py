"""Search latency for typical clinician queries, on SQLite and PostgreSQL.

Synthesises Patients, Encounters and Observations, writes bodies and index rows straight into the
store tables (COPY on PostgreSQL), then times FHIR searches through ``execute_search`` and prints
p50/p95 per query. Also reports the index_rows extraction rate.

    .venv/bin/python benchmarks/store_search.py                       # quick: 10k patients, 100k obs
    .venv/bin/python benchmarks/store_search.py --patients 100000 --observations 1000000 \\
        --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

from rhip.store import Store
from rhip.store.index_schema import INDEX_TABLES, index_rows
from rhip.store.search import execute_search

CID = "urn:oid:2.16.156.10011.1.3"
CODES = [f"{1000 + i}-{i % 10}" for i in range(40)]
FAMILIES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou"]
BATCH = 20_000


def _patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{i}",
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000+00:00"},
        "identifier": [{"system": CID, "value": f"1101011980{i:08d}"}],
        "name": [{"family": FAMILIES[i % 10], "given": [f"G{i % 997}"]}],
        "gender": "male" if i % 2 else "female",
        "birthDate": f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}",
    }


def _encounter(i: int, patients: int) -> dict[str, Any]:
    day = 1 + i % 28
    return {
        "resourceType": "Encounter",
        "id": f"e{i}",
        "status": "finished",
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000+00:00"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/p{i % patients}"},
        "period": {
            "start": f"{2018 + i % 6}-{1 + i % 12:02d}-{day:02d}T08:00:00+08:00",
            "end": f"{2018 + i % 6}-{1 + i % 12:02d}-{day:02d}T09:00:00+08:00",
        },
    }


def _observation(i: int, patients: int, rng: random.Random) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "status": "final",
        "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000+00:00"},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": CODES[rng.randrange(len(CODES))]}]},
        "subject": {"reference": f"Patient/p{rng.randrange(patients)}"},
        "effectiveDateTime": f"{2018 + rng.randrange(6)}-{1 + rng.randrange(12):02d}-"
        f"{1 + rng.randrange(28):02d}T10:00:00+08:00",
        "valueQuantity": {
            "value": round(rng.uniform(1, 200), 1),
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }


def _resources(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    rng = random.Random(7)
    for i in range(args.patients):
        yield _patient(i)
    for i in range(args.patients * 2):
        yield _encounter(i, args.patients)
    for i in range(args.observations):
        yield _observation(i, args.patients, rng)


def _copy_rows(raw: Any, table: str, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


_RES_COLS = ["res_type", "res_id", "version_id", "last_updated", "deleted", "body"]


def _insert_sql(table: str, cols: list[str]) -> str:
    """INSERT text for a table and columns from the fixed schema (no values in the text)."""
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def load(url: str, args: argparse.Namespace) -> tuple[int, float]:
    """Write the synthetic data; returns (resources, index_rows seconds)."""
    store = Store(url)
    engine = store.engine
    pg = engine.dialect.name == "postgresql"
    cols = {t.name: [c.name for c in t.columns] for t in INDEX_TABLES}
    n, t_index = 0, 0.0
    log = time.perf_counter()
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal t_index
        t0 = time.process_time()
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        for body in batch:
            for name, found in index_rows(body).items():
                c = cols[name]
                by_table.setdefault(name, []).extend(tuple(r.get(k) for k in c) for r in found)
        t_index += time.process_time() - t0
        res_rows = [(b["resourceType"], b["id"], 1, 1704067200.0, False, orjson.dumps(b)) for b in batch]
        with engine.begin() as conn:
            if pg:
                raw = conn.connection.driver_connection
                _copy_rows(raw, "resource", _RES_COLS, res_rows)
                for name, rows in by_table.items():
                    _copy_rows(raw, name, cols[name], rows)
            else:
                conn.exec_driver_sql(_insert_sql("resource", _RES_COLS), res_rows)
                for name, rows in by_table.items():
                    conn.exec_driver_sql(_insert_sql(name, cols[name]), rows)
        batch.clear()

    for body in _resources(args):
        batch.append(body)
        n += 1
        if len(batch) >= BATCH:
            flush()
            if time.perf_counter() - log > 30:
                log = time.perf_counter()
                print(f"  {engine.dialect.name}: {n} resources written", flush=True)
    if batch:
        flush()
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    store.close()
    return n, t_index


def _queries(args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    p = args.patients
    return {
        "Observation?patient&code&date=ge": lambda: (
            "Observation",
            [
                ("patient", f"p{rng.randrange(p)}"),
                ("code", f"http://loinc.org|{rng.choice(CODES)}"),
                ("date", f"ge{2018 + rng.randrange(6)}-01-01"),
            ],
        ),
        "Patient?identifier": lambda: (
            "Patient",
            [("identifier", f"{CID}|1101011980{rng.randrange(p):08d}")],
        ),
        "Encounter?patient&_sort=-date": lambda: (
            "Encounter",
            [("patient", f"Patient/p{rng.randrange(p)}"), ("_sort", "-date")],
        ),
        "Patient?family&birthdate": lambda: (
            "Patient",
            [
                ("family", rng.choice(FAMILIES)[:3].lower()),
                ("birthdate", f"{1940 + rng.randrange(70)}"),
                ("_total", "none"),
            ],
        ),
        "Observation?patient&_include": lambda: (
            "Observation",
            [("patient", f"p{rng.randrange(p)}"), ("_include", "Observation:patient")],
        ),
    }


def _baseline(conn: Any, args: argparse.Namespace, rng: random.Random) -> tuple[str, float, float]:
    """The floor on this machine: read one Observation body by primary key, same connection."""
    stmt = text("SELECT body FROM resource WHERE res_type = :t AND res_id = :i")
    times = []
    for i in range(args.repeat + 5):
        t0 = time.perf_counter()
        conn.execute(stmt, {"t": "Observation", "i": f"o{rng.randrange(args.observations)}"}).all()
        conn.rollback()
        if i >= 5:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return "baseline: read by id", statistics.median(times), times[int(len(times) * 0.95) - 1]


def measure(url: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """p50/p95 milliseconds per query kind (first row: the primary-key read baseline)."""
    engine = create_engine(url)
    rng = random.Random(11)
    out = []
    with engine.connect() as conn:
        out.append(_baseline(conn, args, rng))
        for label, make in _queries(args, rng).items():
            times = []
            for i in range(args.repeat + 5):
                res_type, params = make()
                t0 = time.perf_counter()
                execute_search(conn, res_type, params, count=20, offset=0, base_url="http://x")
                conn.rollback()
                if i >= 5:  # warm-up
                    times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            out.append((label, statistics.median(times), times[int(len(times) * 0.95) - 1]))
    engine.dispose()
    return out


def main() -> None:
    """Parse arguments, build each back end, print the results table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--observations", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=200, help="searches per query kind")
    ap.add_argument("--pg", default=None, help="PostgreSQL admin URL (a temporary database is made)")
    ap.add_argument("--no-sqlite", action="store_true")
    args = ap.parse_args()
    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
            t0 = time.perf_counter()
            n, t_idx = load(url, args)
            results.append(("sqlite", n, time.perf_counter() - t0, t_idx, measure(url, args)))
    if args.pg:
        name = f"rhip_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.pg.rsplit("/", 1)[0] + "/" + name
        try:
            t0 = time.perf_counter()
            n, t_idx = load(url, args)
            results.append(("postgresql", n, time.perf_counter() - t0, t_idx, measure(url, args)))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    out = io.StringIO()
    out.write(
        f"patients={args.patients} observations={args.observations} "
        f"encounters={args.patients * 2} repeat={args.repeat}\n"
    )
    for backend, n, load_s, idx_s, rows in results:
        out.write(
            f"\n{backend}: loaded {n} resources in {load_s:.1f} s; "
            f"index_rows {n / idx_s:,.0f} resources/s per core (CPU time)\n"
        )
        out.write(f"{'query':36} {'p50 ms':>8} {'p95 ms':>8} {'p95/baseline':>13}\n")
        base95 = rows[0][2] or 1e-9
        for label, p50, p95 in rows:
            out.write(f"{label:36} {p50:8.2f} {p95:8.2f} {p95 / base95:13.1f}\n")
    print(out.getvalue())


if __name__ == "__main__":
    main()
