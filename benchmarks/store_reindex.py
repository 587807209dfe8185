"""Benchmark of ``rhip db reindex`` against a bulk load of the same resources, in the same run.

For each back end the script loads N synthetic resources (the 1:1:3 Patient/Encounter/Observation
mix of ``store_bulk.py``) with ``bulk_write`` into a fresh database (timed: the baseline), then
rebuilds their index with :func:`rhip.store.reindex.reindex` (timed), alternating the two
``--rounds`` times on fresh databases, and prints resources per second of both, their ratio and
the reindex's milliseconds per page. Every page also moves the run's saved cursor (one UPDATE in
the page's transaction); to see what that costs, run the same script against an older release's
code, alternating with this one, by putting that release's ``src`` first on ``PYTHONPATH`` (the
script only calls ``reindex(engine, batch_size=)``, which both have):

    .venv/bin/python benchmarks/store_reindex.py --n 20000 --rounds 3 [--pg] [--batch-size 100]
    git archive <base> src | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src .venv/bin/python benchmarks/store_reindex.py --n 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime

from store_bulk import database, make_resources  # the same data and scratch database


def one_round(backend: str, n: int, batch: int) -> tuple[float, float]:
    """(bulk-load seconds, reindex seconds) of ``n`` resources on a fresh database."""
    from rhip.store import Store, fieldcrypt
    from rhip.store.reindex import reindex

    resources = make_resources(n)
    with database(backend) as url:
        store = Store(url, fields=fieldcrypt.PLAIN)
        try:
            start = time.perf_counter()
            store.bulk_write(resources)
            load = time.perf_counter() - start
            start = time.perf_counter()
            result = reindex(store.engine, batch_size=batch)
            rebuild = time.perf_counter() - start
            if result.rows_before != result.rows_after:
                raise SystemExit(
                    f"reindex changed the row count: {result.rows_before} -> {result.rows_after}"
                )
        finally:
            store.close()
    return load, rebuild


def _source() -> str:
    """Which code ran: the ``src`` folder ``rhip`` was imported from."""
    import rhip

    return os.path.dirname(os.path.dirname(os.path.abspath(rhip.__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="resources per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="reindex page size")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL too (RHIP_TEST_PG_ADMIN)")
    args = parser.parse_args(argv)
    for backend in ("sqlite", "postgresql") if args.pg else ("sqlite",):
        started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        rounds = [one_round(backend, args.n, args.batch_size) for _ in range(args.rounds)]
        load = statistics.median(r[0] for r in rounds)
        rebuild = statistics.median(r[1] for r in rounds)
        ratios = ", ".join(f"{r[0] / r[1]:.2f}" for r in rounds)
        pages = -(-args.n // args.batch_size)
        print(
            f"{backend} ({_source()}): n={args.n} batch {args.batch_size} started {started} UTC, "
            f"load average {os.getloadavg()[0]:.1f}; bulk load {args.n / load:,.0f}/s, "
            f"reindex {args.n / rebuild:,.0f}/s, {1000 * rebuild / pages:.1f} ms/page "
            f"(medians); reindex/load speed per round: {ratios}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
