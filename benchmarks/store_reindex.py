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


def cursor_cost(backend: str, pages: int = 500) -> tuple[float, float] | None:
    """(ms per write transaction of one index row, ms per one also moving the saved cursor).

    The two kinds alternate in blocks. A page's commit flushes the log whether or not the cursor
    moves, so both kinds write a row; the difference is the cursor's own cost per page. None with
    code that has no saved cursor.
    """
    try:
        from rhip.store import reindex_progress
    except ImportError:
        return None
    from sqlalchemy import text

    from rhip.store import Store, fieldcrypt
    from rhip.store.engine import write_transaction

    row = text("INSERT INTO idx_token (res_type, res_id, param, code) VALUES ('Basic', :id, 'code', 'x')")
    with database(backend) as url:
        store = Store(url, fields=fieldcrypt.PLAIN)
        try:
            with write_transaction(store.engine) as conn:
                reindex_progress.begin(conn, {"types": None, "batch_size": 1000}, "bench")
            times: dict[bool, float] = {False: 0.0, True: 0.0}
            for block in range(10):
                for moved in (block % 2 == 0, block % 2 == 1):
                    start = time.perf_counter()
                    for i in range(pages // 10):
                        with write_transaction(store.engine) as conn:
                            conn.execute(row, {"id": f"{block}-{i}"})  # a page always writes: WAL flush
                            if moved:
                                reindex_progress.advance(conn, "Observation", f"o{i:06d}", 1000)
                    times[moved] += time.perf_counter() - start
        finally:
            store.close()
    return 1000 * times[False] / pages, 1000 * times[True] / pages


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
        cost = cursor_cost(backend)
        if cost is not None:
            print(
                f"{backend}: write transaction {cost[0]:.3f} ms, with the cursor moved {cost[1]:.3f} ms "
                f"(+{cost[1] - cost[0]:.3f} ms per page)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
