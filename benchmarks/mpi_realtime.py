"""Real-time match latency: one incoming record matched and linked against N indexed residents.

Builds the MPI index (records, blocking keys, residents) for a seeded noisy population straight
into the MPI tables, holds some records back, then matches each held-back record on arrival the
way ingest does (one locked transaction: candidates, scoring, decision, write) and reports
latency percentiles and the decisions' accuracy against the truth.

    .venv/bin/python benchmarks/mpi_realtime.py --residents 100000
    .venv/bin/python benchmarks/mpi_realtime.py --residents 1000000 --url postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from rhip.mpi.features import blocking_keys, extract_features
from rhip.mpi.link import link_features, new_vhc
from rhip.mpi.model import load_model
from rhip.mpi.sample import sample_population
from rhip.mpi.schema import ensure_schema, mpi_key, mpi_record, mpi_resident
from rhip.store.engine import make_engine, write_transaction


def build_index(engine, patients, truth, chunk: int = 20_000) -> float:  # type: ignore[no-untyped-def]
    """Insert features, keys and residents for these patients (residents = true persons)."""
    clock = time.perf_counter()
    now = time.time()
    seen: set[str] = set()
    for start in range(0, len(patients), chunk):
        records, keys, residents = [], [], []
        for body in patients[start : start + chunk]:
            feats = extract_features(body)
            row = feats.as_row()
            person = truth[feats.record_id]
            row.update(resident_id=person, link_source="batch", link_weight=None, updated=now)
            records.append(row)
            keys.extend({"bkey": k, "record_id": feats.record_id} for k in blocking_keys(feats))
            if person not in seen:
                seen.add(person)
                residents.append({"resident_id": person, "vhc": new_vhc(), "status": "active",
                                  "created": now, "updated": now})  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(mpi_record), records)
            conn.execute(insert(mpi_key), keys)
            conn.execute(insert(mpi_resident), residents)
    return time.perf_counter() - clock


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--records-per-resident", type=float, default=1.3)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--url", help="Database URL (default: a SQLite file in a temp folder).")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='rhip-mpi-')) / 'mpi.sqlite'}"
    engine = make_engine(url)
    ensure_schema(engine)
    clock = time.perf_counter()
    patients, truth = sample_population(
        args.residents, seed=args.seed, records_per_resident=args.records_per_resident
    )
    made = time.perf_counter() - clock
    held, indexed = patients[: args.queries], patients[args.queries :]
    built = build_index(engine, indexed, truth)
    model = load_model()
    weights = model.level_weights()
    latencies: list[float] = []
    right = wrong = 0
    for body in held:
        feats = extract_features(body)
        start = time.perf_counter()
        with write_transaction(engine) as conn:
            decision = link_features(conn, feats, model, weights)
        latencies.append((time.perf_counter() - start) * 1000)
        person = truth[feats.record_id]
        others = [c for c in decision.candidates if c.weight >= model.link_weight]
        if decision.outcome == "link":
            right += decision.resident_id == person
            wrong += decision.resident_id != person
        elif others:
            wrong += 1
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "| residents | records indexed | build index | p50 ms | p95 ms | p99 ms | max ms | links ok/wrong |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.residents:,} | {len(indexed):,} | {built:.0f} s | {pct(0.5):.1f} | {pct(0.95):.1f} | "
          f"{pct(0.99):.1f} | {latencies[-1]:.1f} | {right}/{wrong} |")  # fmt: skip
    print(f"\n(database {engine.dialect.name}; population generated in {made:.0f} s; peak RSS {rss:.0f} MB)")
    engine.dispose()


if __name__ == "__main__":
    main()
