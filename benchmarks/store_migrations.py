"""Benchmark of the schema migrations: a fresh database to head, and the cost of a database at head.

For each back end the script migrates fresh databases to head (all revisions, every table of the
platform) and, as the baseline in the same run, builds the same tables with ``create_all`` of every
module's metadata (what the code did before the tables were migrated). It then times
``Store``'s upgrade check on a database at head and the modules' ``ensure_schema`` after it.

    .venv/bin/python benchmarks/store_migrations.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_ADMIN = os.environ.get("RHIP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_url(backend: str) -> Iterator[str]:
    """An empty database of ``backend``: a SQLite file in a temp dir or a new PostgreSQL database."""
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


def build_seconds(backend: str, how: str) -> float:
    """Seconds to build every table on a fresh database, by migrations or by ``create_all``."""
    from rhip.store.engine import make_engine
    from rhip.store.migrations import platform_metadata, upgrade

    with fresh_url(backend) as url:
        engine = make_engine(url)
        try:
            start = time.perf_counter()
            if how == "migrations":
                upgrade(engine)
            else:
                for metadata in platform_metadata():
                    metadata.create_all(engine)
            return time.perf_counter() - start
        finally:
            engine.dispose()


def at_head_seconds(backend: str, calls: int) -> tuple[float, float]:
    """Per call: the upgrade check on a database at head, and ``ensure_schema`` after it."""
    from rhip.security.schema import ensure_schema
    from rhip.store.engine import make_engine
    from rhip.store.migrations import upgrade

    with fresh_url(backend) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            start = time.perf_counter()
            for _ in range(calls):
                upgrade(engine)
            check = (time.perf_counter() - start) / calls
            start = time.perf_counter()
            for _ in range(calls):
                ensure_schema(engine)
            return check, (time.perf_counter() - start) / calls
        finally:
            engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list: sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=5, help="fresh databases per case; the median is kept")
    args = parser.parse_args(argv)
    from rhip.store.migrations import platform_metadata

    platform_metadata()  # imports every module schema once, outside the timings
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'backend':<11} {'case':<34} {'ms':>9} {'x create_all':>13}")
    for backend in (b.strip() for b in args.backends.split(",")):
        times: dict[str, list[float]] = {"create_all": [], "migrations": []}
        for _ in range(args.repeat):
            for how, runs in times.items():
                runs.append(build_seconds(backend, how))
        base = statistics.median(times["create_all"])
        check, ensure = at_head_seconds(backend, 200)
        rows = [
            ("create_all, every table (old path)", base),
            ("migrations to head, fresh database", statistics.median(times["migrations"])),
            ("upgrade() on a database at head", check),
            ("ensure_schema() after the first", ensure),
        ]
        for case, seconds in rows:
            print(f"{backend:<11} {case:<34} {seconds * 1000:>9.3f} {seconds / base:>13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
