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
import time

from store_bulk import database  # the same scratch database (run from benchmarks/ as a script)


def build_seconds(backend: str, how: str) -> float:
    """Seconds to build every table on a fresh database, by migrations or by ``create_all``."""
    from rhip.store.engine import make_engine
    from rhip.store.migrations import platform_metadata, upgrade

    with database(backend) as url:
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

    with database(backend) as url:
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
