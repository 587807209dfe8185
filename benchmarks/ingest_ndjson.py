"""Bulk FHIR NDJSON ingest throughput, memory and where the time goes, against the machine's raw limits.

Measures, in one run on the same machine:
  1. raw parse limit: orjson parsing the same file, streamed;
  2. raw insert limit: one SQLite transaction of plain 1.2 KB rows (WAL, executemany);
     and the store's own rows: exactly the rows the one-process load wrote (bodies, versions,
     index rows, Provenance) re-inserted with plain executemany, a transaction per 1,000
     resources as the pipeline does, with the real schema and with no secondary index;
  3. the full pipeline (validation, canonicalisation, quality rules, provenance, index rows) into
     SQLite (and PostgreSQL with --pg URL), in one process and with the producer process
     (``rhip.ingest.producer``: both cores); CPU time counts the producer's too, and the producer
     run reports its balance (seconds each side waited for the other, the share it encoded);
  4. a cProfile (CPU time) of a smaller one-process run, summed per area.

Usage: .venv/bin/python benchmarks/ingest_ndjson.py [--resources 20000] [--pg postgresql+psycopg://...]
       .venv/bin/python benchmarks/ingest_ndjson.py --stream-gb 2   # 2 GB streamed, memory only
       .venv/bin/python benchmarks/ingest_ndjson.py --long 1000000  # through the store, RSS sampled
       .venv/bin/python benchmarks/ingest_ndjson.py --load-only 2500  # one load, for cachegrind
       .venv/bin/python benchmarks/ingest_ndjson.py --producer-load 20000  # each process's CPU

Instructions per resource (immune to the other jobs on a shared machine): run ``--load-only``
under ``valgrind --tool=cachegrind --cache-sim=no`` with ``PYTHONHASHSEED=0`` for 500 and for
2,500 (or 5,500) resources and divide the difference of the two ``I refs`` by 2,000 (5,000): the
imports, the schema and the warm-up cancel out. With ``--producer-load`` the writer (the
benchmark's own process) and the producer of the measured load (its last child) write separate
files (``--cachegrind-out-file=cg.%p``; a forked child's counts start from its parent's at the
fork, which the difference of the two loads cancels too).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

#: Source time of resource 0 when the file carries ``meta.lastUpdated`` (one second apart after it).
LAST_UPDATED_FROM = 1_772_326_800


def make_file(path: Path, n: int, start: int = 0, *, last_updated: bool = False) -> int:
    """Write n resources (Patients and vital-sign Observations, ~1 KB each); returns bytes.

    ``last_updated``: each resource carries ``meta.lastUpdated`` as a FHIR bulk export gives it,
    so the load orders them by that source time.
    """
    with path.open("wb") as fh:
        for i in range(start, start + n):
            res = _resource(i)
            if last_updated:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(LAST_UPDATED_FROM + i))
                res = {
                    "resourceType": res["resourceType"],
                    "id": res["id"],
                    "meta": {"lastUpdated": stamp},
                    **res,
                }
            fh.write(orjson.dumps(res) + b"\n")
    return path.stat().st_size


def _resource(i: int) -> dict[str, Any]:
    if i % 5 == 0:
        return {
            "resourceType": "Patient",
            "id": f"bp{i}",
            "gender": "female" if i % 2 else "male",
            "birthDate": "1970-01-01",
            "name": [{"family": "王", "given": ["芳"], "text": "王芳"}],
            "identifier": [{"system": "https://rhip.example.org/fhir/sid/facility/B1/mrn", "value": str(i)}],
            "address": [
                {
                    "text": "浙江省嘉兴市南湖区建设街道文昌路100号3幢201室",
                    "district": "330402",
                    "city": "嘉兴市",
                    "state": "浙江省",
                    "postalCode": "314000",
                    "country": "CN",
                }
            ],
            "maritalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
            },
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "zh-CN"}]}}],
            "telecom": [{"system": "phone", "value": "13800000000"}],
        }
    return {
        "resourceType": "Observation",
        "id": f"bo{i}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
            "text": "心率" + "y" * 200,
        },
        "subject": {"reference": f"Patient/bp{i - i % 5}"},
        "effectiveDateTime": "2026-11-01T08:00:00+08:00",
        "valueQuantity": {
            "value": 60 + i % 40,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
        "note": [{"text": "z" * 400}],
    }


def rss_mb() -> float:
    """Peak resident set size of this process in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_parse(path: Path) -> float:
    t = time.perf_counter()
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            orjson.loads(line)
            n += 1
    return n / (time.perf_counter() - t)


def raw_insert(path: Path, tmp: Path) -> float:
    db = sqlite3.connect(tmp / "raw.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE r (id TEXT PRIMARY KEY, body BLOB)")
    rows = [(str(i), line) for i, line in enumerate(path.read_bytes().splitlines())]
    t = time.perf_counter()
    with db:
        db.executemany("INSERT INTO r VALUES (?, ?)", rows)
    rate = len(rows) / (time.perf_counter() - t)
    db.close()
    return rate


#: Tables holding what the store writes per resource: bodies, versions (Provenance included), index.
OWN_TABLES = ("resource", "resource_version")
#: Layouts of the store's own rows: the real schema, no secondary index, one B-tree per index row.
OWN_LAYOUTS = ("schema", "bare", "clustered")


def own_rows_limit(
    loaded: Path, tmp: Path, n: int, *, layout: str, per_txn: int = 1000, wal_pages: int = 0
) -> tuple[float, float]:
    """Resources/s (wall, per CPU-s) re-inserting exactly the rows of ``loaded`` (a finished load).

    Same pragmas as the store's engine (WAL, synchronous NORMAL, 16 MB page cache; ``wal_pages``:
    the WAL autocheckpoint, 0 for SQLite's 1,000), one transaction per ``per_txn`` resources with
    one executemany per table: what SQLite itself needs for our rows, without Python. ``layout``:
    ``schema`` the store's tables and every index; ``bare`` the same tables with no secondary
    index; ``clustered`` the design study of :func:`clustered_tables`.
    """
    ddl, rows = _own_rows(loaded, secondary=layout == "schema")
    if layout == "clustered":
        ddl, rows = clustered_tables(loaded, rows)
    target = tmp / f"own-{layout}.sqlite"
    for stale in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(target, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-16384"):
        db.execute(f"PRAGMA {pragma}")
    if wal_pages:
        db.execute(f"PRAGMA wal_autocheckpoint={wal_pages:d}")
    for statement in ddl:
        db.execute(statement)
    parts = max(1, -(-n // per_txn))
    sql = {t: f"INSERT INTO {t} VALUES ({', '.join('?' for _ in r[0])})" for t, r in rows.items() if r}
    t0, cpu0 = time.perf_counter(), time.process_time()
    for k in range(parts):
        db.execute("BEGIN IMMEDIATE")
        for table, insert in sql.items():
            part = rows[table]
            db.executemany(insert, part[k * len(part) // parts : (k + 1) * len(part) // parts])
        db.execute("COMMIT")
    rates = n / (time.perf_counter() - t0), n / (time.process_time() - cpu0)
    db.close()
    return rates


def _own_rows(loaded: Path, *, secondary: bool) -> tuple[list[str], dict[str, list[Any]]]:
    """DDL (tables, and with ``secondary`` their indexes) and rows, in insertion order, of a load."""
    src = sqlite3.connect(loaded)
    names = [
        *OWN_TABLES,
        *(
            r[0]
            for r in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'idx_*' ORDER BY name"
            )
        ),
    ]
    ddl = [
        src.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (t,)).fetchone()[0]
        for t in names
    ]
    if secondary:
        ddl += [
            r[0]
            for r in src.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
                f"({', '.join('?' for _ in names)})",
                names,
            )
        ]
    rows = {t: src.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in names}
    src.close()
    return ddl, rows


def clustered_tables(loaded: Path, rows: dict[str, list[Any]]) -> tuple[list[str], dict[str, list[Any]]]:
    """The design study: each index table ``WITHOUT ROWID``, one B-tree entry per index row.

    The primary key is the columns of the table's value index (``ix_<table>_value``), then
    ``res_id`` and ``n``, the row's ordinal among its resource's rows of that table; key columns
    that may be NULL hold '' instead (such a table needs NOT NULL keys). No per-resource index:
    ``idx_keys`` holds one packed row per resource listing its rows' keys (JSON), which is what a
    delete or update of the resource would read to find them. The reference table's second index
    (by target) is dropped too. Bodies and versions keep the real schema with its indexes.
    """
    src = sqlite3.connect(loaded)
    ddl = [
        r[0]
        for r in src.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN (?, ?) ORDER BY type DESC",
            OWN_TABLES,
        )
    ]
    out = {t: rows[t] for t in OWN_TABLES}
    keys: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for table in (t for t in rows if t not in OWN_TABLES):
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        value = [r[2] for r in src.execute(f"PRAGMA index_info(ix_{table}_value)")]
        pk = [*value, *(["res_id"] if "res_id" not in value else []), "n"]
        ddl.append(
            f"CREATE TABLE {table} ({', '.join(cols)}, n INTEGER NOT NULL, "
            f"PRIMARY KEY ({', '.join(pk)})) WITHOUT ROWID"
        )
        out[table] = _clustered_rows(table, cols, pk, rows[table], keys)
    src.close()
    ddl.append(
        "CREATE TABLE idx_keys (res_type TEXT NOT NULL, res_id TEXT NOT NULL, keys BLOB NOT NULL, "
        "PRIMARY KEY (res_type, res_id)) WITHOUT ROWID"
    )
    out["idx_keys"] = [(t, i, orjson.dumps(k)) for (t, i), k in keys.items()]
    return ddl, out


def _clustered_rows(
    table: str,
    cols: list[str],
    pk: list[str],
    rows: list[Any],
    keys: dict[tuple[str, str], dict[str, list[Any]]],
) -> list[tuple[Any, ...]]:
    """``rows`` with NULL key columns as '' and their ordinal ``n``; records each row's key in ``keys``."""
    where = [cols.index(c) for c in pk if c != "n"]
    own = [i for i in where if cols[i] not in ("res_type", "res_id")]
    type_at, id_at = cols.index("res_type"), cols.index("res_id")
    out = []
    for row in rows:
        values = list(row)
        for i in where:
            if values[i] is None:
                values[i] = ""
        listed = keys.setdefault((values[type_at], values[id_at]), {}).setdefault(table, [])
        listed.append([values[i] for i in own] + [len(listed)])
        out.append((*values, len(listed) - 1))
    return out


def use_producer(producer: bool) -> None:
    """Producer process on (any file size) or off for the next loads.

    The settings are cached at the first import of the platform's modules: clear that cache, or
    the variable set here would not be seen.
    """
    from rhip.config import get_settings

    os.environ["RHIP_INGEST_PRODUCER_MIN_BYTES"] = "1" if producer else "0"
    get_settings.cache_clear()


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the producer process)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pipeline_run(path: Path, url: str, n: int, producer: bool) -> tuple[float, float, float, float, Any]:
    """(wall rate, rate per CPU-second of both processes, peak RSS before, after, producer stats)."""
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    use_producer(producer)
    store = Store(url)
    pipe = Pipeline(store, observers=[QualityCollector(store.engine)])
    before = rss_mb()
    t, cpu = time.perf_counter(), cpu_seconds()
    rep = ingest_file(pipe, path, "BENCH")
    elapsed, cpu_used = time.perf_counter() - t, cpu_seconds() - cpu
    store.close()
    if rep.stored != n:
        raise SystemExit(f"expected {n} stored, got {rep}")
    return n / elapsed, n / cpu_used, before, rss_mb(), getattr(pipe, "producer_stats", None)


def profile(path: Path, tmp: Path) -> list[tuple[str, float]]:
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    use_producer(False)
    store = Store(f"sqlite:///{tmp / 'prof.sqlite'}")
    pipe = Pipeline(store, observers=[QualityCollector(store.engine)])
    prof = cProfile.Profile(time.process_time)  # CPU time: other load on the machine does not count
    prof.enable()
    ingest_file(pipe, path, "BENCH")
    prof.disable()
    store.close()
    stats = pstats.Stats(prof)
    areas = {
        "parse (orjson)": 0.0,
        "ingest map+canonicalise": 0.0,
        "validation (rhip.fhir)": 0.0,
        "quality rules": 0.0,
        "store: index rows": 0.0,
        "store: stamp, encode, bookkeeping": 0.0,
        "store: SQL execute": 0.0,
        "waiting for a helper thread": 0.0,
        "other": 0.0,
    }
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "orjson" in func or func == "loads":
            areas["parse (orjson)"] += tt
        elif "rhip/fhir/validation" in file:
            areas["validation (rhip.fhir)"] += tt
        elif "rhip/quality" in file:
            areas["quality rules"] += tt
        elif "rhip/ingest" in file:
            areas["ingest map+canonicalise"] += tt
        elif (
            "rhip/store" in file and ("index" in Path(file).name or "search_values" in file)
        ) or "pypinyin" in file:
            areas["store: index rows"] += tt
        elif "execute" in func or "commit" in func or "sqlite3" in file or "sqlalchemy" in file:
            areas["store: SQL execute"] += tt
        elif "rhip/store" in file:
            areas["store: stamp, encode, bookkeeping"] += tt
        elif "acquire" in func:
            areas["waiting for a helper thread"] += tt
        else:
            areas["other"] += tt  # incl. str.join/unicodedata called by the store's value normaliser
    total = sum(areas.values()) or 1.0
    return [(k, 100 * v / total) for k, v in areas.items()]


def load_only(n: int, tmp: Path) -> None:
    """One one-process SQLite load of ``n`` resources (quality collector), after a 50-resource warm-up."""
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    use_producer(False)
    path, warm = tmp / "load.ndjson", tmp / "warm.ndjson"
    make_file(path, n)
    make_file(warm, 50, start=10_000_000)
    store = Store(f"sqlite:///{tmp / 'load.sqlite'}")
    pipe = Pipeline(store, observers=[QualityCollector(store.engine)])
    ingest_file(pipe, warm, "WARM")
    rep = ingest_file(pipe, path, "BENCH")
    store.close()
    if rep.stored != n:
        raise SystemExit(f"expected {n} stored, got {rep}")


def producer_load(n: int, tmp: Path) -> None:
    """One SQLite load of ``n`` resources with the producer process, after a 300-resource warm-up.

    Prints one JSON line: wall and per CPU-second rates, each process's CPU µs per resource (the
    writer: this process; the producer: its child), the seconds each side waited for the other
    and the mean share of the records whose index rows the producer computed.
    """
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    use_producer(True)
    path, warm = tmp / "load.ndjson", tmp / "warm.ndjson"
    make_file(path, n)
    make_file(warm, 300, start=10_000_000)
    store = Store(f"sqlite:///{tmp / 'load.sqlite'}")
    pipe = Pipeline(store, observers=[QualityCollector(store.engine)])
    ingest_file(pipe, warm, "WARM")
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    rep = ingest_file(pipe, path, "BENCH")
    elapsed = time.perf_counter() - started
    own2, kids2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    store.close()
    if rep.stored != n:
        raise SystemExit(f"expected {n} stored, got {rep}")
    writer = own2.ru_utime + own2.ru_stime - own.ru_utime - own.ru_stime
    producer = kids2.ru_utime + kids2.ru_stime - kids.ru_utime - kids.ru_stime
    stats = pipe.producer_stats
    line = {
        "wall": round(n / elapsed),
        "per_cpu_s": round(n / (writer + producer)),
        "writer_us": round(writer / n * 1e6, 1),
        "producer_us": round(producer / n * 1e6, 1),
        "producer_waited_s": round(stats.producer_waited, 2) if stats else None,
        "writer_waited_s": round(stats.writer_waited, 2) if stats else None,
        "rows_share": round(stats.encoded_share, 2) if stats else None,
        "load": round(os.getloadavg()[0], 2),
    }
    print(orjson.dumps(line).decode())


def stream_only(gb: float, tmp: Path) -> None:
    """Parse + map + canonicalise + validate a streamed file of ``gb`` GB; report peak RSS."""
    from rhip.ingest.canonical import Canonicaliser, ConceptTranslator
    from rhip.ingest.fhir_files import iter_ndjson
    from rhip.ingest.validate import ResourceValidator

    path = tmp / "big.ndjson"
    block = tmp / "block.ndjson"
    make_file(block, 10_000)
    chunk = block.read_bytes()
    with path.open("wb") as fh:
        written = 0
        while written < gb * 1024**3:
            fh.write(chunk)
            written += len(chunk)
    canon, validator = Canonicaliser(ConceptTranslator()), ResourceValidator()
    t = time.perf_counter()
    n = 0
    start_rss = rss_mb()
    for rec in iter_ndjson(path):
        res = orjson.loads(rec.raw)
        canon.apply(res)
        validator.errors(res)
        n += 1
    dt = time.perf_counter() - t
    print(
        f"streamed {written / 1024**3:.2f} GB, {n:,} resources in {dt:.0f} s ({n / dt:,.0f}/s); "
        f"peak RSS {start_rss:.0f} MB -> {rss_mb():.0f} MB"
    )
    path.unlink()


def _children_rss_mb() -> float:
    """Resident memory of this process's children now (the producer), in MB."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            total += next(
                (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0
            )
    return total / 1024


def _own_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")) / 1024


def long_run(n: int, url: str, tmp: Path) -> None:
    """Load ``n`` resources (file written in 100k blocks) as configured; RSS sampled every 10 s."""
    from rhip.ingest.pipeline import Pipeline
    from rhip.ingest.runner import ingest_file
    from rhip.quality.collector import QualityCollector
    from rhip.store import Store

    path = tmp / "long.ndjson"
    with path.open("wb") as fh:
        for start in range(0, n, 100_000):
            fh.writelines(orjson.dumps(_resource(i)) + b"\n" for i in range(start, min(n, start + 100_000)))
    store = Store(url)  # producer process only if RHIP_INGEST_PRODUCER_MIN_BYTES says so
    pipe = Pipeline(store, observers=[QualityCollector(store.engine)])
    samples: list[tuple[float, float, float]] = []
    done = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not done.wait(10):
            samples.append((time.perf_counter() - t0, _own_rss_mb(), _children_rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = cpu_seconds()
    rep = ingest_file(pipe, path, "LONG")
    elapsed, cpu_used = time.perf_counter() - t0, cpu_seconds() - cpu
    done.set()
    store.close()
    print(
        f"{n:,} resources ({path.stat().st_size / 1e9:.2f} GB) in {elapsed:.0f} s: "
        f"{n / elapsed:,.0f}/s wall, "
        f"{n / cpu_used:,.0f}/CPU-s; stored {rep.stored:,}, quarantined {rep.quarantined}"
    )
    print("RSS samples (s, writer MB, producer MB):")
    for row in _spread(samples, 12):
        print(f"  {row[0]:7.0f} {row[1]:8.0f} {row[2]:8.0f}")
    path.unlink()


def _spread(rows: list[Any], k: int) -> Iterator[Any]:
    step = max(1, len(rows) // k)
    yield from rows[::step]
    if rows and (len(rows) - 1) % step:
        yield rows[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=20_000)
    ap.add_argument("--pg", help="PostgreSQL URL (postgresql+psycopg://...) of an empty database")
    ap.add_argument("--profile-resources", type=int, default=5_000)
    ap.add_argument(
        "--wal-pages",
        type=int,
        default=0,
        help="WAL autocheckpoint of the store's own rows runs (0: SQLite's 1,000; the pipeline "
        "follows RHIP_INGEST_WAL_AUTOCHECKPOINT)",
    )
    ap.add_argument("--stream-gb", type=float, default=0.0, help="only the streamed-file memory test")
    ap.add_argument(
        "--last-updated", action="store_true", help="every resource carries meta.lastUpdated (ordered load)"
    )
    ap.add_argument(
        "--pipeline-only",
        action="store_true",
        help="only the raw limits and the pipeline runs (no store's-own-rows limits, no profile)",
    )
    ap.add_argument(
        "--long", type=int, default=0, help="only a long run of this many resources (SQLite, or --pg)"
    )
    ap.add_argument(
        "--load-only",
        type=int,
        default=0,
        help="only one one-process SQLite load of this many resources (for instruction counts)",
    )
    ap.add_argument(
        "--producer-load",
        type=int,
        default=0,
        help="only one SQLite load of this many resources with the producer process (each side's CPU)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.stream_gb:
            stream_only(args.stream_gb, tmp)
            return
        if args.long:
            long_run(args.long, args.pg or f"sqlite:///{tmp / 'long.sqlite'}", tmp)
            return
        if args.load_only:
            load_only(args.load_only, tmp)
            return
        if args.producer_load:
            producer_load(args.producer_load, tmp)
            return
        path = tmp / "bench.ndjson"
        size = make_file(path, args.resources, last_updated=args.last_updated)
        rows = [
            ("raw orjson parse (streamed)", raw_parse(path)),
            ("raw SQLite insert (1 txn, WAL)", raw_insert(path, tmp)),
        ]
        loads = [("SQLite", lambda tag: f"sqlite:///{tmp / (tag + '.sqlite')}")]
        if args.pg:
            base = args.pg.rsplit("/", 1)[0]
            loads.append(("PostgreSQL", lambda tag: _new_pg(args.pg, base, tag)))
        rss = (0.0, 0.0)
        balance: list[str] = []
        for backend, url_for in loads:
            for producer in (False, True):
                tag = "producer" if producer else "one process"
                rate, cpu_rate, rss0, rss1, stats = pipeline_run(
                    path, url_for(tag.replace(" ", "")), args.resources, producer
                )
                if stats is not None:
                    balance.append(
                        f"{backend}, {args.resources / rate:.1f} s: producer {stats.producer_cpu:.1f} CPU-s, "
                        f"waited {stats.producer_waited:.1f} s for the writer; "
                        f"the writer waited {stats.writer_waited:.1f} s for the producer; "
                        f"the producer computed the index rows of {stats.encoded_share:.0%} of the records"
                    )
                rows.append((f"pipeline -> {backend}, {tag} (wall)", rate))
                rows.append((f"pipeline -> {backend}, {tag} (per CPU-s)", cpu_rate))
                rss = (rss0, rss1) if backend == "SQLite" and not producer else rss
                if backend == "SQLite" and not producer and not args.pipeline_only:
                    loaded = Path(url_for("oneprocess").removeprefix("sqlite:///"))
                    for layout, label in zip(
                        OWN_LAYOUTS, ("schema", "no 2nd index", "1 B-tree/row"), strict=True
                    ):
                        wall, cpu = own_rows_limit(
                            loaded, tmp, args.resources, layout=layout, wal_pages=args.wal_pages
                        )
                        rows.append((f"store's own rows, {label} (wall)", wall))
                        rows.append((f"store's own rows, {label} (per CPU-s)", cpu))
        stamped = ", each with meta.lastUpdated" if args.last_updated else ""
        each = size / args.resources
        print(f"\n{args.resources:,} resources{stamped}, {size / 1e6:.1f} MB ({each:.0f} B each)")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
        print(f"{'measure':<48}{'resources/s':>12}{'x raw insert':>14}{'x raw parse':>13}")
        for name, r in rows:
            print(f"{name:<48}{r:>12,.0f}{r / rows[1][1]:>14.3f}{r / rows[0][1]:>13.3f}")
        print(f"\npeak RSS before/after the one-process SQLite run: {rss[0]:.0f} / {rss[1]:.0f} MB")
        for line in balance:
            print(line)
        if args.pipeline_only:
            return
        prof_path = tmp / "prof.ndjson"
        make_file(prof_path, args.profile_resources)
        print(
            f"\nwhere the CPU time goes ({args.profile_resources:,} resources, one process, "
            "cProfile self time):"
        )
        for area, pct in profile(prof_path, tmp):
            print(f"  {area:<34}{pct:>6.1f} %")


def _new_pg(url: str, base: str, tag: str) -> str:
    """A fresh database next to ``url`` for one load (dropped first if a previous run left it)."""
    from sqlalchemy import create_engine, text

    name = f"rhip_bench_{tag}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{base}/{name}"


if __name__ == "__main__":
    main()
